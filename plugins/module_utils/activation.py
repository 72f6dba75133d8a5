# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Module side of an activation: the host's deploy lock, starting the detached runner, waiting on it.

The runner (activation_runner.py) does everything that changes the host: setting the profile, the
activation, the automatic rollback, the magic rollback and pruning. The module takes the deploy
lock, decides, hands the lock over to the runner it starts, and waits on the runner's status.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

from ansible_collections.ansinix.nixos.plugins.module_utils import activation_runner as runner_code
from ansible_collections.ansinix.nixos.plugins.module_utils import next_boot as next_boot_code
from ansible_collections.ansinix.nixos.plugins.module_utils.activation_runner import (
    handover_pending, process_alive, read_json, read_lock_record, try_lock, write_json_atomic, write_lock_record,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError
from ansible_collections.ansinix.nixos.plugins.module_utils.switch_lock import process_info, shorten

STATE_DIR = "/run/ansinix"
LOCK_FILE = STATE_DIR + "/deploy.lock"
LOG_DIR = "/var/log/ansinix"
KEEP_RUNS = 20
# How long a runner may take to show up in its status after it was started.
START_TIMEOUT = 60


def systemd_running(run_dir="/run/systemd/system", pid1_comm="/proc/1/comm"):
    """systemd is PID 1: what sd_booted() checks (nixos-rebuild-ng too), and PID 1 says it is systemd.

    A container or a chroot may show the host's /run; only a systemd that is PID 1 here can start units for us.
    """
    try:
        with open(pid1_comm) as f:
            return os.path.isdir(run_dir) and f.read().strip() == "systemd"
    except OSError:
        return False


def describe_holder(record):
    """Who holds the deploy lock, in words, from the lock file's record."""
    if not record:
        return "holder unknown"
    if record.get("status_dir"):
        status = read_json(os.path.join(record["status_dir"], "status.json")) or {}
        pid = status.get("pid") or record.get("pid")
        return "a switch to %s, runner pid %s, %s since %s; its log: %s" % (
            record.get("system") or "?", pid or "not started", status.get("state", "starting"),
            record.get("since", "?"), status.get("log") or record["status_dir"])
    info = process_info(record["pid"]) if isinstance(record.get("pid"), int) else None
    return "pid %s%s since %s" % (record.get("pid", "?"), " (%s)" % shorten(info["argv"]) if info else "", record.get("since", "?"))


class DeployLock:
    """One deploy at a time per host.

    An flock on LOCK_FILE, so a holder that dies frees it. The module hands it over to the runner
    it starts: it writes a handover record before releasing, and whoever takes the flock while that
    handover is pending (the runner alive, or just started) lets go of it again.
    """

    def __init__(self, timeout, lock_file=LOCK_FILE):
        self.timeout = timeout
        self.lock_file = lock_file
        self.fd = None
        self.handed_over = False
        # The record a holder that ended without letting go left in the lock file (reported, then replaced).
        self.left_over = None

    def acquire(self, poll=0.1):
        os.makedirs(os.path.dirname(self.lock_file), mode=0o700, exist_ok=True)
        self.fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            if try_lock(self.fd):
                if not handover_pending(read_lock_record(self.lock_file)):
                    break
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            if time.monotonic() >= deadline:
                holder = describe_holder(read_lock_record(self.lock_file))
                os.close(self.fd)  # not release(): the record is the holder's
                self.fd = None
                raise NixError("another deploy is running on this host (%s). Wait for it, or raise lock_timeout (now %ss)"
                               % (holder, self.timeout))
            time.sleep(poll)
        self.left_over = read_lock_record(self.lock_file) or None
        write_lock_record(self.fd, {"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return self

    def hand_over(self, status_dir, system):
        self.handed_over = True
        write_lock_record(self.fd, {"handover": True, "status_dir": status_dir, "system": system, "pid": os.getpid(),
                                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "since_epoch": time.time()})

    def release(self, clear=None):
        """Let go; the record is cleared unless the lock was handed over (clear=True: even then)."""
        if self.fd is not None:
            if clear or (clear is None and not self.handed_over):
                write_lock_record(self.fd, {})
            os.close(self.fd)
            self.fd = None


def runner_sources():
    """{file name: source} of the runner, as it is written on the host: the runner and what it imports of ours."""
    # Imported here: the switch starts a Python on the host for every run, and inspect alone is a tenth of its imports.
    import inspect  # pylint: disable=import-outside-toplevel
    return {"runner.py": inspect.getsource(runner_code), "next_boot.py": inspect.getsource(next_boot_code)}


def token(nbytes):
    """Random hex, as secrets.token_hex (which reads os.urandom too) without importing secrets and hmac."""
    return os.urandom(nbytes).hex()


def new_run_id():
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + token(4)


class Activation:
    """One run of the runner; its files live in a status directory under STATE_DIR."""

    def __init__(self, status_dir):
        self.status_dir = status_dir

    @classmethod
    def start(cls, lock, params, state_dir=STATE_DIR, log_dir=LOG_DIR, use_systemd=None):
        """Write the runner and its parameters, hand it the lock, and start it detached."""
        unknown = set(params) - set(runner_code.PARAM_KEYS)
        if unknown:
            raise NixError("internal error: unknown runner parameters %s" % ", ".join(sorted(unknown)))
        run_id = new_run_id()
        status_dir = os.path.join(state_dir, "switch-" + run_id)
        os.makedirs(status_dir, mode=0o700)
        systemd = systemd_running() if use_systemd is None else use_systemd
        params = dict(params, token=token(16), lock_file=lock.lock_file, systemd=systemd,
                      log=os.path.join(log_dir, "switch-%s.log" % run_id))
        write_json_atomic(os.path.join(status_dir, "params.json"), params)
        write_json_atomic(os.path.join(status_dir, "status.json"), {"state": "starting", "log": params["log"]})
        for name, source in runner_sources().items():
            with open(os.path.join(status_dir, name), "w") as f:
                f.write(source)
        runner = os.path.join(status_dir, "runner.py")
        # The interpreter by its store path: the new system may no longer have /run/current-system/sw/bin/python3.
        python = os.path.realpath(sys.executable)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/run/current-system/sw/bin", "LANG": "C.UTF-8"}
        # NIXOS_NO_CHECK=1 in the task's environment skips the pre-switch checks, as with nixos-rebuild.
        for name in ("LOCALE_ARCHIVE", "NIXOS_NO_CHECK"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        lock.hand_over(status_dir, params["system"])
        try:
            if systemd:
                # A unit of its own survives the SSH session's scope and logind's cleanup of it.
                argv = ["systemd-run", "--unit=ansinix-switch-" + run_id, "--description=ansinix.nixos switch to " + params["system"],
                        "--collect", "--no-ask-password", "--quiet", "--service-type=exec"]
                argv += ["--setenv=%s=%s" % item for item in sorted(env.items())]
                argv += [python, runner, status_dir]
                # The switch's functions run without an AnsibleModule (no run_command), here and in unit tests.
                # pylint: disable-next=ansible-bad-function
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise NixError("could not start the activation with systemd-run (exit %d): %s"
                                   % (proc.returncode, proc.stderr.strip() or proc.stdout.strip()))
            else:
                # The runner forks twice and leaves this process's session: the connection's end
                # (SIGHUP, the session's process group going away) does not reach it.
                # run_command cannot start a new session.
                # pylint: disable-next=ansible-bad-function
                rc = subprocess.call([python, runner, "--detach", status_dir], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", env=env,
                                     start_new_session=True)
                if rc != 0:
                    raise NixError("could not start the activation runner %s (exit %d)" % (runner, rc))
        except (OSError, NixError) as exc:
            lock.release(clear=True)
            raise NixError(exc.msg if isinstance(exc, NixError) else "could not start the activation runner: %s" % exc)
        lock.release()
        return cls(status_dir)

    def read(self, name):
        try:
            with open(os.path.join(self.status_dir, name), errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def status(self):
        return read_json(os.path.join(self.status_dir, "status.json")) or {}

    def wait(self, timeout, states=("awaiting-confirmation", "finished"), poll=0.1):
        """The runner's status once it reaches one of states; raises NixError if it dies or takes too long."""
        started = time.monotonic()
        while True:
            status = self.status()
            if status.get("state") in states:
                return status
            elapsed = time.monotonic() - started
            if status.get("pid"):
                if not process_alive(status["pid"], status.get("pid_start_time")):
                    status = self.status()  # it may have finished between the two reads
                    if status.get("state") in states:
                        return status
                    raise NixError("the activation runner died while %s; see %s on the host" % (status.get("state"), status.get("log")))
            elif elapsed > START_TIMEOUT:
                raise NixError("the activation runner did not start within %ss; see %s on the host" % (START_TIMEOUT, self.status_dir))
            if elapsed > timeout:
                raise NixError("the activation did not finish within %ss (it is %s); it goes on on the host, see %s"
                               % (timeout, status.get("state"), status.get("log")), status=status)
            # Most activations take a second or two: look five times as often in the first five seconds.
            time.sleep(poll / 5 if elapsed < 5 else poll)

    def output(self):
        return self.read("activation.out") or ""

    def params(self):
        return read_json(os.path.join(self.status_dir, "params.json")) or {}

    def confirm_request(self):
        params = self.params()
        return {"status_dir": self.status_dir, "token": params.get("token"), "timeout": params.get("confirm_timeout"),
                "connection_id": params.get("connection_id")}


def run_dirs(state_dir=STATE_DIR):
    try:
        return sorted(d for d in os.listdir(state_dir) if d.startswith("switch-"))
    except OSError:
        return []


def last_run(state_dir=STATE_DIR):
    """What the most recent runner on this host did (so a run after a dropped connection learns the truth)."""
    dirs = run_dirs(state_dir)
    if not dirs:
        return None
    return run_summary(read_json(os.path.join(state_dir, dirs[-1], "status.json")) or {},
                       read_json(os.path.join(state_dir, dirs[-1], "params.json")) or {})


def run_summary(status, params):
    """last_activation: a runner's status and parameters, as the module reports them."""
    keys = ("state", "outcome", "rc", "rolled_back", "rollback_reason", "confirmed", "previous_system", "current_system",
            "started", "finished", "log", "error")
    summary = dict((k, status.get(k)) for k in keys)
    summary.update(system=params.get("system"), action=params.get("action"))
    if summary["state"] not in (None, "finished") and status.get("pid") and not process_alive(status["pid"], status.get("pid_start_time")):
        # A runner that was killed: its record stops where it died.
        summary["error"] = summary["error"] or "the runner (pid %s) died while %s" % (status["pid"], summary["state"])
    return json.loads(json.dumps(summary))


def remove_old_runs(state_dir=STATE_DIR, log_dir=LOG_DIR, keep=KEEP_RUNS):
    """Forget all but the newest runs: finished status directories and their logs."""
    for name in run_dirs(state_dir)[:-keep]:
        path = os.path.join(state_dir, name)
        if (read_json(os.path.join(path, "status.json")) or {}).get("state") == "finished":
            shutil.rmtree(path, ignore_errors=True)
    try:
        logs = sorted(f for f in os.listdir(log_dir) if f.startswith("switch-") and f.endswith(".log"))
    except OSError:
        return
    for name in logs[:-keep]:
        try:
            os.unlink(os.path.join(log_dir, name))
        except OSError:
            pass
