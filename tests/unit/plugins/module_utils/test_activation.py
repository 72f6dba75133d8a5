"""The deploy lock, the detached runner's state machine, and how it tells connections apart.

The runner drives stand-in systems here: a switch-to-configuration that records what it was asked
and moves a current-system link, and a nix-env that keeps generation links the way Nix does. The
integration tests run the same runner against real nix and fixture NixOS systems on test hosts.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils import activation, activation_runner as ar
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError

FAKE_NIX_ENV = r"""#!/bin/sh
# nix-env --profile P (--set PATH | --switch-generation N | --delete-generations N...), as Nix keeps links.
profile=$2; op=$3; shift 3
dir=$(dirname "$profile"); base=$(basename "$profile")
echo "nix-env $op $*" >> "$FAKE_RECORD"
case $op in
  --set)
    last=$(ls "$dir" | sed -n "s/^$base-\([0-9]*\)-link$/\1/p" | sort -n | tail -n 1)
    if [ -n "$last" ] && [ "$(readlink "$dir/$base-$last-link")" = "$1" ]; then n=$last; else
      n=$(( ${last:-0} + 1 )); ln -s "$1" "$dir/$base-$n-link"; fi
    ln -sfn "$base-$n-link" "$profile" ;;
  --switch-generation)
    [ -e "$dir/$base-$1-link" ] || { echo "generation $1 does not exist" >&2; exit 1; }
    ln -sfn "$base-$1-link" "$profile" ;;
  --delete-generations)
    for n in "$@"; do rm "$dir/$base-$n-link"; done ;;
  *) exit 2 ;;
esac
"""

FAKE_SWITCH = r"""#!/bin/sh
# switch-to-configuration of a stand-in system: records the call, activates by moving a link.
system=$(cd "$(dirname "$0")/.." && pwd -P)
if [ -s "$system/busy" ] && [ "$(cat "$system/busy")" -gt 0 ]; then  # another switch holds the lock this many times
  echo $(( $(cat "$system/busy") - 1 )) > "$system/busy"
  echo "$(basename "$system") $1 busy" >> "$FAKE_RECORD"
  cat "$system/busy-message" >&2
  exit 11
fi
echo "$(basename "$system") $1 bootloader=${NIXOS_INSTALL_BOOTLOADER:-0}" >> "$FAKE_RECORD"
echo "restarting the following units: $(basename "$system").service" >&2
case $1 in switch|test) ln -sfn "$system" "$FAKE_CURRENT" ;; esac
[ -e "$system/seconds" ] && sleep "$(cat "$system/seconds")"
if [ -e "$system/fails" ] && [ "$1" != dry-activate ]; then
  echo "warning: the following units failed: $(basename "$system").service" >&2
  exit 4
