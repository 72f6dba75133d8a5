"""Running ansible, ansible-playbook and ansible-inventory against the test hosts, for real."""
import contextlib
import json
import os
import subprocess
import tempfile

from ansinix_test import REPO_ROOT

CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback")


def ansible_env(hosts=None, extra=None):
    """Environment for an Ansible run: this checkout as the collection, host key checking on."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO_ROOT, ".build", "collections"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PIPELINING": "True",
        "NIX_CONFIG": "substituters =\nsandbox = false\nbuild-users-group =",
    })
    if hosts is not None:
        env["ANSIBLE_INVENTORY"] = hosts.inventory_path
        env["ANSIBLE_LOCAL_TEMP"] = os.path.join(hosts.state_dir, "ansible-local")
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = os.path.join(hosts.state_dir, "cp")
    env.update(extra or {})
    return env


def stop_ssh_masters(hosts):
    """End the multiplexed SSH connections to these hosts: after a host is reset they point at a dead sshd."""
    control_dir = os.path.join(hosts.state_dir, "cp")
    if not os.path.isdir(control_dir):
        return
    for name in os.listdir(control_dir):
        subprocess.run(["ssh", "-o", "ControlPath=" + os.path.join(control_dir, name), "-O", "exit", "unused"],
                       capture_output=True, timeout=30, check=False)


def run_ansible(args, hosts=None, env=None, timeout=600):
    """`ansible ARGS` (ad hoc); returns the CompletedProcess."""
    return subprocess.run(["ansible"] + list(args), env=ansible_env(hosts, env), capture_output=True,
                          text=True, timeout=timeout, check=False)


class PlaybookRun:
    """The outcome of one ansible-playbook run, with each task's result per host."""

    def __init__(self, proc, events):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.events = events

    def results(self, task_name):
        """{host: result} of the task with this name."""
        return {e["host"]: e["result"] for e in self.events if e["task"] == task_name}

    def result(self, task_name, host):
        return self.results(task_name)[host]

    def seconds(self, task_name):
        """{host: seconds from the task's start to this host's result}."""
        return {e["host"]: e["seconds"] for e in self.events if e["task"] == task_name}

    def changed(self):
        """{host: number of changed task results}."""
        counts = {}
        for e in self.events:
            counts.setdefault(e["host"], 0)
            if e["result"].get("changed"):
                counts[e["host"]] += 1
        return counts

    def __str__(self):
        # What failed first: pytest cuts long messages, and these lines say what went wrong.
        failures = ["%s | %s | %s: %s" % (e["status"], e["host"], e["task"], str(e["result"].get("msg", ""))[:600])
                    for e in self.events if e["status"] in ("failed", "unreachable") and not e["result"].get("skipped")]
        return "<PlaybookRun rc=%d>\n%s\n---\n%s" % (self.rc, "\n".join(failures), self.stdout[-1500:])

    def __repr__(self):
        return "<PlaybookRun rc=%d>" % self.rc


def run_playbook(playbook, hosts=None, args=(), env=None, timeout=900, watch=None):
    """Run a playbook (YAML text or a path). Every task result is recorded by a test callback.

    watch: called with the pid of ansible-playbook, returns a context manager that is open while it runs
    (procs.TreeMemory, say).
    """
    with tempfile.TemporaryDirectory(prefix="ansinix-play-") as tmp:
        if "\n" in playbook:
            path = os.path.join(tmp, "playbook.yml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(playbook)
        else:
            path = playbook
        events_file = os.path.join(tmp, "events.jsonl")
        extra = {"ANSIBLE_CALLBACKS_ENABLED": "ansinix_test_recorder", "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_DIR,
                 "ANSINIX_TEST_EVENTS": events_file}
        extra.update(env or {})
        argv = ["ansible-playbook", path] + list(args)
        with subprocess.Popen(argv, env=ansible_env(hosts, extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as popen:
            try:
                with watch(popen.pid) if watch else contextlib.nullcontext():
                    out, err = popen.communicate(timeout=timeout)
            except BaseException:
                popen.kill()
                raise
        proc = subprocess.CompletedProcess(argv, popen.returncode, out, err)
        events = []
        if os.path.exists(events_file):
            with open(events_file, encoding="utf-8") as f:
                events = [json.loads(line) for line in f if line.strip()]
        return PlaybookRun(proc, events)
