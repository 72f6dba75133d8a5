"""Running ansible, ansible-playbook and ansible-inventory against the test hosts, for real."""
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile

from ansinix_test import REPO_ROOT

CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback")


def ansible_bin_dir():
    """The bin directory of the ansible-core to drive the hosts with, or None for the ansible on PATH.

    ANSINIX_ANSIBLE_CORE=2.21 picks the venv scripts/venv.sh 2.21 makes (.venv-2.21), so one pytest run
    can test another ansible-core than its own."""
    core = os.environ.get("ANSINIX_ANSIBLE_CORE")
    if not core:
        return None
    with open(os.path.join(REPO_ROOT, "tests", "requirements.txt")) as f:
        default = re.search(r"^ansible-core==(\d+\.\d+)", f.read(), re.M).group(1)
    venv = os.path.join(REPO_ROOT, ".venv" if core == default else ".venv-" + core)
    if not os.access(os.path.join(venv, "bin", "ansible-playbook"), os.X_OK):
        raise RuntimeError("ANSINIX_ANSIBLE_CORE=%s: %s has no ansible-playbook; make it with ./scripts/venv.sh %s"
                           % (core, venv, core))
    return os.path.join(venv, "bin")


@functools.lru_cache(maxsize=None)
def core_version():
    """(major, minor, patch) of the ansible-core that ansible_env() runs."""
    out = subprocess.run(["ansible", "--version"], env=ansible_env(), capture_output=True, text=True, check=True).stdout
    return tuple(int(n) for n in re.search(r"\[core (\d+)\.(\d+)\.(\d+)", out).groups())


def has_paramiko_connection():
    """ansible-core 2.21 removed the paramiko connection plugin."""
    return core_version() < (2, 21)


def ansible_env(hosts=None, extra=None):
    """Environment for an Ansible run: this checkout as the collection, host key checking on."""
    env = dict(os.environ)
    bin_dir = ansible_bin_dir()
    if bin_dir:
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO_ROOT, ".build", "collections"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PIPELINING": "True",
        # ansible-core 2.21 adds a module's `invocation` to its result only when asked; tests read it.
        "ANSIBLE_INJECT_INVOCATION": "True",
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


def path_without_nix(directory):
    """A PATH of one directory with every command of the tests' PATH but nix*: all Ansible needs, and no Nix."""
    directory.mkdir()
    for entry in ansible_env()["PATH"].split(os.pathsep):
        for name in sorted(os.listdir(entry)) if os.path.isdir(entry) else []:
            command = os.path.join(entry, name)
            if not name.startswith("nix") and not (directory / name).exists() and os.access(command, os.X_OK):
                (directory / name).symlink_to(command)
    assert shutil.which("nix", path=str(directory)) is None and shutil.which("ansible-playbook", path=str(directory))
    assert not [n for n in os.listdir(directory) if n.startswith("nix")]
    return str(directory)


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
