"""Local test hosts made of Linux namespaces.

A test host is a network namespace (its own address on a bridge of its prefix) plus a persistent
mount and UTS namespace in which it has its own /nix store, /run (tmpfs), /boot, /root, /home,
/tmp, an overlay over /etc and /var, its own hostname and boot id, and its own sshd. Everything a
set of hosts uses is derived from a prefix (ANSINIX_TESTHOSTS_PREFIX, default "ax"), so suites
with different prefixes run side by side.

    python -m ansinix_test.hosts start web1 web2 mon
    python -m ansinix_test.hosts exec web1 -- readlink /run/current-system
    python -m ansinix_test.hosts reboot web1
    python -m ansinix_test.hosts stop
"""
import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

# Not under /var or /tmp: every host overlays the machine's /var and mounts a tmpfs on /tmp, and the
# hosts' upper dirs must not lie inside their own lower dir (overlayfs: undefined behaviour).
STATE_ROOT = "/srv/ansinix-testhosts"
SUBNET_BASE = "10.231"
DEPLOY_USER = "deploy"
DEPLOY_UID = 1500
# What a playbook runs on a test host to have the harness reboot it (see TestHosts.serve_reboots).
REBOOT_COMMAND = "touch /var/lib/ansinix-harness/reboot-request"
# The EFI variable LoaderEntryOneShot of a test host, as the fixture systems' bootctl writes it.
ONESHOT_VAR = "/boot/.fixture-efivars/LoaderEntryOneShot"

# A host name is its hostname, part of its netns name and an inventory name.
HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

# Directories of the machine each host gets its own copy of.
OWN_DIRS = ("nix", "boot", "root", "home")
OVERLAID_DIRS = ("etc", "var")

SSHD_CONFIG = """\
# sshd of test host {name}
ListenAddress {address}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile /etc/ssh/authorized_keys.d/%u
Subsystem sftp internal-sftp
PidFile /run/sshd.pid
PrintMotd no
MaxStartups 200:30:400
MaxSessions 100
AcceptEnv LANG LC_*
"""

# Runs inside the new mount namespace of a host (unshare made it private) and gives the host
# its own view of the file system. OWN_MOUNTS and OVERLAYS come from Host._layout().
MOUNT_SCRIPT = r"""
set -eu
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
for m in $OWN_MOUNTS; do mkdir -p "/${m#*=}"; mount --bind "${m%%=*}" "/${m#*=}"; done
for o in $OVERLAYS; do
  target=${o%%=*}; rest=${o#*=}; upper=${rest%%:*}; work=${rest#*:}
  mount -t overlay overlay -o "lowerdir=$target,upperdir=$upper,workdir=$work" "$target"
done
# The FAT file systems (ESPs) of an installed system's /etc/fstab, through FUSE: this kernel has no vfat.
for f in $FAT_MOUNTS; do fusefat -o rw+ "${f%%=*}" "${f#*=}" >/dev/null; done
mount --bind "$HOST_DIR/boot_id" /proc/sys/kernel/random/boot_id
# Where the host asks the harness for a reboot (see TestHosts.serve_reboots).
mkdir -p /var/lib/ansinix-harness
mount --bind "$HOST_DIR/harness" /var/lib/ansinix-harness
# Hide the harness (keys, other hosts' stores) from the host.
mount -t tmpfs -o mode=0755 tmpfs "$STATE_ROOT"
hostname "$HOST_NAME"
"""

# What the test of a host without Nix runs to install it: the role's Nix installer stand-in. No
# installer can download anything here; this one brings in the machine's Debian nix-bin, which the
# host's /usr/bin hides (the harness left a copy of its commands beside this script).
INSTALL_NIX_SCRIPT = """#!/bin/sh
set -eu
cp -a /var/lib/ansinix-harness/nix-bin/. /usr/bin/
mkdir -p /nix/var/nix/profiles /nix/var/nix/gcroots
echo "nix installed: $(nix-store --version)"
"""
INSTALL_NIX_COMMAND = "/var/lib/ansinix-harness/install-nix"

# The file systems a machine's disks may hold a root or a /boot on (the kernel here has no vfat, no md).
DISK_FS_TYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs")

# mount.vfat of a machine, which mount(8) hands the type vfat to: this kernel has no vfat, so FAT goes through
# FUSE (fusefat, writable with rw+). It lives in the machine's own /usr/sbin (an overlay), not the machine's.
MOUNT_VFAT_SCRIPT = """#!/bin/sh
dev=$1; dir=$2; shift 2
mode=rw+
for arg in "$@"; do case ",$arg," in *,ro,*) mode=ro ;; esac; done
exec /usr/bin/fusefat -o "$mode" "$dev" "$dir" >/dev/null
"""


class HostError(RuntimeError):
    """A test host could not be started, reached or stopped."""


GRUBENV_HEADER = "# GRUB Environment Block\n"


def parse_grubenv(text):
    """The variables of a GRUB environment block (grub-core/lib/envblk.c: a header, NAME=value lines, '#' padding)."""
    if len(text) != 1024 or not text.startswith(GRUBENV_HEADER):
        return {}
    return dict(line.split("=", 1) for line in text[len(GRUBENV_HEADER):].split("\n") if "=" in line and not line.startswith("#"))


def grubenv_block(env):
    """A 1024-byte GRUB environment block of these variables, as grub-editenv and GRUB's save_env write it."""
    text = GRUBENV_HEADER + "".join("%s=%s\n" % item for item in env.items())
    return text + "#" * (1024 - len(text))


