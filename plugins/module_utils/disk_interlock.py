# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""The disk interlock: what the disks hold and whether anything uses them, before anything is wiped.

It fails closed. A device counts as empty only when blkid's probe says "nothing found" (exit 2) and wipefs
finds no signature either. A probe that fails or cannot tell refuses. A partition whose contents blkid cannot
name, and a partition in the table that the kernel has not listed, hold data. A device is in use when it is
mounted or swapped on, when a device-mapper or md device is stacked on it (walking holders up), when it is a
device of a mounted btrfs or of an imported ZFS pool, or when the kernel will not let anyone open it
exclusively. The pure functions here classify what the tools and sysfs said; HostProbe reads them.
"""

from __future__ import annotations

import errno
import json
import os

# blkid's exit codes (blkid(8)): 2 is "nothing found"; 4 usage or I/O error; 8 ambivalent probe result.
BLKID_NOTHING = 2
BLKID_AMBIVALENT = 8
# Signatures of a partition table, which wipefs also lists; the table is checked partition by partition.
TABLE_SIGNATURES = {"gpt", "PMBR", "dos", "atari", "bsd", "mac", "sgi", "sun", "aix", "ultrix"}
INSTEAD = "Nothing was changed."


class DiskError(Exception):
    """The disks cannot be laid out as asked; the message says what to do."""


def _words(device, rc, out, err):
    """A tool's own last line of complaint, without its 'tool: /dev/x:' prefix."""
    lines = (err or out or "").strip().splitlines()
    text = lines[-1].strip() if lines else "exit %d, no output" % rc
    for prefix in ("blkid: ", "wipefs: ", "partx: ", "error: ", device + ": "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


def parse_blkid(device, rc, out, err):
    """blkid -p -o export's answer as (rc, {key: value}, its words); DiskError when it could not probe."""
    if rc == 0:
        return rc, dict(line.split("=", 1) for line in out.splitlines() if "=" in line), ""
    if rc in (BLKID_NOTHING, BLKID_AMBIVALENT):
        return rc, {}, _words(device, rc, out, err)
    raise DiskError("cannot tell what %s holds: blkid -p failed (exit %d): %s. %s Check the disk (dmesg, smartctl) "
                    "and run again" % (device, rc, _words(device, rc, out, err), INSTEAD))


def parse_wipefs(device, rc, out, err):
    """The signature types wipefs --no-act --json finds on a device; DiskError when it could not look."""
    try:
        if rc != 0:
            raise ValueError(_words(device, rc, out, err))
        found = json.loads(out) if out.strip() else {"signatures": []}
        return [str(sig.get("type")) for sig in found.get("signatures", [])]
    except (ValueError, AttributeError, TypeError) as exc:
        raise DiskError("cannot tell what %s holds: wipefs --no-act failed (exit %d): %s. %s" % (device, rc, exc, INSTEAD))


def holds(device, blkid, signatures):
    """What device holds, as a phrase for a message, or None when it holds nothing.

    blkid is parse_blkid's (rc, info, words); signatures are wipefs's types, a second opinion."""
    rc, info, words = blkid
    if rc == BLKID_AMBIVALENT:
        if not signatures:
            raise DiskError("cannot tell what %s holds: blkid -p says %s, and wipefs finds no signature. %s Look at it "
                            "with wipefs %s" % (device, words, INSTEAD, device))
        return "several signatures (%s; blkid -p: %s)" % (", ".join(sorted(set(signatures))), words)
    if info.get("TYPE"):
        label = " labelled %s" % info["LABEL"] if info.get("LABEL") else ""
        return "%s%s" % (info["TYPE"], label)
    if info.get("PART_ENTRY_SCHEME"):
        # A partition blkid cannot name: raw data, plain dm-crypt, a database's own format.
        return "data blkid cannot name (%s partition %s of type %s)" % (
            info["PART_ENTRY_SCHEME"], info.get("PART_ENTRY_NUMBER", "?"), info.get("PART_ENTRY_TYPE", "?"))
    other = sorted(set(signatures) - (TABLE_SIGNATURES if info.get("PTTYPE") else set()))
    if other:
        return "signatures %s that wipefs finds" % ", ".join(other)
    return None


def unlisted_partitions(table, listed):
    """Numbers of the partitions in the table (partx's) that the kernel has not listed."""
    return sorted(set(table) - set(listed))


def lvm_volume_group(dm_name):
    """The volume group of an LVM device-mapper name: 'vg-lv' -> 'vg', 'my--vg-lv' -> 'my-vg'."""
    index = 0
    while index < len(dm_name):
        if dm_name[index] == "-":
            if dm_name[index + 1:index + 2] == "-":
                index += 2
                continue
            return dm_name[:index].replace("--", "-")
        index += 1
    return dm_name.replace("--", "-")


def upper_device(name, dm_name=None, dm_uuid=None, md_state=None):
    """(what it is, the command that frees it) of a device stacked on a disk."""
    if dm_name is not None:
        if (dm_uuid or "").startswith("LVM-"):
            return dm_name, "vgchange -an %s" % lvm_volume_group(dm_name)
        if (dm_uuid or "").startswith("CRYPT-"):
            return dm_name, "cryptsetup close %s" % dm_name
        return dm_name, "dmsetup remove %s" % dm_name
    if md_state is not None:
        return "md array /dev/%s, %s" % (name, md_state), "mdadm --stop /dev/%s" % name
    return name, None


def in_use_message(findings):
    """One line from [(disk, chain text, [commands that free it])]: what uses which disk, how to free it."""
    parts, frees = [], []
    for disk, chain, commands in findings:
        parts.append("%s is in use: %s" % (disk, chain))
        frees += [c for c in commands if c not in frees]
    how = "free it first (%s) and run again" % "; ".join(frees) if frees else "find what holds it (lsblk, findmnt) and free it"
    return "%s. %s Wiping does not override this: %s" % ("; ".join(parts), INSTEAD, how)


def refusal_message(disks, found):
    return ("refusing to wipe %s: %s. %s If its data may go, set wipe=true (the roles' nixos_wipe_disks: true)"
            % (", ".join(disks), "; ".join("%s holds %s" % f for f in found), INSTEAD))


# -- reading the host ------------------------------------------------------------------------------


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _rdev(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)) if st.st_rdev else None


