"""ansinix.nixos.nixos_switch through real ansible and ansible-playbook, on test hosts.

Every test asserts what the host looks like afterwards: its profile generations, /run/current-system,
the boot loader's default entry and entries, the fixture's unit state under /run/ansinix-units, the
sshd log (how many logins there were), and the runner's records under /run/ansinix and /var/log/ansinix.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from ansinix_test.ansible import ansible_env, stop_ssh_masters
from ansinix_test.systems import build_system

PROFILE = "/nix/var/nix/profiles/system"
MODULE = "ansinix.nixos.nixos_switch"
HOST = "sw1"


def system(version, **knobs):
    """A system of host `base` (the name the fresh hosts boot) that differs from the booted one as asked."""
    settings = dict(name="base", version=str(version),
                    units={"sshd.service": "openssh 9.6", "nginx.service": "nginx 1.25", "dbus.service": "dbus 1.15"},
                    packages={"nginx": "1.25.0", "openssl": "3.0.13", "coreutils": "9.4"})
    settings.update(knobs)
    return build_system(**settings)


def base_system():
    return build_system(name="base")


def adhoc(run_ansible, args, *extra, host=HOST, env=None, timeout=300):
    """Run the module ad hoc; returns (process, the task's result as a dict or None)."""
    proc = run_ansible([host, "-m", MODULE, "-a", args] + list(extra), env=env, timeout=timeout)
    match = re.search(r"^%s \| [A-Z!]+ => " % re.escape(host), proc.stdout, re.M)
    return proc, (json.loads(proc.stdout[match.end():]) if match else None)


def show(proc):
    return "rc=%d\n%s\n%s" % (proc.returncode, proc.stdout[-4000:], proc.stderr[-2000:])


def generations(h):
    return sorted(int(m) for m in re.findall(r"^system-(\d+)-link$", h.run("ls %s" % os.path.dirname(PROFILE)).stdout, re.M))


def unit_state(h):
    """The fixture's fake systemd: {unit: hash of the unit file it runs}."""
    out = h.run("cd /run/ansinix-units 2>/dev/null && grep -H . * || true").stdout
    return dict(line.split(":", 1) for line in out.splitlines())


def boot_entries(h):
    return sorted(h.run("ls /boot/loader/entries").stdout.split())


def logins(h):
    """The successful SSH logins so far, from the host's sshd log."""
    return h.run("grep 'Accepted publickey' /var/log/sshd-harness.log || true").stdout.splitlines()


def snapshot(h):
    """Everything a switch could change, for `nothing changed` assertions."""
    return h.run(
        "readlink /run/current-system; readlink %s; ls -l --time-style=+%%s %s; cat /boot/loader/loader.conf; "
        "ls /boot/loader/entries; md5sum /boot/loader/ansinix-bootloader.log; ls -l --time-style=+%%s /run/ansinix-units; "
        "ls -A /run/ansinix /var/log/ansinix 2>&1; cat /run/ansinix/deploy.lock 2>&1; ls /etc/ssh/authorized_keys.d"
        % (PROFILE, os.path.dirname(PROFILE))
    ).stdout


def runner_processes(h):
    """Pids of activation runners on this host (the hosts share the machine's pid namespace)."""
    pids = []
    for pid in h.pids():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(b"/run/ansinix/switch-") and arg.endswith(b"/runner.py") for arg in argv):
            pids.append(str(pid))
    return pids


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def descendants(pid):
    """pid and every process below it, across sessions (Ansible's workers start sessions of their own)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError):
                pass
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


@pytest.fixture
def host(fresh_hosts):
    (h,) = fresh_hosts(HOST)
    return h


# -- switching, and doing nothing the second time ------------------------------------------------------------

# Ansible runs the module (AnsiballZ) with and without pipelining; AnsibleModule's `invocation` in every result
# shows that no other runtime answered, the rerun of an up-to-date host included.
PIPELINING_IDS = ["pipelining", "no pipelining"]


@pytest.mark.parametrize("pipelining", ["True", "False"], ids=PIPELINING_IDS)
def test_first_switch_then_the_rerun_runs_nothing(host, run_playbook, pipelining):
    base, new = base_system(), system(2)
    host.import_closure(new)
    units_before = unit_state(host)
    bootloader_runs = len(host.read_file("/boot/loader/ansinix-bootloader.log").splitlines())
    play = """