def grub_menu(grub_cfg):
    """{entry: system} of a grub.cfg as install-grub.pl writes it: top-level entries by number and by title,
    submenu entries as "submenu title>entry title"; system from the entry's init= option."""
    menu, stack, index = {}, [], 0
    for token in re.finditer(r'(submenu|menuentry)\s+"([^"]*)"[^{\n]*\{|^\s*\}\s*$|\binit=(\S+)/init\b', grub_cfg, re.M):
        if token.group(2) is not None:
            stack.append((token.group(1), token.group(2)))
        elif token.group(3) is not None and stack and stack[-1][0] == "menuentry":
            path = ">".join(title for _kind, title in stack)
            menu[path] = token.group(3)
            if len(stack) == 1:
                menu[str(index)] = token.group(3)
        elif token.group(3) is None and stack:
            stack.pop()
            index += not stack  # GRUB numbers the top-level entries and submenus
    return menu


def _run(argv, check=True, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    proc = subprocess.run(argv, check=False, **kwargs)  # pylint: disable=subprocess-run-check
    if check and proc.returncode != 0:
        raise HostError("%s failed (exit %d): %s" % (shlex.join(argv), proc.returncode, (proc.stderr or "").strip()))
    return proc


def _ns_inode(path):
    return os.stat(path).st_ino


def _pids_in_namespaces(*ns_files):
    """Every process in any of the namespaces persisted at these files (mount or network)."""
    wanted = {}
    for path in ns_files:
        try:
            kind = "mnt" if path.endswith(".mnt") else "net"
            wanted["%s:[%d]" % (kind, _ns_inode(path))] = kind
        except OSError:
            continue
    if not wanted:
        return []
    kinds = set(wanted.values())
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for kind in kinds:
            try:
                if os.readlink("/proc/%s/ns/%s" % (entry, kind)) in wanted:
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return pids


def _kill_namespaces(*ns_files):
    """Kill every process in these namespaces, again while forks race the kill (sshd spawning a session)."""
    for _attempt in range(20):
        pids = _pids_in_namespaces(*ns_files)
        if not pids:
            return
        _kill_all(pids)
    raise HostError("processes %s keep running in %s" % (_pids_in_namespaces(*ns_files), ", ".join(ns_files)))


def _kill_all(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    for pid in pids:
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            try:
                with open("/proc/%d/stat" % pid, encoding="ascii") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        break
            except OSError:
                break
            time.sleep(0.01)


def _mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == path for line in f)


def _umount(path):
    while _mounted(path):
        if _run(["umount", "-l", path], check=False).returncode != 0:
            break


@contextlib.contextmanager
def _locked(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _resolve_in(root, path):
    """path inside the tree at root, its links followed as the system of that root would (absolute ones from root)."""
    parts, done = [p for p in path.split("/") if p], []
    for _hop in range(100):
        if not parts:
            return os.path.join(root, *done)
        part = parts.pop(0)
        full = os.path.join(root, *done, part)
        if os.path.islink(full):
            target = os.readlink(full)
            done = [] if target.startswith("/") else done
            parts = [p for p in target.split("/") if p] + parts
        elif part == "..":
            done = done[:-1]
        elif part != ".":
            done.append(part)
    raise HostError("%s: too many links under %s" % (path, root))


def _subnet_for(prefix):
    """A /24 for this prefix, the same every time, never shared with another prefix."""
    registry = os.path.join(STATE_ROOT, "subnets.json")
    with _locked(registry + ".lock"):
        try:
            with open(registry, encoding="utf-8") as f:
                table = json.load(f)
        except (OSError, ValueError):
            table = {}
        if prefix not in table:
            used = set(table.values())
            free = [n for n in range(10, 250) if n not in used]
            if not free:
                raise HostError("no free test subnet left in %s; remove %s" % (SUBNET_BASE, registry))
            table[prefix] = free[0]
            with open(registry + ".tmp", "w", encoding="utf-8") as f:
                json.dump(table, f)
            os.replace(registry + ".tmp", registry)
        return "%s.%d" % (SUBNET_BASE, table[prefix])


class Host:
    """One test host. Use TestHosts to make them."""

    def __init__(self, hosts, name, index, options):
        self.hosts = hosts
        self.name = name
        self.index = index
        self.options = options
        self.address = "%s.%d" % (hosts.subnet, 10 + index)
        self.netns = "%s-%s" % (hosts.prefix, name)
        self.veth = "%sv%d" % (hosts.prefix, index)
        self.dir = os.path.join(hosts.state_dir, "hosts", name)
        self.mnt_ns = os.path.join(hosts.ns_dir, name + ".mnt")
        self.uts_ns = os.path.join(hosts.ns_dir, name + ".uts")
        # A machine: a host with disks, booted from one of its disks, into a rescue system, or into the
        # OS it came with (the host's own dirs), the way a dedicated server is.
        self.machine = bool(options.get("disks"))
        self.disk_root = None  # (root device, boot device or None) when booted from its disks
        self.disk_fat = []  # [(mount point, device or None)]: the FAT file systems of its /etc/fstab, in disk order
        self.rescue_keys = []  # root's authorized keys in the rescue system
        self.rescue_host_key = None  # its private host key, when the API told it

    # -- a machine's boot media -------------------------------------------------------------------

    @property
    def mode(self):
        """What this host booted: "os" (its own dirs), "rescue" or "disk"."""
        try:
            with open(os.path.join(self.dir, "mode"), encoding="ascii") as f:
                return f.read().strip() or "os"
        except OSError:
            return "os"

    def _set_mode(self, mode):
        with open(os.path.join(self.dir, "mode"), "w", encoding="ascii") as f:
            f.write(mode + "\n")

    def _sys_dir(self):
        return {"rescue": os.path.join(self.dir, "rescue"), "disk": os.path.join(self.dir, "sysroot")}.get(self.mode, self.dir)

    def _layout(self):
        """(own dirs: name -> source, overlays: name -> (upper, work)) of this boot."""
        base = self._sys_dir()
        if self.mode == "disk":
            own = {d: os.path.join(base, d) for d in OWN_DIRS}
            if self.disk_root and self.disk_root[1]:
                own["boot"] = os.path.join(self.dir, "sysboot")
            work = os.path.join(base, ".ansinix-harness")
            overlays = {d: (os.path.join(base, d), os.path.join(work, d + ".work")) for d in OVERLAID_DIRS}
        else:
            own = {d: os.path.join(base, d) for d in OWN_DIRS}
            overlays = {d: (os.path.join(base, d + ".upper"), os.path.join(base, d + ".work")) for d in OVERLAID_DIRS}
        if not self._nix_visible():
            overlays["usr/bin"] = (os.path.join(base, "usrbin.upper"), os.path.join(base, "usrbin.work"))
        if self.machine:
            overlays["usr/sbin"] = (os.path.join(self.dir, "usrsbin.upper"), os.path.join(self.dir, "usrsbin.work"))
        if self.mode == "disk":
            # A FAT file system of the installed system is mounted over its mount point of the root (where a missing
            # nofail one leaves the root's empty directory, as on NixOS).
            for point, _device in self.disk_fat:
                own[point.lstrip("/")] = os.path.join(base, point.lstrip("/"))
        return own, overlays

    def _nix_visible(self):
        return {"rescue": False, "disk": True}.get(self.mode, self.options.get("nix", True))

    def etc_dir(self):
        """The host's /etc upper dir as the harness sees it (while its file systems are reachable)."""
        return self._layout()[1]["etc"][0]

    def _pulled(self):
        try:
            with open(os.path.join(self.dir, "pulled-disks"), encoding="ascii") as f:
                return {int(i) for i in f.read().split()}
        except OSError:
            return set()

    def _degraded(self, fstype):
        """The mount option of a mirror with a disk pulled out: btrfs mounts it degraded only when told (here, as
        an mdadm RAID1 would start degraded, which this kernel cannot: it has no md)."""
        return ",degraded" if fstype == "btrfs" and self._pulled() else ""

    def pull_disk(self, index):
        """Take disk index out of the machine, as a failed disk is: detached, gone at the next power_cycle()."""
        pulled = self._pulled() | {index}
        with open(os.path.join(self.dir, "pulled-disks"), "w", encoding="ascii") as f:
            f.write(" ".join(str(i) for i in sorted(pulled)) + "\n")
        self.stop()
        self._detach_disks(only=index)
        if shutil.which("btrfs"):
            _run(["btrfs", "device", "scan", "--forget"], check=False)

    def disks(self):
        """The loop devices that are this machine's disks, attached on first use (but those pulled out)."""
        devices = []
        pulled = self._pulled()
        for index, mib in enumerate(self.options.get("disks") or []):
            if index in pulled:
                continue
            image = os.path.join(self.dir, "disk%d.img" % index)
            if not os.path.exists(image):
                with open(image, "wb") as f:
                    f.truncate(int(mib) * 1048576)
            attached = _run(["losetup", "-j", image, "-O", "NAME", "-n"]).stdout.split()
            devices.append(attached[0] if attached else _run(["losetup", "-f", "--show", image]).stdout.strip())
        return devices

    def _detach_disks(self, only=None):
        for index in range(len(self.options.get("disks") or [])):
            if only is not None and index != only:
                continue
            image = os.path.join(self.dir, "disk%d.img" % index)
            if os.path.exists(image):
                for dev in _run(["losetup", "-j", image, "-O", "NAME", "-n"], check=False).stdout.split():
                    _run(["partx", "-d", dev], check=False)
                    _run(["losetup", "-d", dev], check=False)

    def _block_devices(self):
        """Every disk and partition of this machine, with its file system type, read as firmware would."""
        found = []
        for disk in self.disks():
            # No GPT support in this kernel: read the partition table from user space, as the kernel would at boot.
            _run(["partx", "-u", disk], check=False)
            name = os.path.basename(disk)
            parts = sorted(p for p in os.listdir("/sys/block/" + name) if p.startswith(name + "p"))
            for dev in [disk] + ["/dev/" + p for p in parts]:
                fstype = _run(["blkid", "-p", "-o", "value", "-s", "TYPE", dev], check=False).stdout.strip()
                found.append((dev, fstype))
        return found

    def find_disk_root(self):
        """(root device, separate /boot device or None) of an installed system on the disks, or None.

        Like firmware and NixOS's stage 1: the file system holding /nix/var/nix/profiles/system (a link
        into a store the machine's need not have) is the root; /boot is a directory of it, or the file system whose top holds loader/loader.conf."""
        if shutil.which("btrfs"):
            _run(["btrfs", "device", "scan"], check=False)
        root = boot = None
        for dev, fstype in self._block_devices():
            if fstype not in DISK_FS_TYPES:
                continue
            probe = _run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                          'd=$(mktemp -d) && mount -o "ro$2" "$1" "$d" && '
                          '{ [ -L "$d/nix/var/nix/profiles/system" ] && echo root; [ -f "$d/loader/loader.conf" ] && echo boot; true; }',
                          "probe", dev, self._degraded(fstype)], check=False).stdout.split()
            if "root" in probe and root is None:
                root = dev
            elif "boot" in probe and boot is None:
                boot = dev
        return (root, boot) if root else None

    def power_cycle(self, rescue_keys=None, rescue_host_key=None):
        """What a reset does to a machine: every process killed, its file systems gone, then a boot into the
        rescue system (with rescue_keys as root's authorized keys and a new host key, or rescue_host_key, a
        private key, when the API told it), or from its disks, or back into the OS it came with when the
        disks hold no system. Returns the new boot id."""
        if not self.machine:
            raise HostError("%s has no disks: only a machine (option disks) boots into a rescue system" % self.name)
        self.stop()
        if rescue_keys is not None:
            shutil.rmtree(os.path.join(self.dir, "rescue"), ignore_errors=True)
            self._set_mode("rescue")
            self.rescue_keys = [k.strip() for k in rescue_keys]
            self.rescue_host_key = rescue_host_key
        else:
            self.disk_root = self.find_disk_root()
            self._set_mode("disk" if self.disk_root else "os")
        self.start()
        return self.boot_id()

    def __repr__(self):
        return "<Host %s %s>" % (self.name, self.address)

    # -- looking at the host from outside -------------------------------------------------------

    def nsenter_argv(self):
        return [
            "nsenter", "--net=/run/netns/" + self.netns, "--mount=" + self.mnt_ns,
            "--uts=" + self.uts_ns, "--wd=/",
        ]

    def run(self, cmd, check=True, input=None, timeout=120, env=None):  # pylint: disable=redefined-builtin
        """Run a shell command as root inside the host's namespaces (not over SSH)."""
        full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        full_env.update(env or {})
        proc = subprocess.run(  # pylint: disable=subprocess-run-check
            self.nsenter_argv() + ["/bin/sh", "-c", cmd], input=input, capture_output=True,
            text=not isinstance(input, bytes), timeout=timeout, env=full_env, check=False,
        )
        if check and proc.returncode != 0:
            raise HostError("on %s: %s failed (exit %d):\n%s%s" % (self.name, cmd, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def ssh(self, argv, user="root", check=False, timeout=30, input=None):  # pylint: disable=redefined-builtin
        """Run a command over real SSH, with the harness key and host key checking on."""
        cmd = ["ssh"] + self.hosts.ssh_options() + ["%s@%s" % (user, self.address), "--"] + list(argv)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, check=check)

    def read_file(self, path):
        return self.run("cat " + shlex.quote(path)).stdout

    def exists(self, path):
        return self.run("test -e %s || test -L %s" % (shlex.quote(path), shlex.quote(path)), check=False).returncode == 0

    def readlink(self, path):
        proc = self.run("readlink " + shlex.quote(path), check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def stat(self, path):
        """mode (int, permission bits), uid, gid, user, group, ino, mtime (ns), size."""
        out = self.run("stat -c '%a %u %g %U %G %i %s' " + shlex.quote(path) + " && date +%s%N -r " + shlex.quote(path)).stdout.split()
        return {
            "mode": int(out[0], 8), "uid": int(out[1]), "gid": int(out[2]), "user": out[3],
            "group": out[4], "ino": int(out[5]), "size": int(out[6]), "mtime": int(out[7]),
        }

    def boot_id(self):
        return self.read_file("/proc/sys/kernel/random/boot_id").strip()

    def generation(self, profile="/nix/var/nix/profiles/system"):
        """The number of the profile's current generation, or None."""
        link = self.readlink(profile)
        if not link:
            return None
        return int(link.rsplit("-", 2)[-2])

    def store_has(self, path):
        return self.run("nix-store --check-validity " + shlex.quote(path), check=False).returncode == 0

    def pids(self):
        """Every process of the host: in its mount namespace, or in its network namespace."""
        return _pids_in_namespaces(self.mnt_ns, "/run/netns/" + self.netns)

    # -- life cycle -------------------------------------------------------------------------------

    def _prepare_dirs(self):
        fresh = not os.path.isdir(self.dir)
        os.makedirs(os.path.join(self.dir, "harness"), exist_ok=True)
        if self.mode == "disk":
            self._mount_disk_root()
        own, overlays = self._layout()
        for path in own.values():
            os.makedirs(path, exist_ok=True)
        for upper, work in overlays.values():
            os.makedirs(upper, exist_ok=True)
            os.makedirs(work, exist_ok=True)
        os.chmod(own["root"], 0o700)
        if "usr/bin" in overlays:
            nix_bin = os.path.join(self.dir, "harness", "nix-bin")
            if not os.path.isdir(nix_bin):
                os.makedirs(nix_bin)
                _run(["sh", "-c", 'cp -a /usr/bin/nix* "$1"/', "copy", nix_bin])
            for entry in os.listdir("/usr/bin"):
                whiteout = os.path.join(overlays["usr/bin"][0], entry)
                if entry.startswith("nix") and not os.path.exists(whiteout):
                    os.mknod(whiteout, 0o600 | 0o020000, os.makedev(0, 0))
        if "usr/sbin" in overlays:
            helper = os.path.join(overlays["usr/sbin"][0], "mount.vfat")
            with open(helper, "w", encoding="utf-8") as f:
                f.write(MOUNT_VFAT_SCRIPT)
            os.chmod(helper, 0o755)
        install_nix = os.path.join(self.dir, "harness", "install-nix")
        with open(install_nix, "w", encoding="utf-8") as f:
            f.write(INSTALL_NIX_SCRIPT)
        os.chmod(install_nix, 0o755)
        etc = overlays["etc"][0]
        os.makedirs(os.path.join(etc, "ssh", "authorized_keys.harness"), exist_ok=True)
        os.makedirs(os.path.join(etc, "ssh", "authorized_keys.d"), exist_ok=True)
        os.makedirs(os.path.join(etc, "nix"), exist_ok=True)
        os.makedirs(os.path.join(etc, "sudoers.d"), exist_ok=True)
        key = os.path.join(etc, "ssh", "ssh_host_ed25519_key")
        if self.mode == "rescue" and self.rescue_host_key and not os.path.exists(key):
            with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
                f.write(self.rescue_host_key)
            _run(["sh", "-c", 'ssh-keygen -y -f "$1" > "$1.pub"', "pub", key])
        if not os.path.exists(key):
            # A new host key: a new host, a rescue system, or an installed system's first boot (as its sshd makes one).
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@" + self.name, "-f", key])
        with open(os.path.join(etc, "ssh", "sshd_config.harness"), "w", encoding="utf-8") as f:
            f.write(SSHD_CONFIG.format(name=self.name, address=self.address))
        if self.mode == "rescue":
            authorized = {"root": "".join(k + "\n" for k in self.rescue_keys)}
        else:
            with open(self.hosts.ssh_key_path + ".pub", encoding="utf-8") as f:
                pub = f.read()
            authorized = {"root": pub, DEPLOY_USER: pub}
        for user, keys in authorized.items():
            for sub in ("authorized_keys.harness", "authorized_keys.d"):
                path = os.path.join(etc, "ssh", sub, user)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(keys)
                os.chmod(path, 0o644)
        # No binary cache is reachable: an empty list keeps every nix call from waiting for one.
        with open(os.path.join(etc, "nix", "nix.conf"), "w", encoding="utf-8") as f:
            # No build users: every host shares the machine's uids, and Nix kills all processes of a build user
            # before it builds, so builds on two hosts at once would kill each other.
            f.write("build-users-group =\nsandbox = false\nsubstituters =\n")
        sudoers = os.path.join(etc, "sudoers.d", DEPLOY_USER)
        with open(sudoers, "w", encoding="utf-8") as f:
            f.write("%s ALL=(ALL) NOPASSWD: ALL\n" % DEPLOY_USER)
        os.chmod(sudoers, 0o440)
        with open(os.path.join(etc, "hostname"), "w", encoding="utf-8") as f:
            f.write(self.name + "\n")
        with open(os.path.join(etc, "hosts"), "w", encoding="utf-8") as f:
            f.write("127.0.0.1 localhost\n::1 localhost\n")
            for other in self.hosts.hosts.values():
                f.write("%s %s\n" % (other.address, other.name))
        # An installed system has /etc/NIXOS or not, as it was installed; a rescue system is no NixOS.
        marker = os.path.join(etc, "NIXOS")
        if self.mode != "disk":
            if self.mode == "os" and self.options.get("nixos", True):
                with open(marker, "w", encoding="utf-8"):
                    pass
            elif os.path.exists(marker):
                os.unlink(marker)
        self._new_boot_id()
        return fresh

    def _mount_disk_root(self):
        """Mount the installed root (and /boot) where the harness sees them, until the host's namespace has them."""
        if not self.disk_root:
            self.disk_root = self.find_disk_root()
            if not self.disk_root:
                raise HostError("%s: no installed system on its disks %s" % (self.name, ", ".join(self.disks())))
        for dev, where in zip(self.disk_root, ("sysroot", "sysboot")):
            if dev:
                path = os.path.join(self.dir, where)
                os.makedirs(path, exist_ok=True)
                if not _mounted(path):
                    _run(["mount", "-o", "rw" + self._degraded(_run(["blkid", "-p", "-o", "value", "-s", "TYPE", dev]).stdout.strip()),
                          dev, path])
        self.disk_fat = self._fat_mounts(os.path.join(self.dir, "sysroot"))

    def _fat_mounts(self, root):
        """[(mount point, device or None)] of the vfat lines of the /etc/fstab of the installed system's current
        generation, as NixOS's stage 2 mounts them; a device found by /dev/disk/by-partlabel or by-label name (no
        udev here), None when it is gone (nofail) or missing (NixOS would stop: so does this)."""
        fstab = _resolve_in(root, "/nix/var/nix/profiles/system/etc/fstab")
        if not os.path.isfile(fstab):
            return []
        names = {}
        for index, (dev, fstype) in enumerate(self._block_devices()):
            if fstype == "vfat":
                info = dict(line.split("=", 1) for line in _run(["blkid", "-p", "-o", "export", dev], check=False).stdout.splitlines()
                            if "=" in line)
                names.update({("partlabel", info.get("PART_ENTRY_NAME")): (index, dev), ("label", info.get("LABEL")): (index, dev)})
        found = []
        with open(fstab, encoding="utf-8") as f:
            for line in f:
                words = line.split()
                if len(words) < 4 or words[2] != "vfat":
                    continue
                kind, _slash, name = words[0][len("/dev/disk/by-"):].partition("/")
                index, dev = names.get((kind, name), (len(names), None))
                if dev is None and "nofail" not in words[3].split(","):
                    raise HostError("%s: %s for %s is missing and not nofail: NixOS would not boot" % (self.name, words[0], words[1]))
                found.append((index, words[1], dev))
        return [(point, dev) for _index, point, dev in sorted(found)]

    def firmware_boot_dir(self):
        """Where the firmware finds the boot loader: the first disk's ESP that holds one at the removable path
        (EFI/BOOT/BOOTX64.EFI), as UEFI tries the disks in order without NVRAM entries; else /boot."""
        for point, dev in self.disk_fat if self.mode == "disk" else []:
            if dev and self.exists(point + "/EFI/BOOT/BOOTX64.EFI"):
                return point
        return "/boot"

    def _unmount_disk_root(self):
        for where in ("sysboot", "sysroot"):
            _umount(os.path.join(self.dir, where))

    def _new_boot_id(self):
        with open(os.path.join(self.dir, "boot_id"), "w", encoding="ascii") as f:
            f.write(str(uuid.uuid4()) + "\n")

    def _network_up(self):
        if _run(["ip", "netns", "pids", self.netns], check=False).returncode == 0:
            return
        bridge = self.hosts.bridge
        _run(["ip", "netns", "add", self.netns])
        # A fixed MAC per address: a host made again keeps it, so no neighbour cache points at a dead one.
        octet = int(self.hosts.subnet.rsplit(".", 1)[1])
        mac = "02:a1:%02x:00:00:%02x" % (octet, 10 + self.index)
        _run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", self.netns])
        _run(["ip", "link", "set", self.veth, "master", bridge, "up"])
        inside = ["ip", "netns", "exec", self.netns]
        _run(inside + ["ip", "link", "set", "lo", "up"])
        _run(inside + ["ip", "addr", "add", self.address + "/24", "dev", "eth0"])
        _run(inside + ["ip", "link", "set", "eth0", "up"])
        _run(inside + ["ip", "route", "add", "default", "via", self.hosts.gateway])

    def _mounts_up(self):
        if os.path.exists(self.mnt_ns) and _mounted(self.mnt_ns):
            return
        for path in (self.mnt_ns, self.uts_ns):
            with open(path, "w", encoding="ascii"):
                pass
        own, overlays = self._layout()
        fat = [(point, dev) for point, dev in self.disk_fat if dev] if self.mode == "disk" else []
        env = dict(os.environ, HOST_DIR=self.dir, HOST_NAME=self.name, STATE_ROOT=self.hosts.root,
                   FAT_MOUNTS=" ".join("%s=%s" % (dev, point) for point, dev in fat),
                   OWN_MOUNTS=" ".join("%s=%s" % (src, d) for d, src in own.items()),
                   OVERLAYS=" ".join("/%s=%s:%s" % (d, upper, work) for d, (upper, work) in overlays.items()))
        _run(["nsenter", "--net=/run/netns/" + self.netns, "unshare", "--mount=" + self.mnt_ns,
              "--uts=" + self.uts_ns, "--propagation", "private", "/bin/sh", "-c", MOUNT_SCRIPT], env=env)
        # The host's namespace keeps the disks' file systems mounted; the machine needs them no more.
        self._unmount_disk_root()

    def _users_up(self):
        script = (
            "getent group keys >/dev/null || groupadd -r keys; "
            "id -u {u} >/dev/null 2>&1 || useradd -m -u {uid} -s /bin/bash -p '*' {u}"
        ).format(u=DEPLOY_USER, uid=DEPLOY_UID)
        self.run(script)

    def _sshd_up(self):
        self.run("mkdir -p /run/sshd && chmod 0755 /run/sshd && "
                 "/usr/sbin/sshd -f /etc/ssh/sshd_config.harness -E /var/log/sshd-harness.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = _run(["ip", "netns", "exec", self.netns, "ss", "-ltnH", "sport = :22"], check=False)
            if self.address in probe.stdout:
                return
            time.sleep(0.05)
        raise HostError("sshd of %s did not start; see %s" % (self.name, os.path.join(self.dir, "var.upper/log/sshd-harness.log")))

    def import_closure(self, path):
        """Copy the closure of a controller store path into the host's store (not through the modules)."""
        closure = _run(["nix-store", "-qR", path]).stdout.split()
        missing = self.run("nix-store --check-validity --print-invalid " + " ".join(closure)).stdout.split()
        if missing:
            with subprocess.Popen(["nix-store", "--export"] + missing, stdout=subprocess.PIPE) as export:
                imp = subprocess.run(self.nsenter_argv() + ["nix-store", "--import"], stdin=export.stdout,
                                     capture_output=True, check=False)
                export.stdout.close()
            if export.returncode or imp.returncode:
                raise HostError("copying %s into %s failed: %s" % (path, self.name, imp.stderr.decode(errors="replace")))
        return missing

    def _install_system(self, system):
        """Copy a system closure into the host's store, make it generation 1, install its boot loader."""
        self.import_closure(system)
        self.run("nix-env -p /nix/var/nix/profiles/system --set %s && "
                 "NIXOS_INSTALL_BOOTLOADER=1 %s/bin/switch-to-configuration boot" % (system, system))

    def grub_dir(self):
        """The GRUB directory the firmware boots from, when the fixture system's boot loader is GRUB."""
        grub = self.firmware_boot_dir() + "/grub"
        return grub if self.exists(grub + "/grub.cfg") else None

    def grub_menu(self):
        """{entry: system} of the GRUB menu: top-level entries by number and title, submenu ones as "submenu>title"."""
        return grub_menu(self.read_file(self.grub_dir() + "/grub.cfg"))

    def grubenv(self, path=None):
        """GRUB's environment block (a grubenv) as a dict; {} when there is none."""
        return parse_grubenv(self.run("cat %s 2>/dev/null" % shlex.quote(path or self.grub_dir() + "/grubenv"), check=False).stdout)

    def default_boot_system(self):
        """The system the boot loader would start, as the fixture systems record it under /boot (or the ESP the
        firmware boots from)."""
        if self.grub_dir():
            # install-grub.pl's grub.cfg: `set default=0` (boot.loader.grub.default) when next_entry is unset.
            return self.grub_menu().get("0")
        conf = self.run("cat %s/loader/loader.conf 2>/dev/null" % self.firmware_boot_dir(), check=False).stdout
        entry = next((line.split(None, 1)[1].strip() for line in conf.splitlines() if line.startswith("default ")), None)
        return self.entry_system(entry) if entry else None

    def entry_system(self, entry):
        """The system of a boot loader entry (its init= option), or None when there is no such entry."""
        text = self.run("cat %s/loader/entries/%s 2>/dev/null" % (self.firmware_boot_dir(), shlex.quote(entry)), check=False).stdout
        for line in text.splitlines():
            for word in line.split():
                if word.startswith("init="):
                    return os.path.dirname(word[len("init="):])
        return None

    def oneshot_boot_entry(self):
        """The entry systemd-boot starts at the next boot only (LoaderEntryOneShot, which the fixture's bootctl sets)."""
        if self.grub_dir():
            return self.grubenv().get("next_entry") or None
        return self.run("cat %s 2>/dev/null" % ONESHOT_VAR, check=False).stdout.strip() or None

    def _next_grub_system(self):
        """What GRUB starts with install-grub.pl's grub.cfg: next_entry, cleared as it is read (load_env, then
        `set next_entry=` and `save_env next_entry` in the grubenv of $prefix), else entry 0."""
        env = self.grubenv()
        if not env.get("next_entry"):
            return self.default_boot_system()
        entry = env.pop("next_entry")
        self.run("cat > %s/grubenv" % self.grub_dir(), input=grubenv_block(env))
        # GRUB falls back to entry 0 when the default names no entry.
        return self.grub_menu().get(entry) or self.default_boot_system()

    def _next_boot_system(self):
        """What systemd-boot starts: the one-shot entry, which it deletes as it reads it, else the default."""
        if self.grub_dir():
            return self._next_grub_system()
        oneshot = self.oneshot_boot_entry()
        if oneshot:
            self.run("rm -f %s" % ONESHOT_VAR)
            system = self.entry_system(oneshot)
            if system:
                return system
        return self.default_boot_system()

    def _boot(self):
        """What NixOS stage 2 does with the boot loader's entry: run its init (activation, units), record it as booted."""
        system = self._next_boot_system()
        if system:
            self.run("%s/init && ln -sfn %s /run/booted-system" % (system, system))

    def running(self):
        return os.path.exists("/run/netns/" + self.netns) and _mounted(self.mnt_ns) and bool(self.pids())

    def start(self):
        if self.running():
            if not self._sshd_running():
                self._sshd_up()
            return self
        self.stop()
        self._prepare_dirs()
        self._network_up()
        self._mounts_up()
        self._users_up()
        if self.options.get("system") and self.generation() is None:
            self._install_system(self.options["system"])
        self._boot()
        self._sshd_up()
        return self

    def _sshd_running(self):
        return self.run("test -f /run/sshd.pid && kill -0 $(cat /run/sshd.pid)", check=False).returncode == 0

    def reboot(self):
        """Restart the host: every process killed, fresh /run and /tmp, new boot id, default entry booted.
        A machine goes through power_cycle(): its next boot may come from another root."""
        if self.machine:
            return self.power_cycle()
        _kill_namespaces(self.mnt_ns, "/run/netns/" + self.netns)
        self.run("umount -l /run && mount -t tmpfs -o mode=0755 tmpfs /run && "
                 "umount -l /tmp && mount -t tmpfs -o mode=1777 tmpfs /tmp")
        self._new_boot_id()
        self._boot()
        self._sshd_up()
        return self.boot_id()

    def stop(self):
        _kill_namespaces(self.mnt_ns, "/run/netns/" + self.netns)
        for path in (self.mnt_ns, self.uts_ns):
            _umount(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        _run(["ip", "netns", "del", self.netns], check=False)
        _run(["ip", "link", "del", self.veth], check=False)

    def reset(self):
        """Back to a fresh host: same name and address, empty store, new boot id (a machine: blank disks)."""
        self.stop()
        self._detach_disks()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.start()
        self.hosts.known_hosts_add(self)
        return self


class TestHosts:
    """A set of test hosts sharing a prefix, a bridge, an SSH key and an inventory."""

    __test__ = False  # not a pytest test class

    def __init__(self, prefix=None, root=STATE_ROOT):
        self.prefix = prefix or os.environ.get("ANSINIX_TESTHOSTS_PREFIX") or "ax"
        if not self.prefix.isalnum() or len(self.prefix) > 8:
            raise HostError("prefix %r: use up to 8 letters or digits" % self.prefix)
        self.root = root
        self.state_dir = os.path.join(root, self.prefix)
        self.ns_dir = os.path.join(self.state_dir, "ns")
        self.ssh_key_path = os.path.join(self.state_dir, "id_ed25519")
        self.known_hosts_path = os.path.join(self.state_dir, "known_hosts")
        self.inventory_path = os.path.join(self.state_dir, "inventory.yml")
        self.bridge = self.prefix + "br"
        self.subnet = None
        self.gateway = None
        self.hosts = {}
        self._load()

    def __getitem__(self, name):
        return self.hosts[name]

    def __iter__(self):
        return iter(self.hosts.values())

    def _registry(self):
        return os.path.join(self.state_dir, "hosts.json")

    def _load(self):
        try:
            with open(self._registry(), encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return
        self.subnet = saved["subnet"]
        self.gateway = self.subnet + ".1"
        for name, entry in saved["hosts"].items():
            self.hosts[name] = Host(self, name, entry["index"], entry["options"])

    def _save(self):
        data = {"subnet": self.subnet, "hosts": {h.name: {"index": h.index, "options": h.options} for h in self}}
        with open(self._registry() + ".tmp", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(self._registry() + ".tmp", self._registry())

    def ssh_options(self):
        return ["-i", self.ssh_key_path, "-o", "UserKnownHostsFile=" + self.known_hosts_path,
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]

    def _network_up(self):
        if _run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", self.gateway + "/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _setup_ns_dir(self):
        # Persistent namespace files must live on a private mount, or they could not be bind-mounted.
        os.makedirs(self.ns_dir, exist_ok=True)
        if not _mounted(self.ns_dir):
            _run(["mount", "--bind", self.ns_dir, self.ns_dir])
            _run(["mount", "--make-private", self.ns_dir])

    def known_hosts_add(self, host):
        lines = []
        if os.path.exists(self.known_hosts_path):
            with open(self.known_hosts_path, encoding="utf-8") as f:
                lines = [line for line in f if not line.startswith(host.address + " ")]
        pub = host.run("cat /etc/ssh/ssh_host_ed25519_key.pub", check=False).stdout.split()
        if pub:
            keytype, key = pub[:2]
            lines.append("%s %s %s\n" % (host.address, keytype, key))
        with open(self.known_hosts_path, "w", encoding="utf-8") as f:
            f.writelines(lines)

    def start(self, names, options=None):
        """Start these hosts (and keep any already started). Idempotent; cleans up after a crash."""
        options = options or {}
        for name in list(names) + list(options):
            if not isinstance(name, str) or not HOST_NAME_RE.match(name):
                raise HostError("host name %r: use a lower-case letter, then up to 30 letters, digits or '-'" % (name,))
        unknown = set(options) - set(names)
        if unknown:
            raise HostError("options for hosts not being started: %s; add them to the names" % ", ".join(sorted(unknown)))
        if self.subnet is None:
            self.subnet = _subnet_for(self.prefix)
            self.gateway = self.subnet + ".1"
        os.makedirs(self.state_dir, exist_ok=True)
        self._cleanup_stale()
        if not os.path.exists(self.ssh_key_path):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ansinix-testhosts", "-f", self.ssh_key_path])
        for name in names:
            if name not in self.hosts:
                index = max([h.index for h in self] + [-1]) + 1
                if index > 200:
                    raise HostError("too many test hosts for prefix %s" % self.prefix)
                self.hosts[name] = Host(self, name, index, dict(options.get(name, {})))
            elif name in options and options[name] != self.hosts[name].options:
                # Other options: the host is made again from scratch.
                self.hosts[name].stop()
                self.hosts[name]._detach_disks()  # pylint: disable=protected-access
                shutil.rmtree(self.hosts[name].dir, ignore_errors=True)
                self.hosts[name].options = dict(options[name])
        self._save()
        self._setup_ns_dir()
        self._network_up()
        for name in names:
            host = self.hosts[name]
            host.start()
            self.known_hosts_add(host)
        self.write_inventory()
        return [self.hosts[n] for n in names]

    def _cleanup_stale(self):
        """After a crash: hosts whose namespaces are gone or whose processes died are stopped,
        and namespaces of this prefix that no registered host owns are removed."""
        for host in self:
            if not host.running():
                host.stop()
        known = {host.netns for host in self}
        for netns in self._prefix_netns():
            if netns not in known:
                _run(["ip", "netns", "del", netns], check=False)

    def _prefix_netns(self):
        listing = _run(["ip", "netns", "list"], check=False).stdout
        names = [line.split()[0] for line in listing.splitlines() if line.split()]
        return [name for name in names if name.startswith(self.prefix + "-")]

    def write_inventory(self):
        lines = ["# Written by ansinix_test.hosts for the test hosts of prefix %s." % self.prefix,
                 "all:", "  children:", "    testhosts:", "      hosts:"]
        for host in self:
            lines.append("        %s:" % host.name)
            lines.append("          ansible_host: %s" % host.address)
        ssh_args = "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes" % self.known_hosts_path
        lines += [
            "      vars:",
            "        ansible_user: root",
            "        ansible_ssh_private_key_file: %s" % self.ssh_key_path,
            "        ansible_ssh_common_args: %s" % json.dumps(ssh_args),
            "        ansible_python_interpreter: /usr/bin/python3",
        ]
        nixos = [h for h in self if h.options.get("nixos", True)]
        if nixos:
            lines += ["    nixos:", "      hosts:"] + ["        %s: {}" % h.name for h in nixos]
        with open(self.inventory_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return self.inventory_path

    @contextlib.contextmanager
    def serve_reboots(self):
        """While active, a host that runs REBOOT_COMMAND is rebooted by the harness (as a machine would be)."""
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                for host in list(self):
                    request = os.path.join(host.dir, "harness", "reboot-request")
                    if os.path.exists(request):
                        os.unlink(request)
                        time.sleep(0.5)  # let the command that asked return, as `shutdown -r` does
                        host.reboot()
                stop.wait(0.2)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def stop(self):
        """Remove every namespace, mount, link, loop device and process of this prefix, and its state."""
        for host in self:
            host.stop()
            host._detach_disks()  # pylint: disable=protected-access
        # Leftovers no registry knows of (a crash before it was written).
        for name in self._prefix_netns():
            _run(["ip", "netns", "del", name], check=False)
        if os.path.isdir(self.ns_dir):
            for entry in os.listdir(self.ns_dir):
                path = os.path.join(self.ns_dir, entry)
                if entry.endswith(".mnt"):
                    _kill_namespaces(path)
                _umount(path)
            _umount(self.ns_dir)
        _run(["ip", "link", "del", self.bridge], check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.hosts = {}


def _system_option(text):
    name, sep, path = text.partition("=")
    if not sep or not name or not path.startswith("/nix/store/"):
        raise argparse.ArgumentTypeError("%r: give NAME=/nix/store/...-nixos-system-..." % text)
    return name, path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ansinix_test.hosts", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--prefix", help="names, addresses and state of this set of hosts (default: $ANSINIX_TESTHOSTS_PREFIX or ax)")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start hosts (idempotent)")
    start.add_argument("names", nargs="+")
    start.add_argument("--no-nix", action="append", default=[], metavar="NAME", help="a host without nix commands")
    start.add_argument("--not-nixos", action="append", default=[], metavar="NAME", help="a host without /etc/NIXOS")
    start.add_argument("--system", action="append", default=[], type=_system_option, metavar="NAME=PATH",
                       help="install this system closure of the controller on a new host and boot it")
    sub.add_parser("stop", help="remove all hosts of the prefix")
    sub.add_parser("status", help="list the hosts")
    sub.add_parser("inventory", help="print the inventory path")
    reboot = sub.add_parser("reboot", help="restart a host")
    reboot.add_argument("name")
    run = sub.add_parser("exec", help="run a command inside a host")
    run.add_argument("name")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        hosts = TestHosts(prefix=args.prefix)
        if args.command in ("reboot", "exec") and args.name not in hosts.hosts:
            raise HostError("no test host %s with prefix %s; start it first: python -m ansinix_test.hosts start %s"
                            % (args.name, hosts.prefix, args.name))
        if args.command == "start":
            opts = {n: {"nix": n not in args.no_nix, "nixos": n not in args.not_nixos} for n in args.names}
            for name, path in args.system:
                if name not in opts:
                    raise HostError("--system %s=...: %s is not among the hosts to start" % (name, name))
                opts[name]["system"] = path
            for host in hosts.start(args.names, options=opts):
                print("%-10s %s" % (host.name, host.address))
            print("inventory: %s" % hosts.inventory_path)
        elif args.command == "stop":
            hosts.stop()
        elif args.command == "status":
            for host in hosts:
                print("%-10s %-15s %s" % (host.name, host.address, "running" if host.running() else "stopped"))
        elif args.command == "inventory":
            print(hosts.inventory_path)
        elif args.command == "reboot":
            print(hosts[args.name].reboot())
        elif args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                raise HostError("exec %s: give a command to run, e.g. exec %s -- hostname" % (args.name, args.name))
            proc = hosts[args.name].run(shlex.join(cmd), check=False)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode
    except HostError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
