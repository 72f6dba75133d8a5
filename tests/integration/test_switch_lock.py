"""nixos_switch and a switch it did not start: NixOS's own switch lock, waited for, refused, or left behind.

Every test holds /run/nixos/switch-to-configuration.lock on a test host the way something else on a NixOS
host would (a switch-to-configuration of a fixture system, which takes it as switch-to-configuration-ng
does, or flock(1)), runs the module through real ansible, and reads the host's generations,
/run/current-system and the runner's records afterwards.
"""
import json
import re
import subprocess
import time

from test_nixos_switch import PROFILE, adhoc, generations, runner_processes, show, system  # pylint: disable=import-error
# The host fixture of these tests, too.
from test_nixos_switch import host  # noqa: F401 pylint: disable=import-error,unused-import

LOCK = "/run/nixos/switch-to-configuration.lock"


def host_state(h):
    """What a switch changes: the running system, the profile and its generations, the boot loader, runs."""
    return h.run("readlink /run/current-system; readlink %s; ls /nix/var/nix/profiles; cat /boot/loader/loader.conf; "
                 "md5sum /boot/loader/ansinix-bootloader.log; ls /run/ansinix-units; ls -d /run/ansinix/switch-* 2>&1 || true"
                 % PROFILE).stdout


def start_on_host(h, command):
    """A command of the host's own, in the background (as a nixos-rebuild there would run); its pid."""
    return int(h.run("%s </dev/null >/dev/null 2>&1 & echo $!" % command).stdout.split()[-1])


def wait_until(predicate, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def switch_running(h, path):
    # [e]: the pattern must not match the shell that runs pgrep.
    return h.run("pgrep -f ' %s/activat[e] ' || true" % path).stdout.strip() != ""


def another_switch(h, name, seconds):
    """(the other system, the one to deploy, the other's switch-to-configuration pid), that switch under way.

    As `nixos-rebuild test` on the host would run it: its switch-to-configuration holds NixOS's lock throughout.
    """
    other, new = system(name, activationSeconds=seconds), system("after-" + name)
    for path in (other, new):
        h.import_closure(path)
    start_on_host(h, "%s/bin/switch-to-configuration test" % other)
    wait_until(lambda: switch_running(h, other))
    pid = int(h.run("pgrep -f '[/]sh %s/bin/switch-to-configuration test'" % other).stdout.split()[0])
    return other, new, pid


def test_a_switch_already_running_is_waited_for_then_this_one_runs(host, run_ansible):
    other, new, _pid = another_switch(host, "other", 4)
    started = time.monotonic()
    proc, result = adhoc(run_ansible, "path=%s confirm_timeout=3 lock_timeout=60" % new)
    assert proc.returncode == 0 and result["changed"] is True, show(proc)
    assert time.monotonic() - started > 2
    # The runner started from what the other switch left: it waited for it, and changed nothing before.
    status = json.loads(host.run("cat /run/ansinix/switch-*/status.json").stdout)
    assert status["previous_system"] == other and status["outcome"] == "done" and status["current_system"] == new
    assert host.readlink("/run/current-system") == new and generations(host) == [1, 2]
    assert host.readlink(PROFILE + "-2-link") == new


def test_a_switch_held_past_the_bound_is_refused_naming_it_and_nothing_changes(host, run_ansible):
    new = system("never")
    host.import_closure(new)
    # flock(1) holds it (-o: not its command, so that ending flock ends the lock).
    holder = start_on_host(host, "mkdir -p /run/nixos; flock -o %s sleep 600" % LOCK)
    try:
        wait_until(lambda: "FLOCK" in host.run("cat /proc/locks").stdout)
        before = host_state(host)
        for extra in ([], ["--check"]):
            started = time.monotonic()
            proc, result = adhoc(run_ansible, "path=%s lock_timeout=2" % new, *extra)
            assert proc.returncode != 0 and time.monotonic() - started >= 2, show(proc)
            assert re.fullmatch(r"another switch is running on this host: pid %d \(flock -o %s sleep 600, for \d+s\) holds %s\. "
                                r"Wait for it to finish, or raise lock_timeout \(now 2s\)" % (holder, LOCK, LOCK),
                                result["msg"]), result["msg"]
            assert "Traceback" not in proc.stdout + proc.stderr
            assert host_state(host) == before and generations(host) == [1]
    finally:
        host.run("pkill -P %d; kill %d" % (holder, holder))


def test_a_stopped_switch_is_reported_as_stale_at_once_and_left_alone(host, run_ansible):
    # `nixos-rebuild test`, then Ctrl-Z: its switch-to-configuration is stopped, and holds the lock.
    other, new, switch = another_switch(host, "stopped", 3)
    host.run("kill -STOP %d" % switch)
    try:
        before = host_state(host)
        started = time.monotonic()
        proc, result = adhoc(run_ansible, "path=%s lock_timeout=60" % new)
        assert proc.returncode != 0 and time.monotonic() - started < 30, show(proc)
        assert re.fullmatch(
            r"the NixOS switch lock %s looks stale: pid %d \(\S+/sh %s/bin/switch-to-configuration test, for \d+s\) is "
            r"stopped \(state T\) and will not finish by itself\. Continue it \(kill -CONT %d\) or end it, then run "
            r"again\. Nothing was changed" % (LOCK, switch, other, switch), result["msg"]), result["msg"]
        assert host_state(host) == before
        assert host.run("awk '{print $3}' /proc/%d/stat" % switch).stdout.strip() == "T"  # reported, not broken
    finally:
        host.run("kill -CONT %d" % switch)
    wait_until(lambda: not switch_running(host, other))
    proc, result = adhoc(run_ansible, "path=%s confirm_timeout=3" % new)
    assert proc.returncode == 0 and host.readlink("/run/current-system") == new, show(proc)


def test_a_deploy_killed_mid_switch_is_reported_by_the_next_one(host, run_ansible, ansible_env):
    slow, new = system("killed", activationSeconds=3), system("after-killed")
    for path in (slow, new):
        host.import_closure(path)
    first = subprocess.Popen(["ansible", "sw1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s confirm_timeout=0" % slow],
                             env=ansible_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: '"state": "activating"' in host.run("cat /run/ansinix/switch-*/status.json 2>/dev/null || true").stdout)
    (runner,) = runner_processes(host)
    host.run("kill -KILL %s" % runner)
    out, _err = first.communicate(timeout=120)
    assert first.returncode != 0 and "the activation runner died while activating" in out, out
    # The next deploy finds the deploy lock its runner never let go of, says so, and goes on from the host as it is.
    proc, result = adhoc(run_ansible, "path=%s confirm_timeout=3 lock_timeout=60" % new)
    assert proc.returncode == 0 and host.readlink("/run/current-system") == new, show(proc)
    warning = " ".join(proc.stderr.split())
    assert re.search(r"a deploy before this one on this host ended without finishing \(a switch to %s, runner pid %s, "
                     r"activating since \S+; its log: /var/log/ansinix/switch-\S+\.log\): it was killed, and the host may be "
                     r"between two systems\." % (slow, runner), warning), proc.stderr
    last = result["last_activation"]
    assert last["state"] == "activating" and last["system"] == slow and last["error"] == "the runner (pid %s) died while activating" % runner
    # Reported once: the run after that has nothing to say.
    proc, result = adhoc(run_ansible, "path=%s confirm_timeout=3" % new)
    assert proc.returncode == 0 and "ended without finishing" not in proc.stderr, show(proc)
