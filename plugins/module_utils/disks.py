# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""A declarative disk layout for installing NixOS: GPT partitions, an ESP or a BIOS boot partition,
RAID1 (mdadm, or btrfs's own), file systems, labels and mounts under an install root.

The plan is made from the layout alone (pure functions below, unit tested); the module checks the
disks with the interlock of disk_interlock.py (never one in use; one that holds data only when told to
wipe it), and runs the plan. A script
(disko's, built from the configuration) can lay the disks out instead, behind the same interlock.
"""

from __future__ import annotations

import os
import re
import time

from ansible_collections.ansinix.nixos.plugins.module_utils.disk_interlock import DiskError, HostProbe, check

FILESYSTEMS = ("ext4", "xfs", "btrfs", "vfat", "swap", "none")
# Longest label each file system takes (vfat labels are also upper-cased by mkfs.vfat).
LABEL_LIMITS = {"ext4": 16, "xfs": 12, "btrfs": 255, "vfat": 11, "swap": 15, "none": 36}
TYPE_CODES = {"bios": "ef02", "esp": "ef00", "linux": "8300", "swap": "8200", "raid": "fd00"}
BIOS_BOOT_MIB = 1
LABEL_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# Names of the boot partitions: BIOS, and ESP (one disk) or ESP0, ESP1, ... (one per disk, as its FAT label too).
RESERVED_LABEL_RE = re.compile(r"^(BIOS|ESP[0-9]*)$", re.I)
SIZE_RE = re.compile(r"^(\d+)\s*([MGT]i?B?|[MGT])?$", re.I)


class LayoutError(DiskError):
    """A layout that cannot be applied; the message says what to change."""


def parse_size(value, what):
    """MiB of a size like 512M, 8G, 1T, or None for the rest of the disk (100%, rest)."""
    text = str(value).strip()
    if text.lower() in ("100%", "rest"):
        return None
    match = SIZE_RE.match(text)
    if not match:
        raise LayoutError("%s: size %r is not a size like 512M, 8G or 1T, or 100%% for the rest of the disk" % (what, value))
    number, unit = int(match.group(1)), (match.group(2) or "M")[0].upper()
    mib = number * {"M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    if mib < 1:
        raise LayoutError("%s: size %r is too small" % (what, value))
    return mib


def partition_path(disk, number):
    """/dev/sda + 1 -> /dev/sda1; /dev/nvme0n1 + 1 -> /dev/nvme0n1p1 (a name ending in a digit takes a p)."""
    return "%s%s%d" % (disk, "p" if disk[-1:].isdigit() else "", number)


def _disks_and_boot(params, efi_firmware):
    disks = list(params.get("disks") or [])
    if not disks:
        raise LayoutError("disks is empty: list the whole disks to lay out, e.g. [/dev/nvme0n1, /dev/nvme1n1]")
    for disk in disks:
        if not str(disk).startswith("/dev/"):
            raise LayoutError("disks: %r is not a device path like /dev/sda" % (disk,))
    if len(set(disks)) != len(disks):
        raise LayoutError("disks: %s is listed twice" % next(d for d in disks if disks.count(d) > 1))
    boot = params.get("boot") or "auto"
    if boot == "auto":
        boot = "efi" if efi_firmware else "bios"
    return disks, boot


def normalize_script(params, efi_firmware):
    """The options of a layout made by a script: the disks it claims, how they boot, the command."""
    disks, boot = _disks_and_boot(params, efi_firmware)
    if params.get("partitions"):
        raise LayoutError("script and partitions are mutually exclusive: the script lays out the disks itself")
    args = params.get("script_args") or []
    return {"disks": disks, "boot": boot, "raid": "script", "script": [str(params["script"])] + [str(a) for a in args]}


def normalize(params, efi_firmware):
    """The module's options as a checked layout (a dict), or LayoutError naming what is wrong."""
    if params.get("script"):
        return normalize_script(params, efi_firmware)
    disks, boot = _disks_and_boot(params, efi_firmware)
    raid = params.get("raid") or "auto"
    if raid == "auto":
        raid = "mdadm" if len(disks) > 1 else "none"
    if raid != "none" and len(disks) < 2:
        raise LayoutError("raid=%s mirrors partitions across disks: give two disks or more, or raid=none" % raid)
    if raid == "none" and len(disks) > 1:
        raise LayoutError("%d disks and raid=none: every disk gets the same partitions, so say how to use them "
                          "(raid=mdadm or raid=btrfs), or list one disk" % len(disks))
    partitions = []
    labels = set()
    entries = params.get("partitions") or []
    if not entries:
        raise LayoutError("partitions is empty: give at least a root, e.g. [{label: root, size: 100%, fs: ext4, mount: /}]")
    for index, entry in enumerate(entries):
        what = "partitions[%d]" % index
        if not isinstance(entry, dict):
            raise LayoutError("%s must be a dictionary with label, size, fs and mount" % what)
        unknown = set(entry) - {"label", "size", "fs", "mount", "mount_options"}
        if unknown:
            raise LayoutError("%s: unknown key(s) %s; the keys are label, size, fs, mount, mount_options"
                              % (what, ", ".join(sorted(unknown))))
        label = str(entry.get("label") or "")
        fs = entry.get("fs", "ext4")
        if not LABEL_RE.match(label):
            raise LayoutError("%s: label %r must be letters, digits, - or _ (it names the partition and its file system)" % (what, label))
        if label in labels or RESERVED_LABEL_RE.match(label):
            raise LayoutError("%s: label %s is %s" % (what, label, "used twice" if label in labels else "reserved for the boot partition"))
        labels.add(label)
        if fs not in FILESYSTEMS:
            raise LayoutError("%s: fs %r is not one of %s" % (what, fs, ", ".join(FILESYSTEMS)))
        if len(label) > LABEL_LIMITS[fs]:
            raise LayoutError("%s: label %s is longer than %s takes (%d characters)" % (what, label, fs, LABEL_LIMITS[fs]))
        size = parse_size(entry.get("size", "100%"), what)
        if size is None and index != len(entries) - 1:
            raise LayoutError("%s: only the last partition can take the rest of the disk (100%%)" % what)
        mount = entry.get("mount")
        if mount is not None:
            mount = str(mount)
            if fs in ("swap", "none"):
                raise LayoutError("%s: a %s partition has no mount point; drop mount" % (what, fs))
            if not mount.startswith("/") or "/.." in mount or "//" in mount:
                raise LayoutError("%s: mount %r must be an absolute path like / or /srv" % (what, mount))
        if raid == "btrfs" and fs not in ("btrfs", "swap", "none"):
            raise LayoutError("%s: raid=btrfs mirrors btrfs file systems only; use fs=btrfs here, or raid=mdadm" % what)
        options = entry.get("mount_options") or []
        if not isinstance(options, list):
            raise LayoutError("%s: mount_options must be a list like [noatime]" % what)
        partitions.append({"label": label, "size_mib": size, "fs": fs, "mount": mount, "mount_options": [str(o) for o in options]})
    mounts = [p["mount"] for p in partitions if p["mount"]]
    if "/" not in mounts:
        raise LayoutError("no partition is mounted at /: give the root file system mount: /")
    if len(set(mounts)) != len(mounts):
        raise LayoutError("mount point %s is used twice" % next(m for m in mounts if mounts.count(m) > 1))
    esps = _esp_mounts(boot, len(disks))
    taken = [m for m in esps if m in mounts]
    if taken:
        raise LayoutError("boot=efi mounts %s at %s; drop the partition mounted at %s"
                          % ("the ESP" if len(disks) == 1 else "each disk's ESP", ", ".join(esps), ", ".join(taken)))
    return {
        "disks": disks, "boot": boot, "raid": raid, "partitions": partitions,
        "esp_mib": parse_size(params.get("esp_size") or "512M", "esp_size") if boot == "efi" else None,
    }


def _esp_mounts(boot, count):
    if boot != "efi":
        return []
    return ["/boot"] + ["/boot-fallback%s" % ("" if i == 1 else i) for i in range(1, count)]


def esp_mounts(layout):
    """Where each disk's ESP is mounted: /boot, then /boot-fallback, /boot-fallback2, ... (GRUB's mirroredBoots)."""
    return _esp_mounts(layout["boot"], len(layout["disks"]))


def esp_label(layout, index):
    """The ESP's partition name and FAT label on the disk at index: ESP with one disk; ESP0, ESP1, ... with
    several, so that each one can be mounted by its own name."""
    return "ESP" if len(layout["disks"]) == 1 else "ESP%d" % index


def _boot_partition(layout, index):
    if layout["boot"] == "efi":
        return {"label": esp_label(layout, index), "size_mib": layout["esp_mib"], "type": "esp"}
    if layout["boot"] == "bios":
        return {"label": "BIOS", "size_mib": BIOS_BOOT_MIB, "type": "bios"}
    return None


def partition_table(layout, index=0):
    """The GPT of the disk at index, in order: (number, partition name, size in MiB or None, type code).
    Every disk has the same, but for the name of its ESP."""
    table = []
    boot = _boot_partition(layout, index)
    if boot:
        table.append((boot["label"], boot["size_mib"], TYPE_CODES[boot["type"]]))
    for part in layout["partitions"]:
        if layout["raid"] == "mdadm" and part["fs"] != "none":
            code = TYPE_CODES["raid"]
        else:
            code = TYPE_CODES["swap"] if part["fs"] == "swap" else TYPE_CODES["linux"]
        table.append((part["label"], part["size_mib"], code))
    return [(number, name, size, code) for number, (name, size, code) in enumerate(table, start=1)]


def _numbers(layout):
    return {name: number for number, name, _size, _code in partition_table(layout)}


def volumes(layout):
    """Each partition of the layout as the device(s) its file system goes on.

    [{label, fs, mount, mount_options, devices (what mkfs gets), device (what mount gets), md (mdadm array or None)}]"""
    numbers = _numbers(layout)
    result = []
    for part in layout["partitions"]:
        members = [partition_path(disk, numbers[part["label"]]) for disk in layout["disks"]]
        md = None
        if layout["raid"] == "mdadm" and part["fs"] != "none":
            md = "/dev/md/%s" % part["label"]
            devices = [md]
        elif layout["raid"] == "btrfs" and part["fs"] == "btrfs":
            devices = members  # one file system over every disk's partition
        elif part["fs"] == "swap":
            devices = members  # with raid=btrfs: a swap partition on each disk
        else:
            devices = members[:1]
        result.append(dict(part, members=members, devices=devices, device=devices[0], md=md))
    return result


def esp_devices(layout):
    if layout["boot"] != "efi":
        return []
    return [partition_path(disk, 1) for disk in layout["disks"]]


def plan(layout, root, wipe_devices=(), stop_arrays=()):
    """The commands that lay the disks out from scratch and mount the result under root, in order."""
    steps = []
    for array in stop_arrays:
        steps.append(["mdadm", "--stop", array])
    for device in wipe_devices:
        steps.append(["wipefs", "--all", "--force", device])
    for index, disk in enumerate(layout["disks"]):
        argv = ["sgdisk", "--zap-all", disk]
        steps.append(argv)
        argv = ["sgdisk"]
        for number, name, size, code in partition_table(layout, index):
            argv += ["-n", "%d:0:%s" % (number, "+%dM" % size if size else "0"), "-t", "%d:%s" % (number, code),
                     "-c", "%d:%s" % (number, name)]
        steps.append(argv + [disk])
        # The kernel's view of the new table (partprobe's job; also where the kernel cannot read GPT itself).
        steps.append(["partx", "--update", disk])
    for vol in volumes(layout):
        if vol["md"]:
            steps.append(["mdadm", "--create", vol["md"], "--run", "--level=1",
                          "--raid-devices=%d" % len(vol["members"]), "--homehost=any", "--name=%s" % vol["label"]] + vol["members"])
        steps.extend(mkfs(vol))
    for index, device in enumerate(esp_devices(layout)):
        steps.append(["mkfs.vfat", "-F", "32", "-n", esp_label(layout, index), device])
    steps.extend(mount_steps(layout, root))
    return steps


def mkfs(vol):
    fs, label, devices = vol["fs"], vol["label"], vol["devices"]
    if fs == "ext4":
        return [["mkfs.ext4", "-q", "-F", "-L", label, devices[0]]]
    if fs == "xfs":
        return [["mkfs.xfs", "-q", "-f", "-L", label, devices[0]]]
    if fs == "btrfs":
        raid = ["-d", "raid1", "-m", "raid1"] if len(devices) > 1 else []
        return [["mkfs.btrfs", "-q", "-f", "-L", label] + raid + devices]
    if fs == "vfat":
        return [["mkfs.vfat", "-F", "32", "-n", label.upper(), devices[0]]]
    if fs == "swap":
        return [["mkswap", "-L", label if len(devices) == 1 else "%s%d" % (label, i), dev] for i, dev in enumerate(devices)]
    return []


def mount_points(layout):
    """(mount point, device, fs, options) under the installed system's root, parents first."""
    points = [(vol["mount"], vol["device"], vol["fs"], vol["mount_options"]) for vol in volumes(layout) if vol["mount"]]
    # With several ESPs, each is nofail: the system boots (from the other disk) with one disk gone.
    options = ["umask=0077"] + (["nofail"] if len(layout["disks"]) > 1 else [])
    points += [(mount, device, "vfat", options) for mount, device in zip(esp_mounts(layout), esp_devices(layout))]
    return sorted(points, key=lambda p: (p[0].rstrip("/").count("/"), p[0]))


def mount_steps(layout, root):
    steps = []
    for point, device, fs, options in mount_points(layout):
        target = os.path.join(root, point.lstrip("/")).rstrip("/") or "/"
        steps.append(["mkdir", "-p", target])
        argv = ["mount", "-t", fs]
        if options:
            argv += ["-o", ",".join(options)]
        steps.append(argv + [device, target])
    return steps


def hardware(layout):
    """What a NixOS configuration needs to boot from this layout, by label (udev makes the links at boot)."""
    file_systems = {}
    esps = esp_mounts(layout)
    for point, _device, fs, options in mount_points(layout):
        if point in esps:
            label = esp_label(layout, esps.index(point))
            file_systems[point] = {"device": "/dev/disk/by-partlabel/%s" % label, "fsType": "vfat", "options": options}
            continue
        vol = next(v for v in volumes(layout) if v["mount"] == point)
        file_systems[point] = {"device": "/dev/disk/by-label/%s" % (vol["label"].upper() if fs == "vfat" else vol["label"]),
                               "fsType": fs, "options": options}
    swaps = []
    for vol in volumes(layout):
        if vol["fs"] == "swap":
            swaps += [{"device": "/dev/disk/by-label/%s" % (vol["label"] if len(vol["devices"]) == 1 else "%s%d" % (vol["label"], i))}
                      for i in range(len(vol["devices"]))]
    return {
        "boot": layout["boot"],
        "raid": layout["raid"],
        "disks": layout["disks"],
        # For boot.loader.grub.devices (BIOS), or boot.loader.grub.mirroredBoots (EFI: one per ESP mount).
        "grub_devices": layout["disks"] if layout["boot"] == "bios" else [],
        "esp_devices": esp_devices(layout),
        "esp_mounts": esp_mounts(layout),
        "file_systems": file_systems,
        "swap_devices": swaps,
        "mdadm_arrays": [v["md"] for v in volumes(layout) if v["md"]],
    }


def applied(layout, probe):
    """True when the disks already carry this layout: every disk's partition names in order and every file
    system's type and label, as probe(device) -> {blkid key: value} reports them."""
    for index, disk in enumerate(layout["disks"]):
        for number, name, _size, _code in partition_table(layout, index):
            if probe(partition_path(disk, number)).get("PART_ENTRY_NAME") != name:
                return False
    for vol in volumes(layout):
        if vol["fs"] in ("none", "swap"):
            continue
        info = probe(vol["device"])
        want_label = vol["label"].upper() if vol["fs"] == "vfat" else vol["label"]
        if info.get("TYPE") != vol["fs"] or info.get("LABEL") != want_label:
            return False
    return True


def command_line(argv):
    return " ".join(a if re.match(r"^[A-Za-z0-9_./:=+,@%-]+$", a) else "'%s'" % a.replace("'", "'\\''") for a in argv)


# -- on the host ---------------------------------------------------------------------------------

PACKAGES = {"sgdisk": "gdisk", "partx": "util-linux", "wipefs": "util-linux", "blkid": "util-linux",
            "mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs", "btrfs": "btrfs-progs",
            "mkfs.vfat": "dosfstools", "mkswap": "util-linux", "mdadm": "mdadm"}


class Disks:
    """Probes and changes the host's disks for one layout; every failure is a LayoutError."""

    def __init__(self, module, layout, root, wipe):
        self.module = module
        self.layout = layout
        self.root = root
        self.wipe = wipe
        self.interlock = HostProbe(module.run_command)

    def run(self, argv, check=True):
        rc, out, err = self.module.run_command(argv)
        if check and rc != 0:
            raise LayoutError("%s failed (exit %d): %s" % (command_line(argv), rc, (err or out).strip().splitlines()[-1:] or ""))
        return rc, out

    def probe(self, device):
        """blkid's low-level view of a device: {} when it holds nothing, or blkid finds it ambivalent (the
        interlock then looks closer); DiskError when blkid cannot probe it."""
        rc, info, _words = self.interlock.blkid(device)
        return info if rc == 0 else {}

    def current_devices(self, disk):
        """The disk and the partitions the kernel knows of it now."""
        return [disk] + ["/dev/%s" % p for p in self.interlock.partitions(disk)]

    def check_tools(self):
        needed = {"sgdisk", "partx", "wipefs", "blkid"}
        for vol in volumes(self.layout):
            needed.add({"ext4": "mkfs.ext4", "xfs": "mkfs.xfs", "btrfs": "mkfs.btrfs", "vfat": "mkfs.vfat",
                        "swap": "mkswap", "none": "blkid"}[vol["fs"]])
            if vol["md"]:
                needed.add("mdadm")
        if self.layout["boot"] == "efi":
            needed.add("mkfs.vfat")
        missing = sorted(tool for tool in needed if not self.module.get_bin_path(tool))
        if missing:
            raise LayoutError("this host lacks %s: install %s first" % (", ".join(missing), " ".join(sorted({PACKAGES[t] for t in missing}))))
        with open("/proc/filesystems", encoding="ascii") as f:
            known = f.read().split()
        wanted = {p[2] for p in mount_points(self.layout)}
        # mount(8) hands a type it has a helper for (/sbin/mount.TYPE, e.g. a FUSE driver) to that helper.
        for fs in sorted(fs for fs in wanted - set(known) if not os.path.exists("/sbin/mount." + fs)):
            # A driver built as a module is loaded on the first mount; try before anything is wiped.
            self.run(["modprobe", fs], check=False)
            with open("/proc/filesystems", encoding="ascii") as f:
                if fs not in f.read().split():
                    raise LayoutError("this kernel cannot mount %s (not in /proc/filesystems, modprobe %s failed)%s"
                                      % (fs, fs, "; use boot=bios" if fs == "vfat" else ""))
        if any(vol["md"] for vol in volumes(self.layout)) and not os.path.exists("/proc/mdstat"):
            self.run(["modprobe", "md_mod"], check=False)
            if not os.path.exists("/proc/mdstat"):
                raise LayoutError("raid=mdadm needs the kernel's md driver and /proc/mdstat is missing (modprobe md_mod failed); "
                                  "use raid=btrfs with fs=btrfs instead")

    def swaps(self, devices):
        """The devices that are in use as swap."""
        with open("/proc/swaps", encoding="utf-8") as f:
            used = {os.path.realpath(line.split()[0]) for line in f.readlines()[1:]}
        return [d for d in devices if os.path.realpath(d) in used]

    def mount_missing(self):
        """Mount what is not mounted yet under root; the steps it ran."""
        steps = []
        mounted = set()
        with open("/proc/mounts", encoding="utf-8") as f:
            mounted = {line.split()[1] for line in f}
        if self.layout["raid"] == "btrfs":
            steps.append(["btrfs", "device", "scan"])
        if self.layout["raid"] == "mdadm" and any(not os.path.exists(v["md"]) for v in volumes(self.layout) if v["md"]):
            steps.append(["mdadm", "--assemble", "--scan"])
        for step in mount_steps(self.layout, self.root):
            if step[0] == "mount" and step[-1] in mounted:
                continue
            if step[0] == "mkdir" and os.path.isdir(step[-1]):
                continue
            steps.append(step)
        return steps

    def refuse_to_wipe(self):
        """The interlock (disk_interlock.check): DiskError when a disk is in use, or holds data without wipe.
        Returns (devices to wipe, idle md arrays to stop first)."""
        found, arrays = check(self.interlock, self.layout["disks"], self.wipe)
        return sorted({d for d, _what in found}, key=lambda d: (d in self.layout["disks"], d)), arrays

    def apply(self, check_mode):
        """Lay out (or only mount) the disks; returns the result the module reports."""
        if self.layout["raid"] == "script":
            return self.apply_script(check_mode)
        self.check_tools()
        if self.layout["raid"] == "btrfs" and not check_mode:
            self.run(["btrfs", "device", "scan"], check=False)
        already = applied(self.layout, self.probe)
        wiped = []
        if already:
            steps = self.mount_missing()
            if steps == [["btrfs", "device", "scan"]]:
                steps = []
        else:
            wiped, arrays = self.refuse_to_wipe()
            steps = plan(self.layout, self.root, wipe_devices=wiped, stop_arrays=arrays)
        if not check_mode:
            for step in steps:
                self.run(step)
                if step[0] == "partx":
                    self.wait_for_partitions(step[-1])
        return {
            "changed": bool(steps),
            "laid_out": not already,
            "plan": [command_line(s) for s in steps],
            "wiped": wiped,
            "hardware": hardware(self.layout),
            "layout": self.layout,
        }

    def wait_for_partitions(self, disk):
        """Partition device nodes appear when udev (or devtmpfs) makes them."""
        if self.module.get_bin_path("udevadm"):
            self.run(["udevadm", "settle", "--timeout=30"], check=False)
        wanted = [partition_path(disk, number) for number, _n, _s, _c in partition_table(self.layout)]
        for _attempt in range(100):
            if all(os.path.exists(p) for p in wanted):
                return
            time.sleep(0.1)
        raise LayoutError("the partitions of %s did not appear (%s missing) after partitioning"
                          % (disk, ", ".join(p for p in wanted if not os.path.exists(p))))

    # -- a script's layout (disko) -------------------------------------------------------------------

    def script_command(self, check_mode):
        """The script's argv; a store path of a package runs the one program in its bin/."""
        argv = list(self.layout["script"])
        path = argv[0]
        if os.path.isdir(path):
            programs = sorted(os.listdir(os.path.join(path, "bin"))) if os.path.isdir(os.path.join(path, "bin")) else []
            if len(programs) != 1:
                raise LayoutError("script %s is a directory with %s in bin/; give the program to run" %
                                  (path, "no program" if not programs else "several programs (%s)" % ", ".join(programs)))
            argv[0] = os.path.join(path, "bin", programs[0])
        elif not check_mode and not os.access(path, os.X_OK):
            raise LayoutError("script %s is not an executable on this host: copy it there first (ansinix.nixos.nix_copy_closure)"
                              % path)
        return argv

    def root_mounts(self):
        """{mount point in the installed system: {device, fsType, options}} of what is mounted at or under root."""
        found = {}
        root = self.root.rstrip("/") or "/"
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                source, target, fs, options = line.split()[:4]
                target = target.replace("\\040", " ")
                if target == root or target.startswith(root + "/"):
                    found["/" + target[len(root):].lstrip("/")] = {
                        "device": source, "fsType": fs, "options": [o for o in options.split(",") if o not in ("rw", "relatime")]}
        return found

    def apply_script(self, check_mode):
        """Run the script behind the interlock, once: a root with something mounted on it counts as laid out."""
        argv = self.script_command(check_mode)
        missing = [t for t in ("blkid", "wipefs", "partx") if not self.module.get_bin_path(t)]
        if missing:
            raise LayoutError("this host lacks %s, which the interlock needs: install util-linux first" % ", ".join(missing))
        devices = [d for disk in self.layout["disks"] for d in self.current_devices(disk)]
        mounts = self.root_mounts()
        already = "/" in mounts
        wiped = [] if already else self.refuse_to_wipe()[0]
        steps = [] if already else [argv]
        if not check_mode and steps:
            rc, out, err = self.module.run_command(argv, data="")
            if rc != 0:
                last = (err or out).strip().splitlines()[-1:] or ["no output"]
                raise LayoutError("the disk script %s failed (exit %d): %s" % (command_line(argv), rc, last[0]))
            mounts = self.root_mounts()
            if "/" not in mounts:
                raise LayoutError("the disk script %s ran, but nothing is mounted at %s: it must mount the new root there "
                                  "(disko mounts at disko.rootMountPoint, /mnt by default)" % (command_line(argv), self.root))
        boot = self.layout["boot"]
        # What is mounted under root, by device: a disko configuration declares its own file systems anyway.
        hardware = {
            "boot": boot, "raid": "script", "disks": self.layout["disks"],
            "grub_devices": self.layout["disks"] if boot == "bios" else [], "esp_devices": [], "esp_mounts": [],
            "file_systems": mounts,
            "swap_devices": [{"device": d} for d in self.swaps(devices)],
            "mdadm_arrays": [],
        }
        return {"changed": bool(steps), "laid_out": not already, "plan": [command_line(s) for s in steps], "wiped": wiped,
                "hardware": hardware, "layout": self.layout}