def _unescape(text):
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


class HostProbe:
    """Runs blkid, wipefs and partx through run(argv) -> (rc, out, err) and reads /sys and /proc."""

    def __init__(self, run, sysfs="/sys", proc="/proc", dev="/dev"):
        self.run = run
        self.sysfs = sysfs
        self.proc = proc
        self.dev = dev
        self._mounts = None
        self._blkid = {}

    def blkid(self, device):
        """parse_blkid of a device; a device that does not exist holds nothing."""
        if not os.path.exists(device):
            return BLKID_NOTHING, {}, "no such device"
        if device not in self._blkid:
            self._blkid[device] = parse_blkid(device, *self.run(["blkid", "-p", "-o", "export", device]))
        return self._blkid[device]

    def holds(self, device):
        blkid = self.blkid(device)
        return holds(device, blkid, parse_wipefs(device, *self.run(["wipefs", "--no-act", "--json", device])))

    def partitions(self, disk):
        """The kernel's names of the disk's partitions (sda1, loop3p2, ...)."""
        name = os.path.basename(os.path.realpath(disk))
        try:
            return sorted((p for p in os.listdir(os.path.join(self.sysfs, "block", name)) if p.startswith(name)),
                          key=lambda p: (len(p), p))
        except OSError:
            raise DiskError("%s is not a disk on this host (no /sys/block/%s); see lsblk for the disks it has" % (disk, name))

    def unlisted(self, disk, listed_names):
        """Partitions in the disk's table that the kernel has not listed (it reads no such table, or was not told)."""
        rc, out, err = self.run(["partx", "--raw", "--noheadings", "-o", "NR", disk])
        if rc != 0:
            raise DiskError("cannot read the partition table of %s: partx failed (exit %d): %s. %s"
                            % (disk, rc, _words(disk, rc, out, err), INSTEAD))
        listed = []
        for name in listed_names:
            number = _read(os.path.join(self.sysfs, "class", "block", name, "partition"))
            if number and number.isdigit():
                listed.append(int(number))
        return unlisted_partitions([int(n) for n in out.split() if n.isdigit()], listed)

    def data(self, disks):
        """[(device, what it holds)] of every disk, partition and unlisted partition that holds something."""
        found = []
        for disk in disks:
            parts = self.partitions(disk)
            for device in [disk] + [os.path.join(self.dev, p) for p in parts]:
                if not os.path.exists(device):
                    raise DiskError("cannot tell what %s holds: the kernel lists it but there is no device node %s "
                                    "(no udev?). %s Create it (mknod, see /proc/partitions) and run again" % (device, device, INSTEAD))
                what = self.holds(device)
                if what:
                    found.append((device, what))
            if self.blkid(disk)[1].get("PTTYPE"):
                for number in self.unlisted(disk, parts):
                    found.append((disk, "partition %d in its partition table, which the kernel has not listed "
                                        "(its contents cannot be checked)" % number))
        return found

    # -- in use ------------------------------------------------------------------------------------

    def mounts(self):
        """{device number 'major:minor': [mount points]} from mountinfo, and swaps as 'swap'."""
        if self._mounts is None:
            found = {}
            for line in (_read(os.path.join(self.proc, "self", "mountinfo")) or "").splitlines():
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                tail = line.split(" - ", 1)[1].split()
                numbers = {fields[2]}
                if len(tail) > 1 and tail[1].startswith("/dev/"):
                    numbers.add(_rdev(tail[1]))
                for number in numbers - {None}:
                    found.setdefault(number, []).append(_unescape(fields[4]))
            for line in (_read(os.path.join(self.proc, "swaps")) or "").splitlines()[1:]:
                number = _rdev(_unescape(line.split()[0]))
                if number:
                    found.setdefault(number, []).append("swap")
            self._mounts = found
        return self._mounts

    def _used_as(self, name):
        """'mounted on /x' or 'used as swap' for a device by its kernel name, or ''."""
        places = self.mounts().get(_read(os.path.join(self.sysfs, "class", "block", name, "dev")), [])
        points = [p for p in places if p != "swap"]
        uses = (["mounted on %s" % ", ".join(points)] if points else []) + (["used as swap"] if "swap" in places else [])
        return ", ".join(uses)

    def _frees_for(self, name):
        """The commands that stop what _used_as found."""
        places = self.mounts().get(_read(os.path.join(self.sysfs, "class", "block", name, "dev")), [])
        return ["umount %s" % p for p in places if p != "swap"] + (["swapoff /dev/%s" % name] if "swap" in places else [])

    def _upper(self, name):
        base = os.path.join(self.sysfs, "class", "block", name)
        if os.path.isdir(os.path.join(base, "dm")):
            return upper_device(name, dm_name=_read(os.path.join(base, "dm", "name")) or name,
                                dm_uuid=_read(os.path.join(base, "dm", "uuid")))
        if os.path.isdir(os.path.join(base, "md")):
            return upper_device(name, md_state=_read(os.path.join(base, "md", "array_state")) or "active")
        return upper_device(name)

    def holder_chains(self, name):
        """Every path up the holders from a device: [[holder, its holder, ...], ...]."""
        try:
            holders = sorted(os.listdir(os.path.join(self.sysfs, "class", "block", name, "holders")))
        except OSError:
            return []
        chains = []
        for holder in holders:
            chains += [[holder] + up for up in (self.holder_chains(holder) or [[]])]
        return chains

    def exclusive_busy(self, device):
        """True when the kernel refuses an exclusive open: something claimed the device (a mount, swap, a holder)."""
        try:
            fd = os.open(device, os.O_RDONLY | os.O_EXCL | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            return exc.errno == errno.EBUSY
        os.close(fd)
        return False

    def idle_array(self, chain):
        """An md array stacked directly on a disk that nothing uses (one the rescue system assembled)."""
        name = chain[0]
        return (len(chain) == 1 and os.path.isdir(os.path.join(self.sysfs, "class", "block", name, "md"))
                and not self._used_as(name) and os.path.exists(os.path.join(self.dev, name))
                and not self.exclusive_busy(os.path.join(self.dev, name)))

    def _chain_finding(self, name, chain):
        """(chain text, commands that free it) of one path up the holders of a device."""
        steps, frees = [name], []
        for upper in chain:
            what, free = self._upper(upper)
            use = self._used_as(upper)
            steps.append("%s (%s)" % (upper, ", ".join([what] + ([use] if use else [])) if what != upper or use else upper))
            frees = self._frees_for(upper) + ([free] if free else []) + frees
        return " -> ".join(steps), frees

    def _member_finding(self, name, info):
        """A device of a mounted btrfs or an imported ZFS pool, whose mount does not name this device."""
        if info.get("TYPE") == "btrfs" and info.get("UUID"):
            devices = os.path.join(self.sysfs, "fs", "btrfs", info["UUID"], "devices")
            if os.path.isdir(devices):
                members = sorted(os.listdir(devices))
                points = sorted({p for m in members for p in self.mounts().get(
                    _read(os.path.join(self.sysfs, "class", "block", m, "dev")), []) if p != "swap"})
                where = "mounted on %s" % ", ".join(points) if points else "mounted"
                fs = "btrfs %s" % (info.get("LABEL") or info["UUID"])
                return ("%s (a device of %s on %s, %s)" % (name, fs, ", ".join(members), where),
                        ["umount %s" % p for p in points])
        if info.get("TYPE") == "zfs_member" and info.get("LABEL"):
            if os.path.isdir(os.path.join(self.proc, "spl", "kstat", "zfs", info["LABEL"])):
                return ("%s (a vdev of the imported ZFS pool %s)" % (name, info["LABEL"]), ["zpool export %s" % info["LABEL"]])
        return None

    def in_use(self, disks):
        """([(disk, chain text, commands that free it)], [idle md arrays to stop before wiping])."""
        findings, idle = [], []
        for disk in disks:
            names = [os.path.basename(os.path.realpath(disk))] + self.partitions(disk)
            explained = []
            for name in names:
                device = os.path.join(self.dev, name)
                use = self._used_as(name)
                if use:
                    explained.append(("%s (%s)" % (name, use), self._frees_for(name)))
                for chain in self.holder_chains(name):
                    if self.idle_array(chain):
                        idle.append(os.path.join(self.dev, chain[0]))
                    else:
                        explained.append(self._chain_finding(name, chain))
                if not use and not self.holder_chains(name) and os.path.exists(device):
                    rc, info, _words_ = self.blkid(device)
                    member = self._member_finding(name, info) if rc == 0 else None
                    if member:
                        explained.append(member)
            if not explained:
                # The kernel's word, for what the above cannot see (a mount in another mount namespace, a driver's
                # claim). A disk is busy whenever one of its partitions is: name the partition, or the disk alone.
                chained = [n for n in names if self.holder_chains(n)]
                busy = [n for n in names if not self.holder_chains(n) and self.exclusive_busy(os.path.join(self.dev, n))]
                busy = [n for n in busy if n != names[0]] or ([] if chained else busy)
                if busy:
                    explained.append(("%s (the kernel holds %s: mounted in another mount namespace, or claimed by a driver)"
                                      % (", ".join(busy), "them" if len(busy) > 1 else "it"), []))
            findings += [(disk, chain, frees) for chain, frees in explained]
        return findings, sorted(set(idle))


def check(probe, disks, wipe):
    """The interlock: DiskError when a disk is in use (even with wipe) or holds data (without wipe).

    Returns ([(device, what it holds)], [idle md arrays to stop first])."""
    findings, idle = probe.in_use(disks)
    if findings:
        raise DiskError(in_use_message(findings))
    found = probe.data(disks)
    if found and not wipe:
        raise DiskError(refusal_message(disks, found))
    return found, idle
