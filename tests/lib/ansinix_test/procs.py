"""Processes of the controller as a tree: what a test or the benchmark started, and everything it started.

Ansible's workers start sessions of their own, so a process group does not reach them; the parent links
in /proc do.
"""
import contextlib
import os
import signal
import threading


def descendants(pid):
    """pid and every process below it, parents first."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % entry, encoding="ascii") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def kill_tree(pid):
    """SIGKILL a process and all its descendants."""
    for member in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _kib_field(path, name):
    """The value in bytes of a "Name:   123 kB" line of a /proc file (0 once the process is gone)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss(pid):
    """Resident memory of a process in bytes (0 once it is gone)."""
    return _kib_field("/proc/%d/status" % pid, "VmRSS")


def pss(pid):
    """Proportional set size of a process in bytes: its private pages plus its share of pages it shares (0 once gone).

    Summed over a tree it counts a page that a forked worker shares with its parent once, where summed RSS counts it
    in every process that maps it.
    """
    return _kib_field("/proc/%d/smaps_rollup" % pid, "Pss")


class TreeMemory:
    """Peak memory of a process and all its descendants, sampled every 20 ms: summed RSS (peak) and summed PSS (peak_pss).

        with TreeMemory(proc.pid) as memory:
            proc.wait()
        memory.peak, memory.peak_pss
    """

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            tree = descendants(self.pid)
            self.peak = max(self.peak, sum(rss(p) for p in tree))
            self.peak_pss = max(self.peak_pss, sum(pss(p) for p in tree))
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