fi
exit 0
"""


class Host:
    """A stand-in host in a temp dir: systems, a profile, current and booted links, a record of calls."""

    def __init__(self, root, monkeypatch):
        self.root = root
        self.record = root / "record"
        self.record.write_text("")
        self.current = root / "current-system"
        self.booted = root / "booted-system"
        self.profile = root / "profiles" / "system"
        self.profile.parent.mkdir()
        self.nix_env = root / "nix-env"
        self.nix_env.write_text(FAKE_NIX_ENV)
        self.nix_env.chmod(0o755)
        self.state = root / "state"
        self.state.mkdir()
        monkeypatch.setenv("FAKE_RECORD", str(self.record))
        monkeypatch.setenv("FAKE_CURRENT", str(self.current))
        monkeypatch.setattr(ar, "CURRENT_SYSTEM", str(self.current))
        monkeypatch.setattr(ar, "BOOTED_SYSTEM", str(self.booted))

    def system(self, name, fails=False, seconds=0, busy=0, busy_message="Could not acquire lock"):
        path = self.root / "store" / name
        (path / "bin").mkdir(parents=True)
        script = path / "bin" / "switch-to-configuration"
        script.write_text(FAKE_SWITCH)
        script.chmod(0o755)
        (path / "busy").write_text(str(busy))
        (path / "busy-message").write_text(busy_message + "\n")
        if fails:
            (path / "fails").write_text("")
        if seconds:
            (path / "seconds").write_text(str(seconds))
        return str(path)

    def install(self, system):
        """Generation 1, booted and running."""
        subprocess.run([str(self.nix_env), "--profile", str(self.profile), "--set", system], check=True)
        os.symlink(system, str(self.current))
        os.symlink(system, str(self.booted))
        self.record.write_text("")

    def calls(self):
        return self.record.read_text().splitlines()

    def generations(self):
        return sorted(ar.generations(str(self.profile)))

    def status_dir(self, **params):
        d = self.state / ("switch-%d" % len(os.listdir(str(self.state))))
        d.mkdir()
        full = dict(action="switch", activate=params.get("system"), system=None, profile=str(self.profile), generation=None,
                    nix_env=str(self.nix_env), install_bootloader=False, rollback_on_failure=True, confirm_timeout=0,
                    keep_generations=None, token="t0k3n", connection_id="100:42", lock_file=str(self.state / "deploy.lock"),
                    log=str(self.root / "log" / ("%s.log" % d.name)))
        full.update(params)
        if full["activate"] is None:
            full["activate"] = full["system"]
        ar.write_json_atomic(str(d / "params.json"), full)
        return str(d)

    def run(self, **params):
        d = self.status_dir(**params)
        ar.Runner(d).main()
        return ar.read_json(os.path.join(d, "status.json"))


@pytest.fixture
def host(tmp_path, monkeypatch):
    return Host(tmp_path, monkeypatch)


# -- the runner ------------------------------------------------------------------------------------

def test_switch_sets_the_profile_then_activates(host):
    old, new = host.system("old"), host.system("new")
    host.install(old)
    status = host.run(system=new, install_bootloader=True)
    assert status["state"] == "finished" and status["outcome"] == "done" and status["rc"] == 0
    assert host.calls() == ["nix-env --set %s" % new, "new switch bootloader=1"]
    assert host.generations() == [1, 2] and ar.current_generation(str(host.profile)) == 2
    assert os.readlink(str(host.current)) == new
    assert status["previous_system"] == old and status["previous_generation"] == 1
    assert status["created_generation"] == 2 and status["current_generation"] == 2 and status["rolled_back"] is False
    log = open(status["log"]).read()
    assert "restarting the following units: new.service" in log and "finished: done" in log
    # The lock is free again, and says so.
    assert json.loads(open(str(host.state / "deploy.lock")).read()) == {}


def test_failed_activation_goes_back_in_one_switch_and_deletes_the_new_generation(host):
    old, bad = host.system("old"), host.system("bad", fails=True)
    host.install(old)
    status = host.run(system=bad)
    assert status["outcome"] == "rolled-back" and status["rollback_reason"] == "activation-failed" and status["rc"] == 4
    assert host.calls() == ["nix-env --set %s" % bad, "bad switch bootloader=0", "nix-env --switch-generation 1",
                            "nix-env --delete-generations 2", "old switch bootloader=0"]
    assert host.generations() == [1] and ar.current_generation(str(host.profile)) == 1
    assert os.readlink(str(host.current)) == old and status["rollback_errors"] == []


def test_rollback_restores_boot_default_and_running_system_when_they_differed(host):
    """After a `test`, the running system is not the profile's: both come back as they were."""
    gen1, tested, bad = host.system("gen1"), host.system("tested"), host.system("bad", fails=True)
    host.install(gen1)
    os.unlink(str(host.current))
    os.symlink(tested, str(host.current))
    status = host.run(system=bad)
    assert status["outcome"] == "rolled-back"
    assert host.calls()[-2:] == ["gen1 boot bootloader=0", "tested test bootloader=0"]
    assert os.readlink(str(host.current)) == tested and ar.current_generation(str(host.profile)) == 1


