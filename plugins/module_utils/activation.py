# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running an activation on the host, detached from the connection that asked for it.

The activation, the automatic rollback when it fails, and the magic rollback when no confirmation
arrives in time are all done by one runner script on the host, so they complete even if the SSH
connection (or the controller) goes away mid-switch. The runner holds the host's deploy lock until
it is done, so a second deploy waits for the first, confirmation window included.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import time
import uuid

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError

STATE_DIR = "/run/ansinix"
LOCK_FILE = STATE_DIR + "/deploy.lock"
LOG_DIR = "/var/log/ansinix"
SYSTEMD_UNIT = "ansinix-switch"

# $1 status dir. Everything else comes from $1/params (shell assignments written by the module).
RUNNER = r"""#!/bin/sh
# Written by ansinix.nixos.nixos_switch: activates a system and rolls it back when it fails or when
# no confirmation arrives in time. Runs detached from the SSH session that started it.
status=$1
. "$status/params"
exec >>"$status/runner.log" 2>&1

rollback() {
  echo "$(date -u +%FT%TZ) rolling back: $1"
  if [ -n "$previous_generation" ]; then
    nix-env --profile "$profile" --switch-generation "$previous_generation"
  fi
  if [ -n "$previous_system" ] && [ "$action" != boot ]; then
    "$previous_system/bin/switch-to-configuration" "$rollback_action" >"$status/rollback.out" 2>&1
    echo "$?" >"$status/rollback.rc"
  elif [ -n "$previous_system" ]; then
    "$previous_system/bin/switch-to-configuration" boot >"$status/rollback.out" 2>&1
    echo "$?" >"$status/rollback.rc"
  fi
  if [ -n "$new_generation" ] && [ "$new_generation" != "$previous_generation" ] && [ "$delete_new_generation" = 1 ]; then
    nix-env --profile "$profile" --delete-generations "$new_generation"
  fi
  echo "$1" >"$status/outcome"
}

NIXOS_INSTALL_BOOTLOADER=$install_bootloader "$activate/bin/switch-to-configuration" "$action" >"$status/activation.out" 2>&1
rc=$?
cp "$status/activation.out" "$log"
echo "$rc" >"$status/rc"
if [ "$rc" -ne 0 ]; then
  if [ "$rollback_on_failure" = 1 ] && [ "$action" != dry-activate ]; then
    rollback failed
  else
    echo failed >"$status/outcome"
  fi
  exit 0
fi
if [ "$confirm_timeout" -gt 0 ]; then
  echo awaiting-confirmation >"$status/state"
  # Poll often: the controller waits for this loop to see its confirmation before it moves on.
  deadline=$(( $(date +%s) + confirm_timeout ))
  while [ ! -e "$status/confirmed" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 0.1
  done
  if [ ! -e "$status/confirmed" ]; then
    rollback unconfirmed
    exit 0
  fi
fi
echo "done" >"$status/outcome"
"""


def systemd_running():
    return os.path.isdir("/run/systemd/system")


