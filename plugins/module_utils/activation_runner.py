# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""The activation runner: switches a NixOS host and rolls it back, detached from any connection.

nixos_switch copies this file's source into a status directory on the host and starts it there
(in a systemd unit, or as a double-forked process in its own session), so that setting the
profile, the activation, the automatic rollback and the magic rollback all finish even when the
SSH connection or the controller goes away. It uses the standard library only: the collection's
other code is gone once the module has returned.

Its state is ``status.json`` in the status directory, replaced atomically: ``state`` goes
starting -> waiting-for-lock -> setting-profile -> activating -> [awaiting-confirmation] ->
[rolling-back] -> [pruning] -> finished, and ``outcome`` is then one of done, rolled-back,
failed (activation failed, rollback_on_failure off) or error (the runner could not do its job).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import subprocess
import sys
import time

try:
    from ansible_collections.ansinix.nixos.plugins.module_utils import next_boot
except ImportError:  # on the host, where nixos_switch writes next_boot.py beside this file
    import next_boot  # pylint: disable=import-error

# A module that waits for the lock: a handover to a runner that has not taken it yet is still
# pending for this long without a sign of life from the runner.
HANDOVER_GRACE = 30
CURRENT_SYSTEM = "/run/current-system"
BOOTED_SYSTEM = "/run/booted-system"
# A confirmation usually comes within a second of the activation: look often then, and less often later.
CONFIRM_POLL = 0.02
CONFIRM_POLL_LATER = 0.1
LOCK_WAIT = 600
# The lock every switch-to-configuration takes; switch-to-configuration-ng gives up at once when it is held.
SWITCH_LOCK = "/run/nixos/switch-to-configuration.lock"
# Where PID 1 is systemd, switch-to-configuration runs in the transient unit nixos-rebuild-ng starts for it,
# with the same options and environment (nixos_rebuild/nix.py, SWITCH_TO_CONFIGURATION_CMD_PREFIX).
SWITCH_UNIT = "nixos-rebuild-switch-to-configuration"
SWITCH_UNIT_ARGV = (
    "systemd-run", "-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER", "-E", "NIXOS_NO_CHECK",
    "--collect", "--no-ask-password", "--pipe", "--quiet", "--service-type=exec", "--unit=" + SWITCH_UNIT,
)
# The last words of a switch that found another one running: switch-to-configuration-ng's, or systemd's
# when a unit of that name is still there.
SWITCH_BUSY = ("Could not acquire lock", "was already loaded or has a fragment file.")

