"""The disk interlock of ansinix.nixos.nixos_disks against real loop devices: disks that hold data blkid cannot
name or finds ambivalent are refused without wipe, and disks in use (stacked devices, a mounted btrfs member, a
mount in another namespace) are refused even with wipe. After each refusal the bytes on the disk are the same."""
import hashlib
import json
import os
import shlex
import subprocess
import tempfile

import pytest

# No udev here: device-mapper must create its own nodes and not wait for udev.
LVM_CONFIG = "activation { udev_sync = 0 udev_rules = 0 } devices { obtain_device_list_from_udev = 0 filter = [ \"a|^%s$|\", \"r|.*|\" ] }"
DM = os.path.exists("/sys/class/misc/device-mapper")
needs_dm = pytest.mark.skipif(not DM, reason="this kernel has no device-mapper (no /sys/class/misc/device-mapper)")
LAYOUT = {"boot": "bios", "raid": "none", "partitions": [{"label": "root", "fs": "ext4", "mount": "/"}]}


def sh(cmd, check=True, env=None):
    """A command in the harness's own namespaces (device-mapper and loop devices are the kernel's, not a host's)."""
    full = dict(os.environ, **(env or {}))
    proc = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, check=False, env=full)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (exit %d): %s%s" % (cmd, proc.returncode, proc.stdout, proc.stderr))
    return proc


@pytest.fixture
def undo():
    """Commands to run at the end, last first, also when the test failed."""
    steps = []
    yield steps.append
    for step in reversed(steps):
        sh(step, check=False, env={"DM_DISABLE_UDEV": "1"})


def machine(fresh_hosts, name, disks):
    host, = fresh_hosts(name, **{name: {"disks": disks, "system": None, "nix": False, "nixos": False}})
    return host


def nixos_disks(run_ansible, host, **args):
    """Run the module on the host through real `ansible`; (exit code, its result)."""
    proc = run_ansible([host.name, "-m", "ansinix.nixos.nixos_disks", "-a", json.dumps(dict(LAYOUT, **args))])
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert " => " in proc.stdout, proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout.split(" => ", 1)[1])


def digest(device, offset=0, length=1 << 20):
    """sha256 of bytes on a device, read past the page cache (what is really on the disk)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return hashlib.sha256(os.pread(fd, length, offset)).hexdigest()
    finally:
        os.close(fd)


def identity(device):
    """What blkid reads in a file system's superblock that names it (its type, UUID, device UUID, label): the parts
    a mounted file system keeps while its kernel driver updates counters and times in the same block."""
    proc = sh("blkid -p -o export %s" % device)
    return sorted(line for line in proc.stdout.splitlines() if line.split("=")[0] in ("TYPE", "UUID", "UUID_SUB", "LABEL"))


def kernel_name(device):
    """dm-0 for /dev/mapper/NAME: without udev, device-mapper makes its nodes itself, not as links to /dev/dm-N."""
    rdev = os.stat(device).st_rdev
    return os.path.basename(os.path.realpath("/sys/dev/block/%d:%d" % (os.major(rdev), os.minor(rdev))))


def stray_fat_boot_sector(device):
    """A FAT boot sector over the first 512 bytes, as a reused disk often carries: ext4's superblock is at 1024."""
    with tempfile.NamedTemporaryFile(suffix=".img") as img:
        sh("truncate -s 2M %s && mkfs.vfat %s >/dev/null && dd if=%s of=%s bs=512 count=1 conv=notrunc status=none"
           % (img.name, img.name, img.name, device))