def test_failed_test_action_leaves_the_profile_alone(host):
    old, bad = host.system("old"), host.system("bad", fails=True)
    host.install(old)
    status = host.run(system=bad, action="test")
    assert status["outcome"] == "rolled-back"
    assert host.calls() == ["bad test bootloader=0", "old test bootloader=0"]
    assert host.generations() == [1]


def test_failed_boot_action_puts_the_boot_default_back_and_activates_nothing(host):
    old, bad = host.system("old"), host.system("bad", fails=True)
    host.install(old)
    status = host.run(system=bad, action="boot")
    assert status["outcome"] == "rolled-back"
    assert host.calls() == ["nix-env --set %s" % bad, "bad boot bootloader=0", "nix-env --switch-generation 1",
                            "nix-env --delete-generations 2", "old boot bootloader=0"]
    assert os.readlink(str(host.current)) == old


def test_failure_without_rollback_leaves_the_host_on_it(host):
    old, bad = host.system("old"), host.system("bad", fails=True)
    host.install(old)
    status = host.run(system=bad, rollback_on_failure=False)
    assert status["outcome"] == "failed" and status["rolled_back"] is False
    assert os.readlink(str(host.current)) == bad and host.generations() == [1, 2]


def test_a_generation_this_run_did_not_make_is_never_deleted(host):
    """`nix-env --set` of the newest generation's system reuses it; a rollback must keep it."""
    old, bad = host.system("old"), host.system("bad", fails=True)
    host.install(old)
    subprocess.run([str(host.nix_env), "--profile", str(host.profile), "--set", bad], check=True)
    subprocess.run([str(host.nix_env), "--profile", str(host.profile), "--switch-generation", "1"], check=True)
    status = host.run(system=bad)
    assert status["new_generation"] == 2 and status["created_generation"] is None
    assert host.generations() == [1, 2] and ar.current_generation(str(host.profile)) == 1


def test_switch_to_an_existing_generation(host):
    old, new = host.system("old"), host.system("new")
    host.install(old)
    subprocess.run([str(host.nix_env), "--profile", str(host.profile), "--set", new], check=True)
    subprocess.run([str(host.nix_env), "--profile", str(host.profile), "--switch-generation", "1"], check=True)
    host.record.write_text("")
    status = host.run(system=new, generation=2)
    assert status["outcome"] == "done" and host.calls() == ["nix-env --switch-generation 2", "new switch bootloader=0"]


def test_runner_error_before_activation_changes_nothing(host):
    old, new = host.system("old"), host.system("new")
    host.install(old)
    host.nix_env.write_text("#!/bin/sh\necho 'error: cannot write profile' >&2\nexit 1\n")
    status = host.run(system=new)
    assert status["outcome"] == "error" and "nix-env could not set profile" in status["error"]
    assert host.calls() == [] and os.readlink(str(host.current)) == old and status["rolled_back"] is False


def test_a_switch_that_finds_the_lock_taken_is_run_again_once_it_is_free(host):
    old, new = host.system("old"), host.system("new", busy=2)
    host.install(old)
    status = host.run(system=new, switch_lock_timeout=30)
    assert status["outcome"] == "done" and os.readlink(str(host.current)) == new
    assert host.calls() == ["nix-env --set %s" % new, "new switch busy", "new switch busy", "new switch bootloader=0"]


@pytest.mark.parametrize("message,held", [
    ("Could not acquire lock", "/run/nixos/switch-to-configuration.lock"),
    ("Failed to start transient service unit: Unit nixos-rebuild-switch-to-configuration.service was already loaded or "
     "has a fragment file.", "the unit nixos-rebuild-switch-to-configuration.service"),
])
def test_a_switch_still_busy_past_the_bound_only_puts_the_profile_back(host, message, held):
    old, new = host.system("old"), host.system("new", busy=1000, busy_message=message)
    host.install(old)
    status = host.run(system=new, switch_lock_timeout=1)
    assert status["outcome"] == "rolled-back" and status["rollback_reason"] == "switch-lock-held"
    assert status["error"] == "another switch held %s for more than 1s" % held
    # switch-to-configuration did nothing: no switch back, only the profile and the generation made.
    assert [c for c in host.calls() if not c.endswith(" busy")] == [
        "nix-env --set %s" % new, "nix-env --switch-generation 1", "nix-env --delete-generations 2"]
    assert host.generations() == [1] and os.readlink(str(host.current)) == old