PARAM_KEYS = (
    "action", "activate", "system", "profile", "generation", "nix_env", "install_bootloader",
    "rollback_on_failure", "confirm_timeout", "keep_generations", "token", "connection_id", "lock_file", "log",
    "boot_once", "switch_lock_timeout", "systemd",
)


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_json_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.rename(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# -- processes ------------------------------------------------------------------------------------

def process_start_time(pid):
    """The start time of a process (clock ticks since boot), or None when there is no such process.

    A pid and its start time name one process for good: a pid alone may be reused.
    """
    try:
        with open("/proc/%d/stat" % int(pid)) as f:
            stat = f.read()
    except (OSError, ValueError, TypeError):
        return None
    # The command name may hold spaces and parentheses: the fields after it start at the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def process_alive(pid, start_time=None):
    started = process_start_time(pid)
    return started is not None and (start_time is None or started == start_time)


def connection_id(pid=None):
    """'pid:starttime' of the nearest sshd process above pid (default: this one), or None.

    Every SSH connection has an sshd process of its own (``sshd`` or ``sshd-session``) that the
    commands of all its sessions descend from, multiplexed ones included, so two commands with the
    same connection id came over the same authenticated connection.
    """
    pid = os.getpid() if pid is None else pid
    for _depth in range(64):
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            with open("/proc/%d/comm" % pid) as f:
                comm = f.read().strip()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        if comm.startswith("sshd"):
            return "%d:%s" % (pid, fields[19])
        pid = int(fields[1])
        if pid <= 1:
            return None
    return None


# -- profiles -------------------------------------------------------------------------------------

def generations(profile):
    """{number: system store path} of every generation of a profile (its <name>-<N>-link files)."""
    directory, base = os.path.split(profile)
    link_re = re.compile(r"^%s-(\d+)-link$" % re.escape(base))
    gens = {}
    try:
        entries = os.listdir(directory)
    except OSError:
        return gens
    for entry in entries:
        match = link_re.match(entry)
        if match:
            gens[int(match.group(1))] = os.path.realpath(os.path.join(directory, entry))
    return gens


def current_generation(profile):
    try:
        target = os.readlink(profile)
    except OSError:
        return None
    match = re.match(r"^%s-(\d+)-link$" % re.escape(os.path.basename(profile)), os.path.basename(target))
    return int(match.group(1)) if match else None


def generation_of(profile, system):
    """The newest generation whose system is this store path, or None."""
    matches = [n for n, path in generations(profile).items() if path == system]
    return max(matches) if matches else None


def prunable(all_generations, keep, protect=()):
    """Generations beyond the newest `keep`; never one in protect (current, booted, ...)."""
    newest_first = sorted(all_generations, reverse=True)
    kept = set(newest_first[:keep]) | set(n for n in protect if n is not None)
    return sorted(n for n in newest_first if n not in kept)


def realpath_or_none(path):
    return os.path.realpath(path) if os.path.lexists(path) else None


# -- the lock -------------------------------------------------------------------------------------

def read_lock_record(lock_file):
    return read_json(lock_file) or {}


def write_lock_record(fd, record):
    """The lock file's content says who holds the lock (its flock says whether anybody does)."""
    data = json.dumps(record, sort_keys=True).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def handover_pending(record, now=None):
    """True when the lock was handed to a runner that has not taken it yet and may still do so."""
    if not record.get("handover"):
        return False
    status = read_json(os.path.join(record.get("status_dir", "/nonexistent"), "status.json")) or {}
    if status.get("state") == "finished":
        return False
    runner = status.get("pid")
    if runner:
        return process_alive(runner, status.get("pid_start_time"))
    now = time.time() if now is None else now
    return now - record.get("since_epoch", 0) < HANDOVER_GRACE


def try_lock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False


# -- the switch lock of NixOS ---------------------------------------------------------------------

def flock_takers(path):
    """Pids that took an flock on path, as /proc/locks records them; [] when nobody holds one.

    Read, not probed: taking the lock even for an instant would make a switch that starts then fail.
    """
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    key = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a process waiting for it is a "1: -> FLOCK ..." line.
    return [int(fields[4]) for fields in (line.split() for line in lines)
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key]


def wait_for_switch_lock(deadline, lock=None, poll=0.2):
    """Until nobody holds the switch lock, or until deadline (time.monotonic()); True when it is free."""
    while flock_takers(lock or SWITCH_LOCK):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def switch_argv(system, action, systemd=False):
    """switch-to-configuration of a system, in nixos-rebuild-ng's transient unit where systemd runs."""
    argv = [os.path.join(system, "bin", "switch-to-configuration"), action]
    return list(SWITCH_UNIT_ARGV) + argv if systemd else argv


# -- the runner -----------------------------------------------------------------------------------

class Runner:
    """One switch on this host, driven by <status_dir>/params.json."""

    def __init__(self, status_dir):
        self.status_dir = status_dir
        self.params = read_json(os.path.join(status_dir, "params.json"))
        if not isinstance(self.params, dict):
            raise RuntimeError("no parameters in %s/params.json" % status_dir)
        self.status = read_json(os.path.join(status_dir, "status.json")) or {}
        self.lock_fd = None
        self.log_file = None
        self.last_output = b""

    # status, log

    def update(self, **fields):
        self.status.update(fields)
        write_json_atomic(os.path.join(self.status_dir, "status.json"), self.status)

    def log(self, message):
        self.log_file.write(("%s ansinix runner: %s\n" % (now_iso(), message)).encode())
        self.log_file.flush()

    def run_logged(self, argv, env=None, output_name=None):
        """Run a command with its output in the log (and in output_name); returns its exit code."""
        self.log("running %s" % " ".join(argv))
        out = open(os.path.join(self.status_dir, output_name), "wb") if output_name else None
        try:
            # The runner is a program of its own that outlives the module: there is no run_command here.
            # pylint: disable-next=ansible-bad-function
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, cwd="/")
            self.last_output = b""
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                self.last_output = (self.last_output + chunk)[-4096:]
                self.log_file.write(chunk)
                self.log_file.flush()
                if out:
                    out.write(chunk)
                    out.flush()
            rc = proc.wait()
        except OSError as exc:
            self.log("could not run %s: %s" % (argv[0], exc))
            rc = 127
        finally:
            if out:
                out.close()
        self.log("%s exited with %d" % (os.path.basename(argv[0]), rc))
        return rc

    # the lock: taken from the module by handover

    def take_lock(self):
        self.lock_fd = os.open(self.params["lock_file"], os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        while not try_lock(self.lock_fd):
            if time.monotonic() > deadline:
                raise RuntimeError("the deploy lock %s was not handed over within %ds" % (self.params["lock_file"], LOCK_WAIT))
            time.sleep(0.05)
        write_lock_record(self.lock_fd, {
            "pid": os.getpid(), "pid_start_time": process_start_time(os.getpid()), "status_dir": self.status_dir,
            "system": self.params["system"], "since": now_iso(), "since_epoch": time.time(),
        })

    def release_lock(self):
        if self.lock_fd is not None:
            write_lock_record(self.lock_fd, {})
            os.close(self.lock_fd)
            self.lock_fd = None

    # the steps

    def nix_env(self, *args):
        return self.run_logged([self.params["nix_env"], "--profile", self.params["profile"]] + list(args))

    def set_profile(self):
        """Make the system (or the generation asked for) the profile's current generation."""
        profile = self.params["profile"]
        before = generations(profile)
        if self.params.get("generation") is not None:
            rc = self.nix_env("--switch-generation", str(self.params["generation"]))
        else:
            rc = self.nix_env("--set", self.params["system"])
        if rc != 0:
            raise RuntimeError("nix-env could not set profile %s (exit %d)" % (profile, rc))
        new = current_generation(profile)
        # `nix-env --set` reuses the newest generation when it already holds the system: only a
        # generation this run made may be deleted on rollback.
        self.update(new_generation=new, created_generation=new if new not in before else None)

    def switch_to_configuration(self, system, action, output_name=None, install_bootloader=False):
        """Run it; while another switch holds the NixOS switch lock, wait for it (switch_lock_timeout)."""
        # "1" or "0", as nixos-rebuild-ng sets it.
        env = dict(os.environ, NIXOS_INSTALL_BOOTLOADER="1" if install_bootloader else "0")
        deadline = time.monotonic() + self.params.get("switch_lock_timeout", 0)
        while True:
            wait_for_switch_lock(deadline)
            rc = self.run_logged(switch_argv(system, action, self.params.get("systemd")), env=env, output_name=output_name)
            if not self.switch_was_busy(rc) or time.monotonic() >= deadline:
                return rc
            self.log("another switch is running on this host; waiting for it")
            time.sleep(0.5)

    def switch_was_busy(self, rc):
        """The last switch-to-configuration did nothing because another switch was running."""
        return rc != 0 and self.last_output.decode(errors="replace").strip().endswith(SWITCH_BUSY)

    def rollback(self, reason):
        """Put the host back as it was: profile, boot loader default, running system."""
        self.update(state="rolling-back", rollback_reason=reason)
        self.log("rolling back (%s)" % reason)
        status, params = self.status, self.params
        errors = []
        profile_changed = status.get("new_generation") not in (None, status.get("previous_generation"))
        if profile_changed and status.get("previous_generation") is not None:
            if self.nix_env("--switch-generation", str(status["previous_generation"])) != 0:
                errors.append("nix-env --switch-generation %s failed" % status["previous_generation"])
        if profile_changed and status.get("created_generation") is not None:
            if self.nix_env("--delete-generations", str(status["created_generation"])) != 0:
                errors.append("deleting generation %s failed" % status["created_generation"])
        previous_system = status.get("previous_system")
        boot_system = generations(params["profile"]).get(status.get("previous_generation")) if profile_changed else None
        activated = params["action"] in ("switch", "test") and reason != "switch-lock-held"
        if reason == "switch-lock-held":
            steps = []
        elif boot_system and activated and boot_system == previous_system:
            # The common case: one switch restores both the boot default and the running system.
            steps = [(previous_system, "switch")]
        else:
            steps = ([(boot_system, "boot")] if boot_system else []) + ([(previous_system, "test")] if activated and previous_system else [])
        for system, action in steps:
            rc = self.switch_to_configuration(system, action, output_name="rollback.out")
            if rc != 0:
                errors.append("%s of %s exited with %d" % (action, system, rc))
        self.update(rolled_back=True, rollback_errors=errors, outcome="rolled-back")

    def await_confirmation(self, timeout):
        """True when the controller confirmed over a new connection within timeout seconds."""
        self.update(state="awaiting-confirmation", confirm_deadline_epoch=time.time() + timeout)
        path = os.path.join(self.status_dir, "confirm")
        started = time.monotonic()
        while time.monotonic() < started + timeout:
            answer = self.confirmation(path)
            if answer is not None:
                return answer
            time.sleep(CONFIRM_POLL if time.monotonic() < started + 5 else CONFIRM_POLL_LATER)
        return self.confirmation(path) is True

    def confirmation(self, path):
        """True (confirmed), None (nothing yet) or None after logging a confirmation that proves nothing."""
        try:
            with open(path) as f:
                words = f.read().split()
        except OSError:
            return None
        if len(words) < 2 or words[0] != self.params["token"]:
            return None
        original = self.params.get("connection_id")
        if original and words[1] == original:
            self.log("ignored a confirmation that came over the connection the switch was made on (%s)" % original)
            os.unlink(path)
            return None
        self.log("confirmed over a new connection (%s)" % words[1])
        return True

    def boot_once(self):
        """Make the new generation the system of the next boot only, the previous one staying the default.

        For a system that refuses a live switch: if it does not come up and get confirmed, the boot after
        that is the previous generation's. The deploy makes the new generation the default once the host is
        back on it.
        """
        self.update(state="booting-once")
        previous, new = self.status.get("previous_generation"), self.status.get("new_generation")
        if previous is None or new in (None, previous):
            raise RuntimeError("there is no previous generation to keep as the boot default")
        if self.nix_env("--switch-generation", str(previous)) != 0:
            raise RuntimeError("nix-env could not switch the profile back to generation %s" % previous)
        previous_system = generations(self.params["profile"]).get(previous)
        if self.switch_to_configuration(previous_system, "boot") != 0:
            raise RuntimeError("switch-to-configuration boot of the previous system %s failed" % previous_system)
        entry = next_boot.set_next_boot(self, self.params["system"], generations(self.params["profile"]).get(new),
                                        self.params["profile"], new, previous_system)
        self.update(boot_once_entry=entry)

    def prune(self):
        keep = self.params.get("keep_generations")
        if not keep:
            return []
        profile = self.params["profile"]
        booted = realpath_or_none(BOOTED_SYSTEM)
        protect = [current_generation(profile), generation_of(profile, booted) if booted else None]
        doomed = prunable(generations(profile), keep, protect)
        if doomed:
            self.update(state="pruning")
            if self.nix_env("--delete-generations", *[str(n) for n in doomed]) != 0:
                self.update(prune_error="nix-env --delete-generations failed")
                return []
            # The boot loader still lists them; its entries would point at systems a GC removes.
            current = realpath_or_none(profile)
            if current and self.params["action"] in ("switch", "boot", "test"):
                self.switch_to_configuration(current, "boot")
        return doomed

    def run(self):
        params = self.params
        self.update(state="waiting-for-lock", pid=os.getpid(), pid_start_time=process_start_time(os.getpid()),
                    started=now_iso(), log=params["log"])
        self.take_lock()
        profile = params["profile"]
        self.update(state="setting-profile", previous_system=realpath_or_none(CURRENT_SYSTEM),
                    previous_generation=current_generation(profile), new_generation=current_generation(profile),
                    created_generation=None, rolled_back=False, confirmed=None, deleted_generations=[])
        self.log("%s %s (previous system %s, generation %s)"
                 % (params["action"], params["activate"], self.status["previous_system"], self.status["previous_generation"]))
        # Another switch that started after the module looked: wait for it before changing anything.
        if not wait_for_switch_lock(time.monotonic() + params.get("switch_lock_timeout", 0)):
            raise RuntimeError("another switch held %s for more than %ss" % (SWITCH_LOCK, params.get("switch_lock_timeout", 0)))
        if params["action"] in ("switch", "boot"):
            self.set_profile()
        self.update(state="activating")
        rc = self.switch_to_configuration(params["activate"], params["action"], output_name="activation.out",
                                          install_bootloader=params.get("install_bootloader"))
        self.update(rc=rc)
        if self.switch_was_busy(rc):
            # switch-to-configuration stopped before it did anything: only the profile goes back.
            held = "the unit %s.service" % SWITCH_UNIT if SWITCH_BUSY[1] in self.last_output.decode(errors="replace") else SWITCH_LOCK
            self.update(error="another switch held %s for more than %ss" % (held, params.get("switch_lock_timeout", 0)))
            self.rollback("switch-lock-held")
            return
        if rc != 0:
            if params.get("rollback_on_failure"):
                self.rollback("activation-failed")
            else:
                self.update(outcome="failed")
            return
        if params.get("boot_once"):
            self.boot_once()
        if params["action"] in ("switch", "test") and params.get("confirm_timeout", 0) > 0:
            if not self.await_confirmation(params["confirm_timeout"]):
                self.rollback("unconfirmed")
                return
            self.update(confirmed=True)
        self.update(deleted_generations=self.prune(), outcome="done")

    def main(self):
        os.umask(0o022)
        log_dir = os.path.dirname(self.params["log"])
        if not os.path.isdir(log_dir):
            os.makedirs(log_dir, mode=0o750)
        self.log_file = os.fdopen(os.open(self.params["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640), "ab")
        try:
            self.run()
        except Exception as exc:  # pylint: disable=broad-except
            # Whatever went wrong, the module must learn it, and a changed profile must go back.
            self.log("error: %s" % exc)
            self.update(error=str(exc))
            profile_changed = self.status.get("new_generation") != self.status.get("previous_generation")
            if self.status.get("state") in ("activating", "awaiting-confirmation") or (
                    profile_changed and self.status.get("state") not in ("rolling-back", "pruning")):
                try:
                    self.rollback("runner-error")
                except Exception as inner:  # pylint: disable=broad-except
                    self.log("rollback failed too: %s" % inner)
            self.update(outcome=self.status.get("outcome") or "error")
        finally:
            self.update(state="finished", finished=now_iso(), current_system=realpath_or_none(CURRENT_SYSTEM),
                        current_generation=current_generation(self.params["profile"]))
            self.log("finished: %s" % self.status.get("outcome"))
            self.release_lock()
            self.log_file.close()


def detach():
    """Become a daemon: not a child of the caller, in a session of our own, no terminal."""
    if os.fork() > 0:
        os._exit(0)  # pylint: disable=protected-access
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # pylint: disable=protected-access
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir("/")


def main(argv):
    args = list(argv[1:])
    if args and args[0] == "--detach":
        args.pop(0)
        detach()
    if len(args) != 1:
        sys.stderr.write("usage: runner [--detach] STATUS_DIR\n")
        return 2
    Runner(args[0]).main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