def test_an_ext4_disk_with_a_stray_fat_boot_sector_is_data(fresh_hosts, run_ansible):
    host = machine(fresh_hosts, "dk1", [64])
    disk, = host.disks()
    host.run("mkfs.ext4 -q -F -L precious %s" % disk)
    stray_fat_boot_sector(disk)
    assert host.run("blkid -p %s" % disk, check=False).returncode == 8  # "ambivalent result"
    superblock = digest(disk, 0, 4096)
    rc, result = nixos_disks(run_ansible, host, disks=[disk])
    assert rc == 2, result
    assert result["msg"].startswith("refusing to wipe %s: %s holds several signatures (ext4, vfat; blkid -p: ambivalent result"
                                    % (disk, disk)), result["msg"]
    assert digest(disk, 0, 4096) == superblock
    assert host.run("wipefs --no-act --noheadings -O TYPE %s | sort -u" % disk).stdout.split() == ["ext4", "vfat"]
    # With wipe allowed it is data like any other: wipefs removes every signature first (shown in check mode).
    proc = run_ansible([host.name, "--check", "-m", "ansinix.nixos.nixos_disks", "-a", json.dumps(dict(LAYOUT, disks=[disk], wipe=True))])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.split(" => ", 1)[1])["plan"][0] == "wipefs --all --force %s" % disk
    assert digest(disk, 0, 4096) == superblock


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed-by-the-kernel"])
def test_a_partition_of_data_blkid_cannot_name_is_data(fresh_hosts, run_ansible, listed):
    host = machine(fresh_hosts, "dk2", [64])
    disk, = host.disks()
    host.run("sgdisk -n 1:0:+16M -t 1:8300 %s >/dev/null" % disk)
    # Raw data at the partition's start (sector 2048): what a database or plain dm-crypt leaves there.
    host.run("head -c 1048576 /dev/urandom | dd of=%s bs=1M seek=1 conv=notrunc status=none" % disk)
    host.run("partx --add %s" % disk if listed else "partx --delete %s 2>/dev/null; true" % disk)
    assert os.path.exists(disk + "p1") == listed
    before = [digest(disk, 0, 2 << 20)]
    rc, result = nixos_disks(run_ansible, host, disks=[disk])
    assert rc == 2, result
    if listed:
        assert ("refusing to wipe %s: %sp1 holds data blkid cannot name (gpt partition 1 of type "
                "0fc63daf-8483-4772-8e79-3d69d8477de4). Nothing was changed." % (disk, disk)) in result["msg"]
    else:
        assert ("refusing to wipe %s: %s holds partition 1 in its partition table, which the kernel has not listed"
                % (disk, disk)) in result["msg"]
    assert [digest(disk, 0, 2 << 20)] == before
    assert not host.run("awk '$2 == \"/mnt\"' /proc/mounts").stdout


def test_a_closed_luks_container_is_data(fresh_hosts, run_ansible):
    host = machine(fresh_hosts, "dk3", [64])
    disk, = host.disks()
    host.run("printf secret | cryptsetup luksFormat -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - %s" % disk)
    header = digest(disk, 0, 16 << 20)
    rc, result = nixos_disks(run_ansible, host, disks=[disk])
    assert rc == 2 and result["msg"].startswith("refusing to wipe %s: %s holds crypto_LUKS." % (disk, disk)), result
    assert digest(disk, 0, 16 << 20) == header
    assert host.run("printf secret | cryptsetup luksOpen --test-passphrase --key-file - %s" % disk, check=False).returncode == 0


def test_an_lvm_physical_volume_is_data(fresh_hosts, run_ansible, undo):
    host = machine(fresh_hosts, "dk4", [64])
    disk, = host.disks()
    vg = "%svg" % host.hosts.prefix
    config = shlex.quote(LVM_CONFIG % disk)
    sh("pvcreate -q --config %s %s && vgcreate -q --config %s %s %s" % (config, disk, config, vg, disk))
    undo("vgremove -q -f --config %s %s" % (config, vg))
    label = digest(disk, 0, 1 << 20)
    rc, result = nixos_disks(run_ansible, host, disks=[disk])
    assert rc == 2 and result["msg"].startswith("refusing to wipe %s: %s holds LVM2_member." % (disk, disk)), result
    assert digest(disk, 0, 1 << 20) == label
    assert vg in sh("vgs --noheadings -o vg_name --config %s" % config).stdout.split()


def test_a_btrfs_device_mounted_through_its_other_disk_is_in_use(fresh_hosts, run_ansible, undo):
    """The mount names only the first disk: the second is in use all the same, wipe or not."""
    host = machine(fresh_hosts, "dk5", [300, 300])
    first, second = host.disks()
    host.run("mkfs.btrfs -q -f -L pool -d raid1 -m raid1 %s %s" % (first, second))
    host.run("mkdir -p /srv/pool && mount %s /srv/pool && echo kept > /srv/pool/file && sync" % first)
    undo("nsenter --mount=%s umount /srv/pool" % host.mnt_ns)
    superblock = identity(second)
    assert "TYPE=btrfs" in superblock
    for wipe in (False, True):
        rc, result = nixos_disks(run_ansible, host, disks=[second], wipe=wipe)
        assert rc == 2, result
        assert result["msg"].startswith("%s is in use: %s (a device of btrfs pool on %s, %s, mounted on /srv/pool). "
                                        "Nothing was changed. Wiping does not override this: free it first (umount /srv/pool)"
                                        % ((second, os.path.basename(second)) + tuple(sorted(os.path.basename(d) for d in (first, second))))), result["msg"]
    assert identity(second) == superblock
    host.run("umount /srv/pool && btrfs device scan >/dev/null && mount %s /srv/pool" % second)
    assert host.read_file("/srv/pool/file") == "kept\n"