def confirm_later(status_dir, words, delay=0.3):
    def write():
        time.sleep(delay)
        with open(os.path.join(status_dir, "confirm.tmp"), "w") as f:
            f.write(words)
        os.rename(os.path.join(status_dir, "confirm.tmp"), os.path.join(status_dir, "confirm"))
    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_confirmed_over_a_new_connection(host):
    old, new = host.system("old"), host.system("new")
    host.install(old)
    d = host.status_dir(system=new, confirm_timeout=5)
    thread = confirm_later(d, "t0k3n 200:77\n")
    started = time.monotonic()
    ar.Runner(d).main()
    thread.join()
    status = ar.read_json(os.path.join(d, "status.json"))
    assert status["outcome"] == "done" and status["confirmed"] is True
    assert time.monotonic() - started < 3  # it took the confirmation at once, not the whole window
    assert os.readlink(str(host.current)) == new


@pytest.mark.parametrize("words,why", [
    ("t0k3n 100:42\n", "over the connection the switch ran on"),
    ("wrong 200:77\n", None),
    ("t0k3n\n", None),
])
def test_a_confirmation_that_proves_nothing_rolls_back(host, words, why):
    old, new = host.system("old"), host.system("new")
    host.install(old)
    d = host.status_dir(system=new, confirm_timeout=1)
    thread = confirm_later(d, words, delay=0.1)
    ar.Runner(d).main()
    thread.join()
    status = ar.read_json(os.path.join(d, "status.json"))
    assert status["outcome"] == "rolled-back" and status["rollback_reason"] == "unconfirmed" and status["confirmed"] is None
    assert os.readlink(str(host.current)) == old and host.generations() == [1]
    if why:
        assert "ignored a confirmation that came over the connection the switch was made on" in open(status["log"]).read()


def test_no_connection_id_on_the_module_side_accepts_any_confirmation(host):
    old, new = host.system("old"), host.system("new")
    host.install(old)
    d = host.status_dir(system=new, confirm_timeout=5, connection_id=None)
    thread = confirm_later(d, "t0k3n none\n")
    ar.Runner(d).main()
    thread.join()
    assert ar.read_json(os.path.join(d, "status.json"))["outcome"] == "done"


def test_keep_generations_prunes_after_success_never_current_or_booted(host):
    systems = [host.system("s%d" % n) for n in range(1, 7)]
    host.install(systems[0])  # generation 1 is booted
    for system in systems[1:5]:
        subprocess.run([str(host.nix_env), "--profile", str(host.profile), "--set", system], check=True)
    host.record.write_text("")
    status = host.run(system=systems[5], keep_generations=2)
    assert status["outcome"] == "done" and status["deleted_generations"] == [2, 3, 4]
    assert host.generations() == [1, 5, 6]
    # The boot loader is told, so it stops listing systems a garbage collection may remove.
    assert host.calls()[-2:] == ["nix-env --delete-generations 2 3 4", "s6 boot bootloader=0"]


def test_prunable():
    assert ar.prunable([1, 2, 3, 4, 5, 6], 2) == [1, 2, 3, 4]
    assert ar.prunable([1, 2, 3, 4, 5, 6], 2, protect=[1, None, 3]) == [2, 4]
    assert ar.prunable([3, 9], 5) == []