class DeployLock:
    """The host's deploy lock: an flock that dies with its holder, so a crash never blocks."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.fd = None

    def acquire(self):
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        self.fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    raise NixError(
                        "another deploy is running on this host (%s); it holds %s. Wait for it, or raise "
                        "lock_timeout (now %ss)" % (holder or "holder unknown", LOCK_FILE, self.timeout)
                    )
                time.sleep(0.2)
        # A runner of an earlier deploy started by systemd may still be busy (it takes the lock too,
        # but only once it starts); wait for it.
        while systemd_running() and unit_active() and time.monotonic() < deadline:
            time.sleep(0.5)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, ("pid %d since %s" % (os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))).encode())

    def holder(self):
        try:
            with open(LOCK_FILE) as f:
                return f.read().strip()
        except OSError:
            return None

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def unit_active():
    return subprocess.call(["systemctl", "is-active", "--quiet", SYSTEMD_UNIT]) == 0


def shell_quote(value):
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


class Activation:
    """One activation run by the detached runner; its files live in a status directory."""

    def __init__(self, status_dir):
        self.status_dir = status_dir

    @classmethod
    def start(cls, lock, params):
        """Write the runner and its parameters, and start it detached, handing it the lock."""
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        status_dir = os.path.join(STATE_DIR, "switch-" + run_id)
        os.makedirs(status_dir, mode=0o700)
        os.makedirs(LOG_DIR, mode=0o750, exist_ok=True)
        params = dict(params, log=os.path.join(LOG_DIR, "switch-%s.log" % run_id))
        with open(os.path.join(status_dir, "params"), "w") as f:
            for key, value in sorted(params.items()):
                f.write("%s=%s\n" % (key, shell_quote("" if value is None else value)))
        runner = os.path.join(status_dir, "runner.sh")
        with open(runner, "w") as f:
            f.write(RUNNER)
        os.chmod(runner, 0o700)
        env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/run/current-system/sw/bin:/usr/bin:/bin")
        if systemd_running():
            # Its own unit: survives the SSH session's scope being stopped; the fixed name keeps a
            # second runner from starting while one is busy.
            argv = ["systemd-run", "--unit=" + SYSTEMD_UNIT, "--collect", "--quiet", "--service-type=exec",
                    "--setenv=PATH=" + env["PATH"], "flock", LOCK_FILE, runner, status_dir]
            lock.release()
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise NixError("could not start the activation with systemd-run: %s" % proc.stderr.strip())
        else:
            # A new session, not a child of this connection; it inherits the lock and holds it to the end.
            with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
                subprocess.Popen([runner, status_dir], stdin=devnull_in, stdout=devnull_out, stderr=devnull_out,
                                 start_new_session=True, pass_fds=(lock.fd,), env=env, cwd="/")
            lock.release()
        return cls(status_dir)

    def read(self, name):
        try:
            with open(os.path.join(self.status_dir, name)) as f:
                return f.read()
        except OSError:
            return None

    def wait_for(self, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.read(name)
            if value is not None and value.endswith("\n"):
                return value.strip()
            time.sleep(0.1)
        return None

    def wait_activation(self, timeout):
        """Exit code of switch-to-configuration, or None if it is still running after timeout."""
        rc = self.wait_for("rc", timeout)
        return int(rc) if rc is not None else None

    def wait_awaiting_confirmation_or_outcome(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.read("outcome"):
                return "outcome"
            if self.read("state") == "awaiting-confirmation\n":
                return "awaiting-confirmation"
            time.sleep(0.1)
        return None

    def output(self):
        return self.read("activation.out") or ""

    def summary(self):
        return {
            "status_dir": self.status_dir,
            "outcome": (self.read("outcome") or "").strip() or None,
            "rollback_output": self.read("rollback.out"),
        }


def confirm(status_dir):
    """Called over a new connection: tell the runner the new system still lets us in."""
    with open(os.path.join(status_dir, "confirmed"), "w") as f:
        f.write("confirmed\n")


def remove_old_status_dirs(keep=10):
    if not os.path.isdir(STATE_DIR):
        return
    dirs = sorted(d for d in os.listdir(STATE_DIR) if d.startswith("switch-"))
    for d in dirs[:-keep]:
        path = os.path.join(STATE_DIR, d)
        if os.path.exists(os.path.join(path, "outcome")):
            shutil.rmtree(path, ignore_errors=True)


def last_status():
    """What the most recent runner on this host recorded (so a dropped connection learns the truth)."""
    if not os.path.isdir(STATE_DIR):
        return None
    dirs = sorted(d for d in os.listdir(STATE_DIR) if d.startswith("switch-"))
    if not dirs:
        return None
    act = Activation(os.path.join(STATE_DIR, dirs[-1]))
    info = act.summary()
    rc = act.read("rc")
    info["rc"] = int(rc) if rc and rc.strip().isdigit() else None
    return json.loads(json.dumps(info))