- name: Switch
  hosts: %s
  gather_facts: false
  tasks:
    - name: Switch to the new system
      %s:
        path: %s
""" % (HOST, MODULE, new)
    run = run_playbook(play, env={"ANSIBLE_PIPELINING": pipelining})
    assert run.rc == 0, str(run)
    result = run.result("Switch to the new system", HOST)
    assert result["invocation"]["module_args"]["path"] == new
    assert result["changed"] is True and result["previous"] == base and result["current"] == new
    assert result["generation"] == 2 and result["confirmed"] is True and result["rolled_back"] is False
    assert result["confirmed_by"] == "new_connection"
    assert result["units"] == {"stopped": [], "reloaded": ["dbus.service"], "restarted": ["nginx.service"], "started": [],
                               "failed": []}
    assert result["reboot_required"] is False and result["last_activation"] is None
    # The host: a new generation, active, the boot default, units changed as reported.
    assert host.readlink("/run/current-system") == new and host.readlink(PROFILE) == "system-2-link"
    assert generations(host) == [1, 2] and host.readlink(PROFILE + "-2-link") == new
    assert host.default_boot_system() == new
    assert boot_entries(host) == ["nixos-generation-1.conf", "nixos-generation-2.conf"]
    units_after = unit_state(host)
    assert {u for u in units_after if units_after[u] != units_before.get(u)} == {"nginx.service", "dbus.service"}
    assert len(host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()) == bootloader_runs + 1
    # What ran is on the host: the log, and the runner's final record; the lock is free; no runner is left.
    log = host.read_file(result["log"])
    assert "restarting the following units: nginx.service" in log and "confirmed over a new connection" in log
    assert json.loads(host.read_file("/run/ansinix/deploy.lock")) == {}
    assert runner_processes(host) == []
    assert host.stat(result["log"])["mode"] == 0o640 and host.stat("/var/log/ansinix")["mode"] == 0o750

    before = snapshot(host)
    again = run_playbook(play, env={"ANSIBLE_PIPELINING": pipelining})
    assert again.rc == 0, str(again)
    rerun = again.result("Switch to the new system", HOST)
    assert rerun["invocation"]["module_args"]["path"] == new
    assert rerun["changed"] is False and rerun["current"] == new and rerun["generation"] == 2
    assert rerun["last_activation"]["outcome"] == "done" and rerun["last_activation"]["system"] == new
    assert snapshot(host) == before  # no switch-to-configuration, no new run directory, no log


def test_each_action(host, run_ansible):
    base, for_boot, for_test = base_system(), system("boot"), system("test")
    for path in (for_boot, for_test):
        host.import_closure(path)
    units = unit_state(host)

    proc, result = adhoc(run_ansible, "path=%s action=boot" % for_boot)
    assert proc.returncode == 0 and result["changed"], show(proc)
    assert result["confirmed"] is None and result["current"] == base and result["generation"] == 2
    assert host.readlink("/run/current-system") == base and unit_state(host) == units  # nothing activated
    assert host.default_boot_system() == for_boot and generations(host) == [1, 2]

    proc, result = adhoc(run_ansible, "path=%s action=test" % for_test)
    assert proc.returncode == 0 and result["changed"] and result["confirmed"] is True, show(proc)
    assert host.readlink("/run/current-system") == for_test and result["generation"] == 2
    assert host.default_boot_system() == for_boot and generations(host) == [1, 2]  # test touches no profile
    again = adhoc(run_ansible, "path=%s action=test" % for_test)[1]
    assert again["changed"] is False

    before = snapshot(host)
    proc, result = adhoc(run_ansible, "path=%s action=dry-activate" % base)
    assert proc.returncode == 0 and result["changed"] is False, show(proc)
    assert "nginx.service" in result["units"]["restarted"] and "would restart" in result["log_tail"]
    assert snapshot(host) == before

    # What the boot loader starts is what `boot` chose, not what `test` activated.
    host.reboot()
    assert host.readlink("/run/current-system") == for_boot and host.readlink("/run/booted-system") == for_boot

    proc, result = adhoc(run_ansible, "path=%s install_bootloader=true" % base)
    assert proc.returncode == 0 and result["generation"] == 3, show(proc)
    last = host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()[-1]
    assert last.split()[1:] == ["switch", base, "install_bootloader=1"]


def test_check_mode_and_diff_mode_change_nothing(host, run_ansible):
    new = system(2, units={"sshd.service": "openssh 9.6", "nginx.service": "nginx 1.25", "redis.service": "redis 7"},
                 packages={"nginx": "1.25.0", "openssl": "3.0.13", "coreutils": "9.4", "redis": "7.2.4"})
    host.import_closure(new)
    before = snapshot(host)
    proc, result = adhoc(run_ansible, "path=%s" % new, "--check", "--diff")
    assert proc.returncode == 0 and result["changed"] is True, show(proc)
    assert result["units"]["restarted"] == ["nginx.service"] and result["units"]["started"] == ["redis.service"]
    assert result["units"]["stopped"] == ["dbus.service"]
    assert result["closure_diff"]["changed"]["nginx"] == ["1.24.0", "1.25.0"]
    assert result["closure_diff"]["added"]["redis"] == ["7.2.4"]
    for line in ("~ nginx: 1.24.0 -> 1.25.0", "+ redis 7.2.4"):
        assert line in proc.stdout  # the diff Ansible prints
    assert snapshot(host) == before

    # A system not copied yet: check mode says it would change, and still changes nothing.
    absent = system("absent")
    proc, result = adhoc(run_ansible, "path=%s" % absent, "--check")
    assert proc.returncode == 0 and result["changed"] is True and "not in this host's store yet" in result["msg"], show(proc)
    assert snapshot(host) == before and not host.store_has(absent)

    # Up to date: nothing would change.
    proc, result = adhoc(run_ansible, "path=%s" % base_system(), "--check")
    assert proc.returncode == 0 and result["changed"] is False, show(proc)


def test_rollback_and_generation(host, run_ansible):
    base, v2, v3 = base_system(), system(2), system(3)
    for path in (v2, v3):
        host.import_closure(path)
        assert adhoc(run_ansible, "path=%s confirm_timeout=0" % path)[0].returncode == 0
    assert generations(host) == [1, 2, 3]

    proc, result = adhoc(run_ansible, "rollback=true")
    assert proc.returncode == 0 and result["system"] == v2 and result["generation"] == 2, show(proc)
    assert host.readlink("/run/current-system") == v2 and host.readlink(PROFILE) == "system-2-link"
    assert host.default_boot_system() == v2 and generations(host) == [1, 2, 3]  # nothing made, nothing deleted
    proc, result = adhoc(run_ansible, "rollback=true")
    assert proc.returncode == 0 and host.readlink("/run/current-system") == base and host.generation() == 1, show(proc)

    before = snapshot(host)
    proc, result = adhoc(run_ansible, "rollback=true")
    assert proc.returncode != 0
    assert result["msg"] == "nothing to roll back to: profile %s has no generation before the current one (1)" % PROFILE
    assert snapshot(host) == before

    proc, result = adhoc(run_ansible, "generation=3")
    assert proc.returncode == 0 and result["current"] == v3 and result["previous"] == base, show(proc)
    assert host.readlink(PROFILE) == "system-3-link" and host.default_boot_system() == v3 and generations(host) == [1, 2, 3]
    assert adhoc(run_ansible, "generation=3")[1]["changed"] is False


@pytest.mark.parametrize("pipelining", ["True", "False"], ids=PIPELINING_IDS)
def test_failed_activation_rolls_back_automatically(host, run_ansible, pipelining):
    base = base_system()
    failing = system("fail", failUnits=["nginx.service"])
    host.import_closure(failing)
    units = unit_state(host)
    env = {"ANSIBLE_PIPELINING": pipelining}
    proc, result = adhoc(run_ansible, "path=%s" % failing, env=env)
    assert proc.returncode != 0, show(proc)
    assert result["rolled_back"] is True and result["units"]["failed"] == ["nginx.service"]
    assert result["msg"].startswith("activating %s failed (exit 4, failed units: nginx.service); rolled back to %s (generation 1)"
                                    % (failing, base))
    assert "\n" not in result["msg"] and "warning: the following units failed: nginx.service" in result["log_tail"]
    # Back where it was: system, profile, boot loader, units (nginx runs the old unit again).
    assert host.readlink("/run/current-system") == base and host.readlink(PROFILE) == "system-1-link"
    assert generations(host) == [1] and boot_entries(host) == ["nixos-generation-1.conf"]
    assert host.default_boot_system() == base and unit_state(host) == units
    assert "rolling back (activation-failed)" in host.read_file(result["log"])

    # A failing activation script (exit 2), and without the automatic rollback: the host stays on it.
    broken = system("broken", failActivation=True)
    host.import_closure(broken)
    proc, result = adhoc(run_ansible, "path=%s rollback_on_failure=false confirm_timeout=0" % broken, env=env)
    assert proc.returncode != 0 and result["rolled_back"] is False, show(proc)
    assert "failed (exit 2); the host is left on it (rollback_on_failure=false)" in result["msg"]
    assert host.readlink(PROFILE) == "system-2-link" and host.default_boot_system() == broken


@pytest.mark.parametrize("connection", ["ssh", pytest.param("paramiko", marks=pytest.mark.paramiko)])
def test_a_system_that_breaks_ssh_is_rolled_back_by_the_host(host, run_ansible, connection):
    """The module runs over a live connection the broken system does not cut (an SSH master with
    ControlPersist, or paramiko's cached transport); only a new login shows the breakage."""
    base = base_system()
    broken = system("nossh", breakSsh=True)
    host.import_closure(broken)
    extra = ["-c", connection] if connection == "paramiko" else []
    # paramiko does not read the harness's known_hosts option (ssh's UserKnownHostsFile).
    env = {"ANSIBLE_HOST_KEY_CHECKING": "False"} if connection == "paramiko" else None
    started = time.monotonic()
    proc, result = adhoc(run_ansible, "path=%s confirm_timeout=4" % broken, *extra, env=env)
    assert proc.returncode != 0, show(proc)
    assert time.monotonic() - started >= 4
    assert "did not let a new SSH connection in" in result["msg"]
    assert "the host rolled itself back to %s (generation 1)" % base in result["msg"]
    assert result["rolled_back"] is True and result["confirmed"] is False and result["current"] == base
    assert host.readlink("/run/current-system") == base and generations(host) == [1]
    assert host.default_boot_system() == base and boot_entries(host) == ["nixos-generation-1.conf"]
    assert host.ssh(["hostname"]).stdout.strip() == HOST  # SSH is back
    assert "rolling back (unconfirmed)" in host.read_file(result["log"])


def test_the_confirmation_is_a_new_login_even_over_a_persistent_connection(host, run_playbook):
    new = system("relogin")
    host.import_closure(new)
    before = logins(host)
    play = """
- name: Switch over a connection opened earlier
  hosts: %s
  gather_facts: false
  tasks:
    - name: Open the connection (ssh keeps it with ControlPersist)
      ansible.builtin.command: "true"
      changed_when: false
    - name: Switch
      %s:
        path: %s
""" % (HOST, MODULE, new)
    run = run_playbook(play)
    assert run.rc == 0, str(run)
    # One login for the first task (the switch rode it), one for the confirmation: two TCP connections.
    new_logins = logins(host)[len(before):]
    assert len(new_logins) == 2, new_logins
    assert len({re.search(r" port (\d+) ", line).group(1) for line in new_logins}) == 2
    result = run.result("Switch", HOST)
    assert result["confirmed"] is True and re.match(r"^\d+:\d+$", result["confirm_connection"])


def test_a_confirmation_the_host_cannot_tie_to_a_new_login_is_reported_unverified(host, testhosts):
    """With the local connection (Ansible run inside the host) no sshd is above the switch: the host takes the
    confirmation on trust, and the task says so in its result and a warning."""
    new = system("local")
    host.import_closure(new)
    argv = host.nsenter_argv() + ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-m", MODULE,
                                  "-a", "path=%s confirm_timeout=10" % new, "-e", "ansible_python_interpreter={{ ansible_playbook_python }}"]
    proc = subprocess.run(argv, env=ansible_env(testhosts), capture_output=True, text=True, timeout=300, check=False)
    match = re.search(r"^localhost \| [A-Z!]+ => ", proc.stdout, re.M)
    assert proc.returncode == 0 and match, show(proc)
    result = json.loads(proc.stdout[match.end():])
    assert result["confirmed"] is True and result["confirmed_by"] == "unverified" and result["confirm_connection"] is None
    warning = " ".join(proc.stderr.split())
    assert "took the confirmation on trust" in warning and "connection local" in warning, proc.stderr
    assert host.readlink("/run/current-system") == new and generations(host) == [1, 2]