def test_runner_detaches_into_a_session_of_its_own(host, tmp_path):
    old, slow = host.system("old"), host.system("slow", seconds=2)
    host.install(old)
    d = host.status_dir(system=slow)
    for name, text in activation.runner_sources().items():  # the runner and next_boot.py, which it imports
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    runner = os.path.join(d, "runner.py")
    env = dict(os.environ, PYTHONPATH="")  # no collection to import from: what the runner needs is beside it
    # The stand-in links live in tmp_path: point the copy of the runner at them.
    source = open(runner).read().replace('"/run/current-system"', repr(str(host.current))).replace(
        '"/run/booted-system"', repr(str(host.booted)))
    with open(runner, "w") as f:
        f.write(source)
    started = time.monotonic()
    assert subprocess.call([sys.executable, runner, "--detach", d], env=env) == 0
    assert time.monotonic() - started < 1.5  # returned while the activation still runs
    pid = None
    for _attempt in range(50):
        pid = (ar.read_json(os.path.join(d, "status.json")) or {}).get("pid")
        if pid:
            break
        time.sleep(0.05)
    assert pid
    # Forked twice: in a session of its own, not its leader (no terminal can be acquired), not our child.
    assert os.getsid(pid) != os.getsid(0) and os.getsid(pid) != pid
    with open("/proc/%d/stat" % pid) as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid()
    assert ar.process_start_time(pid) is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (ar.read_json(os.path.join(d, "status.json")) or {}).get("state") != "finished":
        time.sleep(0.1)
    status = ar.read_json(os.path.join(d, "status.json"))
    assert status["outcome"] == "done" and os.readlink(str(host.current)) == slow


# -- processes and connections ------------------------------------------------------------------------

def test_process_identity_survives_pid_reuse_checks():
    me = os.getpid()
    assert ar.process_alive(me) and ar.process_alive(me, ar.process_start_time(me))
    assert not ar.process_alive(me, ar.process_start_time(me) + 1)
    child = subprocess.Popen(["true"])
    child.wait()
    assert not ar.process_alive(child.pid)


