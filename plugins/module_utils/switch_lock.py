# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""NixOS's own switch lock, seen from nixos_switch: who holds it, waiting for them, and a lock left behind.

Every switch-to-configuration takes an flock on /run/nixos/switch-to-configuration.lock, and the one of
current NixOS (switch-to-configuration-ng) gives up at once when somebody else holds it. A switch that
runs already (a nixos-rebuild, another tool) is therefore waited for here, before the runner changes
anything, and named when the wait is over. An flock dies with its holder, so a lock "left by a dead
process" is one that the commands of that process inherited and keep, or one whose holder is stopped:
that is said, and never broken.
"""

from __future__ import annotations

import fcntl
import os
import time

from ansible_collections.ansinix.nixos.plugins.module_utils.activation_runner import SWITCH_LOCK, flock_takers, try_lock
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError


def clock_ticks():
    return os.sysconf("SC_CLK_TCK")


def process_info(pid):
    """{pid, argv, state, ppid, seconds} of a live process from /proc, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            # One line: arguments may hold newlines.
            argv = " ".join(f.read().decode(errors="replace").replace("\0", " ").split())
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError):
        return None
    # The command name may hold spaces and parentheses: the fields after it start at the last ')'.
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None  # exited: its descriptors, and its locks, are gone
    return {"pid": pid, "argv": argv or "[%s]" % comm, "state": fields[0], "ppid": int(fields[1]),
            "seconds": max(0, int(uptime - int(fields[19]) / float(clock_ticks())))}


def openers(path, me=None):
    """Pids of the processes that have path open, as fuser finds them (this process left out)."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    me = os.getpid() if me is None else me
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = "/proc/%s/fd" % entry
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.append(int(entry))
                break
    return sorted(found)


def describe(info):
    return "pid %d (%s, for %ds)" % (info["pid"], shorten(info["argv"]), info["seconds"])


def shorten(text, limit=200):
    return text if len(text) <= limit else text[:limit - 3] + "..."


def locked(path):
    """Whether somebody holds an flock on path, found by trying to take it (and letting go at once)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def inspect_lock(path=SWITCH_LOCK):
    """None when nobody holds the lock; else {holders: [process info], stale: why it is stale, or None}."""
    takers = flock_takers(path)
    # In a pid namespace other than the first, /proc/locks leaves out a lock whose taker has exited. Only
    # then, and only while a process has the file open, is the lock tried: a switch starting in that
    # instant would fail.
    if not takers and not (openers(path) and locked(path)):
        return None
    taker_infos = [info for info in (process_info(pid) for pid in takers) if info]
    holders = [info for info in (process_info(pid) for pid in openers(path)) if info]
    live_takers = [info for info in taker_infos if info["pid"] in [h["pid"] for h in holders]] or taker_infos
    if live_takers:
        holders = live_takers
    stopped = [h for h in holders if h["state"] in ("T", "t")]
    if stopped:
        return {"holders": holders, "stale": "%s is stopped (state %s) and will not finish by itself. Continue it "
                                             "(kill -CONT %d) or end it, then run again"
                                             % (describe(stopped[0]), stopped[0]["state"], stopped[0]["pid"])}
    # A shell-run switch takes the lock through flock(1), which exits at once; its own process keeps it.
    if not live_takers and holders and not any("switch-to-configuration" in h["argv"] for h in holders):
        taker = "pid %s, which took it," % takers[0] if takers else "the process that took it"
        return {"holders": holders, "stale": "%s has exited, and %s inherited it. It is left over from a switch that "
                                             "ended; if that process is not needed, end it (kill %d), then run again"
                                             % (taker, describe(holders[0]), holders[0]["pid"])}
    return {"holders": holders, "stale": None}


def holders_text(lock):
    if not lock["holders"]:
        return "a process this host's /proc does not show"
    return ", ".join(describe(h) for h in lock["holders"])


def wait_for_other_switch(deadline, timeout, path=SWITCH_LOCK, poll=0.2):
    """Return once no other switch holds the NixOS switch lock; NixError when it is stale or past deadline."""
    while True:
        lock = inspect_lock(path)
        if lock is None:
            return
        if lock["stale"]:
            raise NixError("the NixOS switch lock %s looks stale: %s. Nothing was changed" % (path, lock["stale"]))
        if time.monotonic() >= deadline:
            raise NixError("another switch is running on this host: %s holds %s. Wait for it to finish, or raise "
                           "lock_timeout (now %ss)" % (holders_text(lock), path, timeout))
        time.sleep(poll)