def test_two_deploys_race_one_after_the_other(host, run_ansible):
    first, second = system("race1"), system("race2")
    for path in (first, second):
        host.import_closure(path)
    results = {}

    def deploy(path):
        results[path] = adhoc(run_ansible, "path=%s confirm_timeout=3" % path)

    threads = [threading.Thread(target=deploy, args=(path,)) for path in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for path in (first, second):
        assert results[path][0].returncode == 0 and results[path][1]["confirmed"] is True, show(results[path][0])
    assert generations(host) == [1, 2, 3]
    last = host.readlink(PROFILE + "-3-link")
    assert host.readlink("/run/current-system") == last and host.readlink(PROFILE) == "system-3-link"
    # One after the other, the confirmation window included: the second runner started from what the
    # first one left, and only after the first had finished.
    runs = sorted((json.loads(host.read_file(d + "/status.json")) for d in host.run("ls -d /run/ansinix/switch-*").stdout.split()),
                  key=lambda status: status["previous_generation"])
    assert [r["previous_generation"] for r in runs] == [1, 2] and [r["current_generation"] for r in runs] == [2, 3]
    assert runs[1]["previous_system"] == runs[0]["current_system"] and runs[1]["started"] >= runs[0]["finished"]
    assert all(r["outcome"] == "done" and r["confirmed"] is True for r in runs)


def test_a_held_lock_times_out_with_a_message_and_a_dead_holder_does_not_block(host, run_ansible):
    new = system("locked")
    host.import_closure(new)
    holder = subprocess.Popen(host.nsenter_argv() + ["python3", "-c", (
        "import fcntl, os, sys, time\n"
        "os.makedirs('/run/ansinix', mode=0o700, exist_ok=True)\n"
        "fd = os.open('/run/ansinix/deploy.lock', os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, b'{\"pid\": %d, \"since\": \"a while\"}' % os.getpid())\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(host)
        started = time.monotonic()
        proc, result = adhoc(run_ansible, "path=%s lock_timeout=2" % new)
        assert proc.returncode != 0 and time.monotonic() - started >= 2, show(proc)
        assert re.fullmatch(r"another deploy is running on this host \(pid %d \(python3 -c import fcntl, os, sys, time .*\) "
                            r"since a while\)\. Wait for it, or raise lock_timeout \(now 2s\)" % holder.pid, result["msg"])
        assert snapshot(host) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    proc, result = adhoc(run_ansible, "path=%s lock_timeout=2" % new)
    assert proc.returncode == 0 and host.readlink("/run/current-system") == new, show(proc)


def start_switch_then_cut_the_controller_off(host, testhosts, args):
    """Start an ad-hoc switch and kill ansible (and its ssh) once the activation is under way."""
    ansible = subprocess.Popen(["ansible", HOST, "-m", MODULE, "-a", args], env=ansible_env(testhosts),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and '"state": "activating"' not in host.run(
            "cat /run/ansinix/switch-*/status.json 2>/dev/null || true").stdout:
        time.sleep(0.1)
    runners = runner_processes(host)
    # The controller goes away: ansible, its workers and their ssh clients, and the SSH master.
    for pid in descendants(ansible.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ansible.communicate()
    stop_ssh_masters(testhosts)
    return runners


def test_connection_cut_mid_switch_the_switch_finishes_and_the_next_run_tells(host, run_ansible, testhosts):
    slow = system("slow", activationSeconds=3)
    host.import_closure(slow)
    runners = start_switch_then_cut_the_controller_off(host, testhosts, "path=%s confirm_timeout=0" % slow)
    assert len(runners) == 1
    # The runner is nobody's child on the host's SSH side: no sshd above it, a session of its own.
    chain = host.run("p=%s; while [ \"$p\" -gt 1 ]; do cat /proc/$p/comm; p=$(awk '{print $4}' /proc/$p/stat); done"
                     % runners[0]).stdout.split()
    assert chain[0].startswith("python3") and not any(c.startswith("sshd") for c in chain), chain
    assert host.readlink("/run/current-system") != slow  # still activating
    proc, result = adhoc(run_ansible, "path=%s confirm_timeout=0" % slow)
    assert proc.returncode == 0, show(proc)
    assert result["changed"] is False and result["current"] == slow and result["generation"] == 2
    assert result["last_activation"]["outcome"] == "done" and result["last_activation"]["rc"] == 0
    assert host.readlink("/run/current-system") == slow and generations(host) == [1, 2]


def test_controller_gone_before_confirming_the_host_rolls_back_and_the_next_run_tells(host, run_ansible, testhosts):
    base, slow = base_system(), system("slow-unconfirmed", activationSeconds=2)
    host.import_closure(slow)
    start_switch_then_cut_the_controller_off(host, testhosts, "path=%s confirm_timeout=3" % slow)
    deadline = time.time() + 60
    while time.time() < deadline and runner_processes(host):
        time.sleep(0.2)
    assert host.readlink("/run/current-system") == base and generations(host) == [1]
    proc, result = adhoc(run_ansible, "path=%s confirm_timeout=3" % slow)
    assert proc.returncode == 0, show(proc)
    last = result["last_activation"]
    assert last["outcome"] == "rolled-back" and last["rollback_reason"] == "unconfirmed" and last["system"] == slow
    assert result["changed"] is True and host.readlink("/run/current-system") == slow and generations(host) == [1, 2]


def test_a_connection_lost_during_the_switch_is_reported_in_one_line_and_not_retried(host, run_ansible, testhosts):
    """The host's side of the SSH connection dies while the module waits for the runner: the task says so, once."""
    slow = system("cut", activationSeconds=3)
    host.import_closure(slow)
    ansible = subprocess.Popen(["ansible", HOST, "-m", MODULE, "-a", "path=%s confirm_timeout=0" % slow],
                               env=ansible_env(testhosts), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and '"state": "activating"' not in host.run(
            "cat /run/ansinix/switch-*/status.json 2>/dev/null || true").stdout:
        time.sleep(0.1)
    # Every sshd of the host but the listener: the connection the module runs over.
    listener = int(host.read_file("/run/sshd.pid"))
    sessions = [pid for pid in host.pids() if pid != listener and comm(pid).startswith("sshd")]
    assert sessions
    for pid in sessions:
        os.kill(pid, signal.SIGKILL)
    out, err = ansible.communicate(timeout=300)
    match = re.search(r"^%s \| UNREACHABLE! => " % HOST, out, re.M)
    assert ansible.returncode != 0 and match, out + err
    result = json.loads(out[match.end():])
    assert result["unreachable"] is True and "\n" not in result["msg"]
    assert result["msg"].startswith("the connection to %s was lost while nixos_switch ran (" % host.address)
    assert "Rerunning the task is safe" in result["msg"] and "deploy lock" in result["msg"], result["msg"]
    # Not run again another way: one runner, one run directory. It finished the switch on its own.
    assert len(host.run("ls -d /run/ansinix/switch-*").stdout.split()) == 1
    deadline = time.time() + 60
    while time.time() < deadline and runner_processes(host):
        time.sleep(0.2)
    assert host.readlink("/run/current-system") == slow and generations(host) == [1, 2]
    proc, rerun = adhoc(run_ansible, "path=%s confirm_timeout=0" % slow)
    assert proc.returncode == 0 and rerun["changed"] is False and rerun["last_activation"]["outcome"] == "done", show(proc)


# -- users, become, ad hoc ---------------------------------------------------------------------------------

def test_non_root_ssh_user_with_become_and_without(host, run_ansible):
    new = system("become")
    host.import_closure(new)
    before = snapshot(host)
    # The inventory sets ansible_user=root, which -u would not override.
    proc, result = adhoc(run_ansible, "path=%s" % new, "-e", "ansible_user=deploy")
    assert proc.returncode != 0, show(proc)
    assert result["msg"] == ("nixos_switch changes the system profile and activates systems, which needs root; it runs as deploy "
                             "here: add become: true (or -b ad hoc)")
    assert snapshot(host) == before
    # The issue's own ad-hoc line.
    proc, result = adhoc(run_ansible, "path=%s action=test" % new, "-e", "ansible_user=deploy", "-b")
    assert proc.returncode == 0 and result["confirmed"] is True, show(proc)
    assert host.readlink("/run/current-system") == new and generations(host) == [1]
    assert "Accepted publickey for deploy" in host.read_file("/var/log/sshd-harness.log")


def test_keep_generations_prunes_old_ones_and_the_boot_loader_forgets_them(host, run_ansible):
    systems = [system("keep%d" % i) for i in range(4)]
    for path in systems:
        host.import_closure(path)
        proc, result = adhoc(run_ansible, "path=%s keep_generations=2" % path)
        assert proc.returncode == 0, show(proc)
    assert result["deleted_generations"] == [3]
    # Generation 1 is what the host booted: kept. 4 and 5 are the newest two.
    assert generations(host) == [1, 4, 5]
    assert boot_entries(host) == ["nixos-generation-1.conf", "nixos-generation-4.conf", "nixos-generation-5.conf"]
    assert host.readlink("/run/current-system") == systems[-1] and host.default_boot_system() == systems[-1]


def test_reboot_required_when_the_kernel_changes(host, run_ansible):
    same_kernel, new_kernel = system("k1"), system("k2", kernelVersion="6.9.0")
    for path in (same_kernel, new_kernel):
        host.import_closure(path)
    assert adhoc(run_ansible, "path=%s" % same_kernel)[1]["reboot_required"] is False
    proc, result = adhoc(run_ansible, "path=%s" % new_kernel)
    assert proc.returncode == 0 and result["reboot_required"] is True, show(proc)
    host.reboot()
    assert host.readlink("/run/booted-system") == new_kernel
    assert adhoc(run_ansible, "path=%s" % new_kernel)[1]["reboot_required"] is False


def test_specialisation_is_activated_and_the_profile_gets_the_system(host, run_ansible):
    with_spec = system("spec", specialisations={"maintenance": {"version": "spec-maint", "units": {"sshd.service": "openssh 9.6"}}})
    host.import_closure(with_spec)
    proc, result = adhoc(run_ansible, "path=%s specialisation=maintenance" % with_spec)
    assert proc.returncode == 0, show(proc)
    spec = host.run("readlink -f %s/specialisation/maintenance" % with_spec).stdout.strip()
    assert host.readlink(PROFILE + "-2-link") == with_spec and host.readlink("/run/current-system") == spec
    assert sorted(unit_state(host)) == ["sshd.service"] and result["units"]["stopped"] == ["dbus.service", "nginx.service"]
    assert adhoc(run_ansible, "path=%s specialisation=maintenance" % with_spec)[1]["changed"] is False


# -- bad input: one clear line, nothing changed ------------------------------------------------------------------

BAD_INPUTS = [
    ("path=/etc/passwd", "path '/etc/passwd' is not a Nix store path: expected /nix/store/<32-character hash>-<name>"),
    ("path=/nix/store/00000000000000000000000000000000-nixos-system-x",
     "/nix/store/00000000000000000000000000000000-nixos-system-x is not in this host's Nix store: copy it first with "
     "ansinix.nixos.nix_copy_closure"),
    ("path=__NOT_A_SYSTEM__", "__NOT_A_SYSTEM__ is not a NixOS system: it has no bin/switch-to-configuration"),
    ("generation=9", "generation 9 does not exist in profile /nix/var/nix/profiles/system; it has: 1"),
    ("generation=0", "generation must be a generation number (1 or more), not 0"),
    ("rollback=true", "nothing to roll back to"),
    ("path=__BASE__ rollback=true", "give exactly one of path, rollback=true or generation (got: path, rollback)"),
    ("path=__BASE__ specialisation=nope", "has no specialisation 'nope' (it has: none)"),
    ("path=__BASE__ confirm_timeout=-1", "confirm_timeout must be 0 or more seconds, not -1"),
    ("path=__BASE__ action=reboot", "value of action must be one of: switch, boot, test, dry-activate, got: reboot"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[a for a, _m in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_and_changes_nothing(host, run_ansible, args, message):
    not_a_system = host.run("readlink -f %s/kernel-modules" % base_system()).stdout.strip()  # in the store, no system
    args = args.replace("__NOT_A_SYSTEM__", not_a_system).replace("__BASE__", base_system())
    message = message.replace("__NOT_A_SYSTEM__", not_a_system)
    before = snapshot(host)
    proc, result = adhoc(run_ansible, args)
    assert proc.returncode != 0 and result is not None, show(proc)
    assert message in result["msg"] and "\n" not in result["msg"], result["msg"]
    assert "Traceback" not in proc.stdout + proc.stderr and "module_stderr" not in result
    assert snapshot(host) == before


def test_a_host_without_nix_or_not_nixos_is_refused(fresh_hosts, run_ansible):
    no_nix, not_nixos = fresh_hosts("swnonix", "swdebian", swnonix={"nix": False, "system": None},
                                    swdebian={"nixos": False, "system": None})
    base = base_system()
    proc, result = adhoc(run_ansible, "path=%s" % base, host="swnonix")
    assert proc.returncode != 0, show(proc)
    assert result["msg"].startswith("`nix-env` was not found on ") and "`apt-get install nix-bin`" in result["msg"]
    assert not no_nix.exists("/run/ansinix") and not no_nix.exists("/nix/var/nix/profiles/system")

    before = snapshot(not_nixos)
    proc, result = adhoc(run_ansible, "path=%s" % base, host="swdebian")
    assert proc.returncode != 0, show(proc)
    assert result["msg"].startswith("this host is not NixOS (/etc/NIXOS is missing): install NixOS first")
    assert snapshot(not_nixos) == before