def test_connection_id_is_the_nearest_sshd_above(tmp_path):
    """Commands under one sshd process share its id; the id names that process, pid and start time."""
    fake_sshd = tmp_path / "sshd-session"
    os.symlink(sys.executable, str(fake_sshd))
    probe = textwrap.dedent("""
        import json, os, subprocess, sys
        from ansible_collections.ansinix.nixos.plugins.module_utils import activation_runner as ar
        child = subprocess.run(["/bin/sh", "-c", os.path.realpath(sys.executable) + " -c 'from ansible_collections.ansinix.nixos.plugins."
                                "module_utils import activation_runner as ar; print(ar.connection_id())'"],
                               capture_output=True, text=True)
        print(json.dumps({"me": "%d:%d" % (os.getpid(), ar.process_start_time(os.getpid())), "child_says": child.stdout.strip()}))
    """)
    out = subprocess.run([str(fake_sshd), "-c", probe], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    seen = json.loads(out.stdout)
    assert seen["child_says"] == seen["me"]
    assert ar.connection_id(1) is None


# -- the deploy lock ---------------------------------------------------------------------------------

def test_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    lock_file = str(tmp_path / "run" / "deploy.lock")
    first = activation.DeployLock(5, lock_file).acquire()
    with pytest.raises(NixError) as err:
        activation.DeployLock(0.3, lock_file).acquire(poll=0.05)
    assert "another deploy is running on this host (pid %d (%s" % (os.getpid(), sys.executable) in err.value.msg
    assert "\n" not in err.value.msg
    assert "raise lock_timeout (now 0.3s)" in err.value.msg
    assert json.loads(open(lock_file).read())["pid"] == os.getpid()  # the waiter left the holder's record alone
    first.release()
    assert json.loads(open(lock_file).read()) == {}  # free, and it says so
    activation.DeployLock(0.3, lock_file).acquire().release()
    assert oct(os.stat(os.path.dirname(lock_file)).st_mode & 0o777) == "0o700"


def test_a_dead_holder_does_not_block(tmp_path):
    lock_file = str(tmp_path / "deploy.lock")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import fcntl, os, sys, time
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b'{"pid": %d, "since": "then"}' % os.getpid())
        print("locked", flush=True)
        time.sleep(600)
    """), lock_file], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(NixError, match=r"pid %d \(%s -c import fcntl, os, sys, time fd = .*\) since then" % (holder.pid, sys.executable)):
        activation.DeployLock(0.2, lock_file).acquire(poll=0.05)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    lock = activation.DeployLock(1, lock_file).acquire()
    # The dead holder's record is kept for the report, then replaced.
    assert lock.left_over == {"pid": holder.pid, "since": "then"}
    assert json.loads(open(lock_file).read())["pid"] == os.getpid()
    lock.release()
    assert activation.DeployLock(1, lock_file).acquire().left_over is None


def handover_to(tmp_path, lock, status):
    status_dir = tmp_path / "switch-1"
    status_dir.mkdir(exist_ok=True)
    ar.write_json_atomic(str(status_dir / "status.json"), status)
    lock.hand_over(str(status_dir), "/nix/store/%s-nixos-system-web1" % ("a" * 32))
    lock.release()
    return status_dir


def test_a_pending_handover_keeps_others_out_until_the_runner_finishes(tmp_path):
    lock_file = str(tmp_path / "deploy.lock")
    # A live runner that has not taken the lock yet (this test process stands in for it).
    status_dir = handover_to(tmp_path, activation.DeployLock(1, lock_file).acquire(),
                             {"state": "waiting-for-lock", "pid": os.getpid(), "pid_start_time": ar.process_start_time(os.getpid())})
    with pytest.raises(NixError) as err:
        activation.DeployLock(0.3, lock_file).acquire(poll=0.05)
    assert "a switch to /nix/store/%s-nixos-system-web1, runner pid %d, waiting-for-lock" % ("a" * 32, os.getpid()) in err.value.msg
    ar.write_json_atomic(str(status_dir / "status.json"), {"state": "finished"})
    activation.DeployLock(1, lock_file).acquire().release()


def test_a_handover_to_a_dead_runner_is_stale(tmp_path):
    lock_file = str(tmp_path / "deploy.lock")
    child = subprocess.Popen(["true"])
    child.wait()
    handover_to(tmp_path, activation.DeployLock(1, lock_file).acquire(), {"state": "activating", "pid": child.pid})
    activation.DeployLock(0.5, lock_file).acquire().release()


def test_a_handover_to_a_runner_that_never_started_expires(tmp_path, monkeypatch):
    lock_file = str(tmp_path / "deploy.lock")
    handover_to(tmp_path, activation.DeployLock(1, lock_file).acquire(), {"state": "starting"})
    with pytest.raises(NixError):
        activation.DeployLock(0.3, lock_file).acquire(poll=0.05)
    monkeypatch.setattr(ar, "HANDOVER_GRACE", 0)
    activation.DeployLock(0.3, lock_file).acquire().release()


def test_the_runner_takes_the_lock_handed_to_it(host):
    """Module -> runner: the runner gets the lock, and a second module waits for the runner."""
    old, slow = host.system("old"), host.system("slow", seconds=1)
    host.install(old)
    lock_file = str(host.state / "deploy.lock")
    d = host.status_dir(system=slow, lock_file=lock_file)
    module_lock = activation.DeployLock(1, lock_file).acquire()
    module_lock.hand_over(d, slow)
    module_lock.release()
    runner = threading.Thread(target=ar.Runner(d).main)
    runner.start()
    time.sleep(0.3)
    record = json.loads(open(lock_file).read())
    assert record["status_dir"] == d and not record.get("handover") and record["pid"] == os.getpid()
    started = time.monotonic()
    second = activation.DeployLock(10, lock_file).acquire(poll=0.05)
    waited = time.monotonic() - started
    runner.join()
    second.release()
    assert waited > 0.4
    assert ar.read_json(os.path.join(d, "status.json"))["outcome"] == "done"


# -- status, history -----------------------------------------------------------------------------------

def test_last_run_and_cleanup(tmp_path):
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir()
    logs.mkdir()
    assert activation.last_run(str(state)) is None
    for i in range(25):
        d = state / ("switch-2025010%02d" % i)
        d.mkdir()
        ar.write_json_atomic(str(d / "status.json"), {"state": "finished" if i != 2 else "activating", "outcome": "done", "rc": 0})
        ar.write_json_atomic(str(d / "params.json"), {"system": "/nix/store/s%d" % i, "action": "switch"})
        (logs / ("switch-2025010%02d.log" % i)).write_text("log")
    last = activation.last_run(str(state))
    assert last["system"] == "/nix/store/s24" and last["outcome"] == "done" and last["rc"] == 0
    activation.remove_old_runs(str(state), str(logs), keep=5)
    # The newest five stay, and so does one that has not finished.
    assert sorted(os.listdir(str(state))) == ["switch-202501002"] + ["switch-2025010%02d" % i for i in range(20, 25)]
    assert len(os.listdir(str(logs))) == 5


def test_a_runner_that_was_killed_is_said_to_have_died_where_its_record_stops():
    dead = subprocess.Popen(["true"])
    dead.wait()
    summary = activation.run_summary({"state": "activating", "pid": dead.pid}, {"system": "/nix/store/s", "action": "switch"})
    assert summary["state"] == "activating" and summary["error"] == "the runner (pid %d) died while activating" % dead.pid
    alive = activation.run_summary({"state": "activating", "pid": os.getpid()}, {})
    assert alive["error"] is None


def test_start_refuses_unknown_parameters(tmp_path):
    lock = activation.DeployLock(1, str(tmp_path / "deploy.lock")).acquire()
    with pytest.raises(NixError, match="unknown runner parameters colour"):
        activation.Activation.start(lock, {"system": "/x", "colour": "blue"}, state_dir=str(tmp_path), log_dir=str(tmp_path))
    lock.release()


def start_runner(host, system, tmp_path, monkeypatch, use_systemd=None):
    """Activation.start of a switch to system, its runner reading the stand-in host's current and booted links."""
    sources = activation.runner_sources()
    sources["runner.py"] = sources["runner.py"].replace('"/run/current-system"', repr(str(host.current))).replace(
        '"/run/booted-system"', repr(str(host.booted)))
    monkeypatch.setattr(activation, "runner_sources", lambda: sources)
    lock = activation.DeployLock(1, str(host.state / "deploy.lock")).acquire()
    return activation.Activation.start(lock, {
        "action": "switch", "system": system, "activate": system, "profile": str(host.profile), "generation": None,
        "nix_env": str(host.nix_env), "install_bootloader": False, "rollback_on_failure": True, "confirm_timeout": 0,
        "keep_generations": None, "connection_id": None,
    }, state_dir=str(host.state), log_dir=str(tmp_path / "log"), use_systemd=use_systemd)