def test_a_partition_mounted_in_another_mount_namespace_is_in_use(fresh_hosts, run_ansible, undo):
    """The host's /proc/mounts does not show it; the kernel, asked for an exclusive open, does."""
    host = machine(fresh_hosts, "dk6", [64])
    disk, = host.disks()
    host.run("sgdisk -n 1:0:0 -t 1:8300 %s >/dev/null && partx --add %s && mkfs.ext4 -q -F -L elsewhere %sp1" % (disk, disk, disk))
    where = tempfile.mkdtemp(prefix="ansinix-interlock-")
    undo("rmdir %s" % where)
    sh("mount %sp1 %s && echo kept > %s/file" % (disk, where, where))
    undo("umount %s" % where)
    assert not host.run("grep %sp1 /proc/mounts" % disk, check=False).stdout
    superblock = identity(disk + "p1")
    assert "LABEL=elsewhere" in superblock
    for wipe in (False, True):
        rc, result = nixos_disks(run_ansible, host, disks=[disk], wipe=wipe)
        assert rc == 2, result
        assert result["msg"].startswith("%s is in use: %sp1 (the kernel holds it: mounted in another mount namespace"
                                        % (disk, os.path.basename(disk))), result["msg"]
    assert identity(disk + "p1") == superblock
    with open(os.path.join(where, "file"), encoding="ascii") as f:
        assert f.read() == "kept\n"


@needs_dm
def test_an_lvm_volume_mounted_on_the_disk_is_in_use(fresh_hosts, run_ansible, undo):
    host = machine(fresh_hosts, "dk7", [128])
    disk, = host.disks()
    host.run("sgdisk -n 1:0:0 -t 1:8e00 %s >/dev/null && partx --add %s" % (disk, disk))
    vg = "%sdata" % host.hosts.prefix
    config = shlex.quote(LVM_CONFIG % (disk + "p1"))
    env = {"DM_DISABLE_UDEV": "1"}
    sh("pvcreate -q --config %s %sp1 && vgcreate -q --config %s %s %sp1 && lvcreate -q -Zn --config %s -L 32M -n lv %s"
       % (config, disk, config, vg, disk, config, vg), env=env)
    undo("vgremove -q -f --config %s %s" % (config, vg))
    undo("vgchange -q -an --config %s %s" % (config, vg))
    dm = kernel_name("/dev/mapper/%s-lv" % vg)
    host.run("mkfs.ext4 -q /dev/mapper/%s-lv && mkdir -p /srv/lv && mount /dev/mapper/%s-lv /srv/lv && echo kept > /srv/lv/file"
             % (vg, vg))
    undo("nsenter --mount=%s umount /srv/lv" % host.mnt_ns)
    before = [digest(disk + "p1"), identity("/dev/mapper/%s-lv" % vg)]
    for wipe in (False, True):
        rc, result = nixos_disks(run_ansible, host, disks=[disk], wipe=wipe)
        assert rc == 2, result
        assert result["msg"].startswith("%s is in use: %sp1 -> %s (%s-lv, mounted on /srv/lv). Nothing was changed. "
                                        "Wiping does not override this: free it first (umount /srv/lv; vgchange -an %s)"
                                        % (disk, os.path.basename(disk), dm, vg, vg)), result["msg"]
    assert [digest(disk + "p1"), identity("/dev/mapper/%s-lv" % vg)] == before
    assert host.read_file("/srv/lv/file") == "kept\n"


@needs_dm
def test_an_open_luks_container_is_in_use(fresh_hosts, run_ansible, undo):
    host = machine(fresh_hosts, "dk8", [64])
    disk, = host.disks()
    name = "%scrypt" % host.hosts.prefix
    sh("printf secret | cryptsetup luksFormat -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - %s && "
       "printf secret | cryptsetup open --key-file - %s %s" % (disk, disk, name), env={"DM_DISABLE_UDEV": "1"})
    undo("cryptsetup close %s" % name)
    dm = kernel_name("/dev/mapper/%s" % name)
    header = digest(disk, 0, 16 << 20)
    for wipe in (False, True):
        rc, result = nixos_disks(run_ansible, host, disks=[disk], wipe=wipe)
        assert rc == 2, result
        assert result["msg"].startswith("%s is in use: %s -> %s (%s). Nothing was changed. Wiping does not override this: "
                                        "free it first (cryptsetup close %s)" % (disk, os.path.basename(disk), dm, name, name)), result["msg"]
    assert digest(disk, 0, 16 << 20) == header
