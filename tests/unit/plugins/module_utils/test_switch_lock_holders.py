"""NixOS's switch lock as nixos_switch sees it: real flocks held by real processes on this machine."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils import activation, activation_runner as ar, switch_lock
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError

HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


@pytest.fixture
def lock(tmp_path):
    return str(tmp_path / "switch-to-configuration.lock")


@pytest.fixture
def procs():
    started = []

    def start(argv):
        # A session of its own: the end of the test ends it and every process it started.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        proc.stdout.close()


def hold(procs, lock, seconds=600):
    holder = procs([sys.executable, "-c", HOLD, lock, str(seconds)])
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_free_lock_and_a_missing_one(lock):
    assert switch_lock.inspect_lock(lock) is None
    open(lock, "w").close()
    assert switch_lock.inspect_lock(lock) is None and ar.flock_takers(lock) == []


def test_a_running_switch_is_named_with_its_command_line_and_waited_for(lock, procs):
    holder = hold(procs, lock, seconds=1)
    found = switch_lock.inspect_lock(lock)
    assert found["stale"] is None and [h["pid"] for h in found["holders"]] == [holder.pid]
    assert found["holders"][0]["argv"].startswith("%s -c import fcntl, os, sys, time fd = " % sys.executable)
    started = time.monotonic()
    switch_lock.wait_for_other_switch(time.monotonic() + 20, 20, lock, poll=0.05)
    assert 0.3 < time.monotonic() - started < 10 and switch_lock.inspect_lock(lock) is None


def test_past_the_bound_the_holder_is_named_in_one_line(lock, procs):
    holder = hold(procs, lock)
    started = time.monotonic()
    with pytest.raises(NixError) as err:
        switch_lock.wait_for_other_switch(time.monotonic() + 0.5, 0.5, lock, poll=0.05)
    assert time.monotonic() - started >= 0.5
    msg = err.value.msg
    assert msg.startswith("another switch is running on this host: pid %d (%s -c import fcntl" % (holder.pid, sys.executable))
    assert msg.endswith(") holds %s. Wait for it to finish, or raise lock_timeout (now 0.5s)" % lock) and "\n" not in msg


def test_a_stopped_holder_is_stale_and_refused_at_once(lock, procs):
    holder = hold(procs, lock)
    holder.send_signal(signal.SIGSTOP)
    try:
        for _attempt in range(100):
            if switch_lock.process_info(holder.pid)["state"] == "T":
                break
            time.sleep(0.02)
        started = time.monotonic()
        with pytest.raises(NixError) as err:
            switch_lock.wait_for_other_switch(time.monotonic() + 30, 30, lock)
        assert time.monotonic() - started < 5
        assert err.value.msg.startswith("the NixOS switch lock %s looks stale: pid %d (" % (lock, holder.pid))
        assert ("is stopped (state T) and will not finish by itself. Continue it (kill -CONT %d) or end it, then run again. "
                "Nothing was changed" % holder.pid) in err.value.msg
        assert holder.poll() is None  # reported, not broken
    finally:
        holder.send_signal(signal.SIGCONT)


def test_a_lock_inherited_from_a_process_that_exited_is_stale(lock, procs):
    # What a switch leaves when a command it started keeps its descriptor: the flock outlives the switch.
    taker = procs([sys.executable, "-c", textwrap.dedent("""
        import fcntl, os, subprocess, sys
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        child = subprocess.Popen(["sleep", "600"], pass_fds=[fd], start_new_session=True)
        print(child.pid, flush=True)
    """), lock])
    child = int(taker.stdout.readline())
    taker.wait()
    try:
        found = switch_lock.inspect_lock(lock)
        assert [h["pid"] for h in found["holders"]] == [child]
        # /proc/locks keeps the taker's pid, or (read from a pid namespace of its own) leaves the lock out.
        assert ar.flock_takers(lock) in ([taker.pid], [])
        taken = "pid %d, which took it," % taker.pid if ar.flock_takers(lock) else "the process that took it"
        with pytest.raises(NixError) as err:
            switch_lock.wait_for_other_switch(time.monotonic() + 30, 30, lock)
        assert err.value.msg == (
            "the NixOS switch lock %s looks stale: %s has exited, and pid %d (sleep 600, for %ds) "
            "inherited it. It is left over from a switch that ended; if that process is not needed, end it (kill %d), "
            "then run again. Nothing was changed" % (lock, taken, child, found["holders"][0]["seconds"], child))
        assert switch_lock.process_info(child) is not None
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_shell_switch_that_took_the_lock_through_flock_1_is_running(lock, tmp_path, procs):
    # A shell switch-to-configuration (the test hosts' fixture systems) locks with flock(1), which exits at once.
    script = tmp_path / "bin" / "switch-to-configuration"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexec 9>>%s\nflock -n 9 || exit 11\necho locked\nsleep 600 9>&-\n" % lock)
    script.chmod(0o755)
    shell = procs([str(script), "test"])
    assert shell.stdout.readline().strip() == "locked"
    # Until the sleep it forks has closed the inherited descriptor, that one holds the file open too.
    for _attempt in range(100):
        found = switch_lock.inspect_lock(lock)
        if [h["pid"] for h in found["holders"]] == [shell.pid]:
            break
        time.sleep(0.02)
    assert found["stale"] is None and [h["pid"] for h in found["holders"]] == [shell.pid]
    assert found["holders"][0]["argv"] == "/bin/sh %s test" % script


def test_the_runner_waits_for_the_lock_before_it_runs_a_switch(lock, procs):
    hold(procs, lock, seconds=0.6)
    started = time.monotonic()
    assert ar.wait_for_switch_lock(time.monotonic() + 20, lock, poll=0.05) is True
    assert time.monotonic() - started > 0.3
    hold(procs, lock)
    assert ar.wait_for_switch_lock(time.monotonic() + 0.2, lock, poll=0.05) is False


def test_switch_argv_in_nixos_rebuild_ngs_unit_or_straight():
    system = "/nix/store/%s-nixos-system-web1" % ("a" * 32)
    assert ar.switch_argv(system, "boot") == [system + "/bin/switch-to-configuration", "boot"]
    # nixpkgs pkgs/by-name/ni/nixos-rebuild-ng/src/nixos_rebuild/nix.py, SWITCH_TO_CONFIGURATION_CMD_PREFIX.
    assert ar.switch_argv(system, "switch", systemd=True) == [
        "systemd-run", "-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER", "-E", "NIXOS_NO_CHECK", "--collect",
        "--no-ask-password", "--pipe", "--quiet", "--service-type=exec", "--unit=nixos-rebuild-switch-to-configuration",
        system + "/bin/switch-to-configuration", "switch"]


def test_systemd_counts_only_when_it_is_pid_1(tmp_path):
    run_dir, comm = tmp_path / "systemd" / "system", tmp_path / "comm"
    comm.write_text("systemd\n")
    assert activation.systemd_running(str(run_dir), str(comm)) is False  # no /run/systemd/system
    run_dir.mkdir(parents=True)
    assert activation.systemd_running(str(run_dir), str(comm)) is True
    comm.write_text("init\n")  # a chroot or container that sees the host's /run
    assert activation.systemd_running(str(run_dir), str(comm)) is False
    assert activation.systemd_running(str(run_dir), str(tmp_path / "none")) is False