# scripts/test.sh runs this test under scripts/in-systemd.sh with ANSINIX_REQUIRE_SYSTEMD=1: there a skip is a failure.
@pytest.mark.skipif(not activation.systemd_running() and os.environ.get("ANSINIX_REQUIRE_SYSTEMD") != "1",
                    reason="needs systemd as PID 1")
def test_under_real_systemd_the_runner_and_the_switch_are_transient_units(host, tmp_path, monkeypatch):
    """The runner in a unit of its own, switch-to-configuration in nixos-rebuild-ng's unit, by real systemd-run.

    It runs where systemd is PID 1. On a machine without, scripts/in-systemd.sh runs it in namespaces whose
    PID 1 is systemd: `scripts/in-systemd.sh pytest tests/unit/plugins/module_utils/test_activation.py -k real_systemd`.
    """
    assert activation.systemd_running(), "ANSINIX_REQUIRE_SYSTEMD=1, but PID 1 here is not systemd"
    old, new = host.system("old"), host.system("new", seconds=2)
    # The units get only the environment systemd-run gives them: the stand-ins' paths are written into them.
    for script in (str(host.nix_env), old + "/bin/switch-to-configuration", new + "/bin/switch-to-configuration"):
        with open(script) as f:
            text = f.read().replace('"$FAKE_RECORD"', repr(str(host.record))).replace('"$FAKE_CURRENT"', repr(str(host.current)))
        with open(script, "w") as f:
            f.write(text)
    host.install(old)
    run = start_runner(host, new, tmp_path, monkeypatch)
    assert run.params()["systemd"] is True
    run.wait(60, states=("activating",))
    runner = run.status()["pid"]
    with open("/proc/%d/cgroup" % runner) as f:
        assert "/system.slice/ansinix-switch-%s.service" % os.path.basename(run.status_dir)[len("switch-"):] in f.read()
    main_pid = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", "nixos-rebuild-switch-to-configuration"],
                              capture_output=True, text=True, check=True).stdout.strip()
    with open("/proc/%s/cmdline" % main_pid, "rb") as f:
        assert f.read().split(b"\0")[1:3] == [new.encode() + b"/bin/switch-to-configuration", b"switch"]
    status = run.wait(60, states=("finished",))
    assert status["outcome"] == "done" and os.readlink(str(host.current)) == new
    assert host.calls() == ["nix-env --set %s" % new, "new switch bootloader=0"]
    # --pipe passed the unit's output through to the runner.
    assert run.output() == "restarting the following units: new.service\n"


def test_start_through_systemd_run_hands_the_lock_to_the_unit(host, tmp_path, monkeypatch):
    """Where systemd is PID 1 the runner is a transient unit; it cannot inherit the lock, so it is handed over.

    systemd cannot run here: a stand-in systemd-run records its arguments and starts the command detached.
    """
    old, new = host.system("old"), host.system("new", seconds=1)
    host.install(old)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemd-run"
    # Each call's environment of note and arguments; --pipe runs the command in the foreground, as the real one waits.
    fake.write_text(textwrap.dedent("""\
        #!/bin/sh
        { echo "NIXOS_INSTALL_BOOTLOADER=$NIXOS_INSTALL_BOOTLOADER"; printf '%%s\\n' "$@"; } > %s/systemd-run-$(date +%%s%%N).args
        pipe=
        while :; do case $1 in -E) shift 2 ;; --pipe) pipe=1; shift ;; -*) shift ;; *) break ;; esac; done
        [ -n "$pipe" ] && exec "$@"
        setsid -f "$@" </dev/null >/dev/null 2>&1
        """ % tmp_path))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ["PATH"]))
    run = start_runner(host, new, tmp_path, monkeypatch, use_systemd=True)

    def calls():
        return [f.read_text().splitlines() for f in sorted(tmp_path.glob("systemd-run-*.args"))]
    args = calls()[0][1:]
    assert args[0] == "--unit=" + "ansinix-switch-" + os.path.basename(run.status_dir)[len("switch-"):]
    assert {"--collect", "--no-ask-password", "--quiet", "--service-type=exec"} <= set(args)
    assert args[-2:] == [os.path.join(run.status_dir, "runner.py"), run.status_dir] and "--detach" not in args
    # The module let go; a second deploy waits for the unit's runner, then gets the lock.
    started = time.monotonic()
    activation.DeployLock(20, str(host.state / "deploy.lock")).acquire(poll=0.05).release()
    assert time.monotonic() - started > 0.5
    status = run.wait(20, states=("finished",))
    assert status["outcome"] == "done" and os.readlink(str(host.current)) == new
    # switch-to-configuration ran in the unit nixos-rebuild-ng starts for it, with its options and environment.
    assert calls()[1:] == [["NIXOS_INSTALL_BOOTLOADER=0", "-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER",
                            "-E", "NIXOS_NO_CHECK", "--collect", "--no-ask-password", "--pipe", "--quiet",
                            "--service-type=exec", "--unit=nixos-rebuild-switch-to-configuration",
                            new + "/bin/switch-to-configuration", "switch"]]
