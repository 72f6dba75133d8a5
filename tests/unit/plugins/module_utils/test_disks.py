"""The disk layout planner and the disk interlock's classification: pure functions, no disks touched."""
import json

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils import disk_interlock as interlock
from ansible_collections.ansinix.nixos.plugins.module_utils import disks
from ansible_collections.ansinix.nixos.plugins.module_utils.disk_interlock import DiskError
from ansible_collections.ansinix.nixos.plugins.module_utils.disks import LayoutError


def layout(**params):
    base = {"disks": ["/dev/sda"], "partitions": [{"label": "root", "fs": "ext4", "mount": "/"}]}
    base.update(params)
    return disks.normalize(base, efi_firmware=False)


def test_sizes():
    assert disks.parse_size("512M", "x") == 512
    assert disks.parse_size("8G", "x") == 8192
    assert disks.parse_size("1T", "x") == 1048576
    assert disks.parse_size("100%", "x") is None
    with pytest.raises(LayoutError, match="not a size like 512M"):
        disks.parse_size("lots", "partitions[0]")


def test_partition_names_follow_the_kernel():
    assert disks.partition_path("/dev/sda", 2) == "/dev/sda2"
    assert disks.partition_path("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
    assert disks.partition_path("/dev/loop3", 1) == "/dev/loop3p1"


def test_hetzner_dedicated_mdadm_raid1_bios():
    lay = layout(disks=["/dev/nvme0n1", "/dev/nvme1n1"], boot="bios",
                 partitions=[{"label": "swap", "size": "8G", "fs": "swap"}, {"label": "root", "fs": "ext4", "mount": "/"}])
    assert lay["raid"] == "mdadm"
    assert disks.partition_table(lay) == [(1, "BIOS", 1, "ef02"), (2, "swap", 8192, "fd00"), (3, "root", None, "fd00")]
    steps = [" ".join(s) for s in disks.plan(lay, "/mnt")]
    assert "sgdisk --zap-all /dev/nvme0n1" in steps
    assert ("mdadm --create /dev/md/root --run --level=1 --raid-devices=2 --homehost=any --name=root "
            "/dev/nvme0n1p3 /dev/nvme1n1p3") in steps
    assert "mkfs.ext4 -q -F -L root /dev/md/root" in steps
    assert "mkswap -L swap /dev/md/swap" in steps
    assert steps[-1] == "mount -t ext4 /dev/md/root /mnt"
    hw = disks.hardware(lay)
    assert hw["file_systems"] == {"/": {"device": "/dev/disk/by-label/root", "fsType": "ext4", "options": []}}
    assert hw["grub_devices"] == ["/dev/nvme0n1", "/dev/nvme1n1"]
    assert hw["mdadm_arrays"] == ["/dev/md/swap", "/dev/md/root"]
    assert hw["swap_devices"] == [{"device": "/dev/disk/by-label/swap"}]


def test_efi_btrfs_raid1_mounts_parents_first():
    lay = disks.normalize({"disks": ["/dev/sda", "/dev/sdb"], "raid": "btrfs", "partitions": [
        {"label": "root", "fs": "btrfs", "mount": "/", "mount_options": ["compress=zstd"]}]}, efi_firmware=True)
    assert lay["boot"] == "efi"
    steps = [" ".join(s) for s in disks.plan(lay, "/mnt")]
    assert "mkfs.btrfs -q -f -L root -d raid1 -m raid1 /dev/sda2 /dev/sdb2" in steps
    root = steps.index("mount -t btrfs -o compress=zstd /dev/sda2 /mnt")
    assert root < steps.index("mount -t vfat -o umask=0077,nofail /dev/sda1 /mnt/boot")
    assert root < steps.index("mount -t vfat -o umask=0077,nofail /dev/sdb1 /mnt/boot-fallback")


def test_two_disk_efi_gives_each_disk_an_esp_of_its_own():
    """Each ESP has its own partition name and FAT label, and its own mount point for GRUB's mirroredBoots."""
    lay = disks.normalize({"disks": ["/dev/nvme0n1", "/dev/nvme1n1"], "raid": "mdadm", "partitions": [
        {"label": "root", "fs": "ext4", "mount": "/"}]}, efi_firmware=True)
    assert disks.partition_table(lay, 0) == [(1, "ESP0", 512, "ef00"), (2, "root", None, "fd00")]
    assert disks.partition_table(lay, 1) == [(1, "ESP1", 512, "ef00"), (2, "root", None, "fd00")]
    steps = [" ".join(s) for s in disks.plan(lay, "/mnt")]
    assert "sgdisk -n 1:0:+512M -t 1:ef00 -c 1:ESP0 -n 2:0:0 -t 2:fd00 -c 2:root /dev/nvme0n1" in steps
    assert "sgdisk -n 1:0:+512M -t 1:ef00 -c 1:ESP1 -n 2:0:0 -t 2:fd00 -c 2:root /dev/nvme1n1" in steps
    assert "mkfs.vfat -F 32 -n ESP0 /dev/nvme0n1p1" in steps and "mkfs.vfat -F 32 -n ESP1 /dev/nvme1n1p1" in steps
    hw = disks.hardware(lay)
    assert hw["esp_devices"] == ["/dev/nvme0n1p1", "/dev/nvme1n1p1"] and hw["esp_mounts"] == ["/boot", "/boot-fallback"]
    assert hw["file_systems"]["/boot"] == {"device": "/dev/disk/by-partlabel/ESP0", "fsType": "vfat", "options": ["umask=0077", "nofail"]}
    assert hw["file_systems"]["/boot-fallback"] == {
        "device": "/dev/disk/by-partlabel/ESP1", "fsType": "vfat", "options": ["umask=0077", "nofail"]}
    seen = {"/dev/nvme0n1p1": {"PART_ENTRY_NAME": "ESP0"}, "/dev/nvme1n1p1": {"PART_ENTRY_NAME": "ESP0"},
            "/dev/nvme0n1p2": {"PART_ENTRY_NAME": "root"}, "/dev/nvme1n1p2": {"PART_ENTRY_NAME": "root"},
            "/dev/md/root": {"TYPE": "ext4", "LABEL": "root"}}
    assert not disks.applied(lay, lambda d: seen.get(d, {}))  # both ESPs named alike: the old layout, not this one
    seen["/dev/nvme1n1p1"]["PART_ENTRY_NAME"] = "ESP1"
    assert disks.applied(lay, lambda d: seen.get(d, {}))


def test_esp_labels_and_mounts_for_one_and_three_disks():
    one = disks.normalize({"disks": ["/dev/sda"], "partitions": [{"label": "root", "mount": "/"}]}, efi_firmware=True)
    assert disks.partition_table(one)[0][1] == "ESP" and disks.esp_mounts(one) == ["/boot"]
    assert disks.hardware(one)["file_systems"]["/boot"] == {"device": "/dev/disk/by-partlabel/ESP", "fsType": "vfat", "options": ["umask=0077"]}
    three = disks.normalize({"disks": ["/dev/sda", "/dev/sdb", "/dev/sdc"], "partitions": [{"label": "root", "mount": "/"}]},
                            efi_firmware=True)
    assert [disks.esp_label(three, i) for i in range(3)] == ["ESP0", "ESP1", "ESP2"]
    assert disks.esp_mounts(three) == ["/boot", "/boot-fallback", "/boot-fallback2"]
    # FAT labels are upper case and at most 11 characters.
    assert all(len(disks.esp_label(three, i)) <= 11 and disks.esp_label(three, i).isupper() for i in range(3))
    assert disks.hardware(disks.normalize({"disks": ["/dev/sda", "/dev/sdb"], "boot": "bios", "partitions": [
        {"label": "root", "mount": "/"}]}, efi_firmware=True))["esp_mounts"] == []


def test_wipes_signatures_and_stops_arrays_first():
    lay = layout()
    steps = disks.plan(lay, "/mnt", wipe_devices=["/dev/sda1", "/dev/sda"], stop_arrays=["/dev/md127"])
    assert steps[:3] == [["mdadm", "--stop", "/dev/md127"], ["wipefs", "--all", "--force", "/dev/sda1"],
                         ["wipefs", "--all", "--force", "/dev/sda"]]


@pytest.mark.parametrize("params, message", [
    ({"disks": []}, "disks is empty"),
    ({"disks": ["sda"]}, "'sda' is not a device path"),
    ({"disks": ["/dev/sda", "/dev/sdb"], "raid": "none"}, "raid=none"),
    ({"raid": "mdadm"}, "give two disks or more"),
    ({"partitions": [{"label": "data", "mount": "/srv"}]}, "no partition is mounted at /"),
    ({"partitions": [{"label": "a", "mount": "/", "size": "100%"}, {"label": "b", "mount": "/srv"}]}, "only the last partition"),
    ({"partitions": [{"label": "root", "mount": "/", "fs": "zfs"}]}, "fs 'zfs' is not one of"),
    ({"partitions": [{"label": "a-very-long-xfs-label", "mount": "/", "fs": "xfs"}]}, "longer than xfs takes"),
    ({"partitions": [{"label": "root", "mount": "/", "sise": "1G"}]}, "unknown key"),
    ({"partitions": [{"label": "ESP", "mount": "/"}]}, "reserved for the boot partition"),
    ({"partitions": [{"label": "esp1", "mount": "/"}]}, "reserved for the boot partition"),
    ({"disks": ["/dev/sda", "/dev/sdb"], "boot": "efi",
      "partitions": [{"label": "fb", "size": "1G", "mount": "/boot-fallback"}, {"label": "root", "mount": "/"}]},
     "boot=efi mounts each disk's ESP at /boot, /boot-fallback; drop the partition mounted at /boot-fallback"),
    ({"partitions": [{"label": "sw", "fs": "swap", "size": "1G", "mount": "/swap"}, {"label": "root", "mount": "/"}]}, "has no mount point"),
    ({"disks": ["/dev/sda", "/dev/sdb"], "raid": "btrfs"}, "raid=btrfs mirrors btrfs file systems only"),
])
def test_bad_layouts_say_what_to_change(params, message):
    with pytest.raises(LayoutError, match=message):
        layout(**params)


def test_applied_compares_partition_names_and_labels():
    lay = layout(boot="bios")
    seen = {"/dev/sda1": {"PART_ENTRY_NAME": "BIOS"}, "/dev/sda2": {"PART_ENTRY_NAME": "root", "TYPE": "ext4", "LABEL": "root"}}
    assert disks.applied(lay, lambda d: seen.get(d, {}))
    seen["/dev/sda2"]["LABEL"] = "old"
    assert not disks.applied(lay, lambda d: seen.get(d, {}))


def test_a_script_layout_keeps_the_disks_checked_and_the_command():
    lay = disks.normalize({"disks": ["/dev/sda", "/dev/sdb"], "script": "/nix/store/x-disko", "script_args": ["--yes"]}, efi_firmware=True)
    assert lay == {"disks": ["/dev/sda", "/dev/sdb"], "boot": "efi", "raid": "script", "script": ["/nix/store/x-disko", "--yes"]}
    with pytest.raises(LayoutError, match="'sda' is not a device path"):
        disks.normalize({"disks": ["sda"], "script": "/nix/store/x-disko"}, efi_firmware=False)
    with pytest.raises(LayoutError, match="script and partitions are mutually exclusive"):
        disks.normalize({"disks": ["/dev/sda"], "script": "/s", "partitions": [{"label": "root", "mount": "/"}]}, efi_firmware=False)


# -- the interlock: what blkid, wipefs and sysfs say, classified --------------------------------------

AMBIVALENT = "blkid: /dev/sdb: ambivalent result (probably more filesystems on the device, use wipefs(8) to see more details)\n"


def test_only_blkids_nothing_found_is_empty():
    assert interlock.parse_blkid("/dev/sdb", 0, "DEVNAME=/dev/sdb\nTYPE=ext4\nLABEL=a=b\n", "") == (
        0, {"DEVNAME": "/dev/sdb", "TYPE": "ext4", "LABEL": "a=b"}, "")
    assert interlock.parse_blkid("/dev/sdb", 2, "", "") == (2, {}, "exit 2, no output")
    assert interlock.parse_blkid("/dev/sdb", 8, "", AMBIVALENT)[2].startswith("ambivalent result (probably")
    with pytest.raises(DiskError, match=r"^cannot tell what /dev/sdb holds: blkid -p failed \(exit 4\): "
                                        r"Input/output error\. Nothing was changed\."):
        interlock.parse_blkid("/dev/sdb", 4, "", "blkid: /dev/sdb: Input/output error\n")


def test_wipefs_is_the_second_opinion():
    out = json.dumps({"signatures": [{"device": "sdb", "offset": "0x0", "type": "vfat"},
                                     {"device": "sdb", "offset": "0x438", "type": "ext4"}]})
    assert interlock.parse_wipefs("/dev/sdb", 0, out, "") == ["vfat", "ext4"]
    assert interlock.parse_wipefs("/dev/sdb", 0, "", "") == []
    with pytest.raises(DiskError, match=r"wipefs --no-act failed \(exit 1\): probing initialization failed"):
        interlock.parse_wipefs("/dev/sdb", 1, "", "wipefs: error: /dev/sdb: probing initialization failed\n")
    with pytest.raises(DiskError, match="wipefs --no-act failed"):
        interlock.parse_wipefs("/dev/sdb", 0, "not json", "")


@pytest.mark.parametrize("blkid, signatures, what", [
    ((8, {}, "ambivalent result"), ["vfat", "ext4", "vfat"], "several signatures (ext4, vfat; blkid -p: ambivalent result)"),
    ((0, {"TYPE": "ext4", "LABEL": "precious"}, ""), ["ext4"], "ext4 labelled precious"),
    ((0, {"TYPE": "crypto_LUKS"}, ""), ["crypto_LUKS"], "crypto_LUKS"),
    ((0, {"PART_ENTRY_SCHEME": "gpt", "PART_ENTRY_NUMBER": "2", "PART_ENTRY_TYPE": "0fc63daf"}, ""), [],
     "data blkid cannot name (gpt partition 2 of type 0fc63daf)"),
    ((0, {"PTTYPE": "gpt"}, ""), ["PMBR", "gpt"], None),
    ((0, {"PTTYPE": "gpt"}, ""), ["gpt", "LVM2_member"], "signatures LVM2_member that wipefs finds"),
    ((2, {}, ""), ["zfs_member"], "signatures zfs_member that wipefs finds"),
    ((2, {}, ""), [], None),
], ids=["ambivalent", "fs", "luks", "unnamed-partition", "empty-table", "table-and-more", "blkid-missed", "empty"])
def test_what_a_device_holds(blkid, signatures, what):
    assert interlock.holds("/dev/sdb", blkid, signatures) == what


def test_ambivalent_and_nothing_to_show_refuses():
    with pytest.raises(DiskError, match=r"^cannot tell what /dev/sdb holds: blkid -p says ambivalent result, and wipefs "
                                        r"finds no signature\. Nothing was changed\."):
        interlock.holds("/dev/sdb", (8, {}, "ambivalent result"), [])


def test_partitions_the_kernel_has_not_listed():
    assert interlock.unlisted_partitions([1, 2, 3], [1]) == [2, 3]
    assert interlock.unlisted_partitions([1, 2], [2, 1]) == []


@pytest.mark.parametrize("name, vg", [("vg-lv", "vg"), ("my--vg-root", "my-vg"), ("vg-my--lv", "vg"), ("odd", "odd")])
def test_lvm_volume_group_of_a_device_mapper_name(name, vg):
    assert interlock.lvm_volume_group(name) == vg


class FakeHost:
    """A sysfs, /proc and /dev tree as the kernel shows stacked devices, under tmp_path."""

    def __init__(self, tmp_path):
        self.root = tmp_path
        self.mountinfo = []
        for path in ("sys/class/block", "sys/block", "proc/self", "dev"):
            (tmp_path / path).mkdir(parents=True, exist_ok=True)
        self.numbers = 0

    def block(self, name, parent=None, holders=(), dm=None, md=None):
        self.numbers += 1
        base = self.root / "sys/class/block" / name
        (base / "holders").mkdir(parents=True)
        (base / "dev").write_text("%d:%d\n" % (7 if parent or not (dm or md) else 253, self.numbers))
        for holder in holders:
            (base / "holders" / holder).mkdir()
        if dm:
            (base / "dm").mkdir()
            (base / "dm/name").write_text(dm[0] + "\n")
            (base / "dm/uuid").write_text(dm[1] + "\n")
        if md:
            (base / "md").mkdir()
            (base / "md/array_state").write_text(md + "\n")
        if parent:
            (self.root / "sys/block" / parent / name).mkdir(parents=True)
            (base / "partition").write_text(name[-1] + "\n")
        else:
            (self.root / "sys/block" / name).mkdir(parents=True, exist_ok=True)
        (self.root / "dev" / name).write_text("")
        return (base / "dev").read_text().strip()

    def mount(self, number, where):
        self.mountinfo.append("36 25 %s / %s rw,relatime shared:1 - ext4 /dev/nowhere rw" % (number, where))

    def probe(self, run=None):
        (self.root / "proc/self/mountinfo").write_text("\n".join(self.mountinfo) + "\n")
        (self.root / "proc/swaps").write_text("Filename Type Size Used Priority\n")
        return interlock.HostProbe(run or (lambda argv: (2, "", "")), sysfs=str(self.root / "sys"),
                                   proc=str(self.root / "proc"), dev=str(self.root / "dev"))


def test_an_lvm_volume_mounted_on_a_partition_is_in_use(tmp_path):
    host = FakeHost(tmp_path)
    host.block("vdz")
    host.block("vdz1", parent="vdz", holders=["dm-0"])
    host.mount(host.block("dm-0", dm=("data-lv", "LVM-abc")), "/mnt/x")
    disk = str(tmp_path / "dev/vdz")
    with pytest.raises(DiskError) as refused:
        interlock.check(host.probe(), [disk], wipe=True)
    assert str(refused.value) == (
        "%s is in use: vdz1 -> dm-0 (data-lv, mounted on /mnt/x). Nothing was changed. Wiping does not override this: "
        "free it first (umount /mnt/x; vgchange -an data) and run again" % disk)


def test_a_chain_is_walked_to_its_top_and_freed_from_there(tmp_path):
    host = FakeHost(tmp_path)
    host.block("vdz", holders=["md0"])
    host.block("md0", md="clean", holders=["dm-1"])
    host.block("dm-1", dm=("secret", "CRYPT-LUKS2-abc-secret"))
    findings, idle = host.probe().in_use([str(tmp_path / "dev/vdz")])
    assert idle == []
    assert findings == [(str(tmp_path / "dev/vdz"), "vdz -> md0 (md array /dev/md0, clean) -> dm-1 (secret)",
                         ["cryptsetup close secret", "mdadm --stop /dev/md0"])]


def test_an_idle_md_array_is_stopped_with_wipe_and_its_members_are_data(tmp_path):
    host = FakeHost(tmp_path)
    host.block("vdz")
    host.block("vdz2", parent="vdz", holders=["md127"])
    host.block("md127", md="clean")

    def blkid(argv):
        if argv[0] == "blkid" and argv[-1].endswith("vdz2"):
            return 0, "TYPE=linux_raid_member\nLABEL=rescue:1\n", ""
        if argv[0] == "partx":
            return 0, "2\n", ""
        return (0, "PTTYPE=gpt\n", "") if argv[0] == "blkid" else (0, "", "")
    disk = str(tmp_path / "dev/vdz")
    with pytest.raises(DiskError, match="refusing to wipe .*vdz: .*vdz2 holds linux_raid_member labelled rescue:1"):
        interlock.check(host.probe(blkid), [disk], wipe=False)
    found, arrays = interlock.check(host.probe(blkid), [disk], wipe=True)
    assert found == [(str(tmp_path / "dev/vdz2"), "linux_raid_member labelled rescue:1")]
    assert arrays == [str(tmp_path / "dev/md127")]


def test_a_mounted_md_array_is_in_use(tmp_path):
    host = FakeHost(tmp_path)
    host.block("vdz", holders=["md0"])
    host.mount(host.block("md0", md="active"), "/srv")
    findings, idle = host.probe().in_use([str(tmp_path / "dev/vdz")])
    assert idle == [] and findings[0][1:] == ("vdz -> md0 (md array /dev/md0, active, mounted on /srv)",
                                              ["umount /srv", "mdadm --stop /dev/md0"])


def test_a_device_of_a_mounted_btrfs_and_of_an_imported_zfs_pool_is_in_use(tmp_path):
    host = FakeHost(tmp_path)
    host.block("vdy")
    host.mount(host.block("vdz"), "/srv/pool")
    (tmp_path / "sys/fs/btrfs/f00d/devices/vdz").mkdir(parents=True)
    (tmp_path / "sys/fs/btrfs/f00d/devices/vdy").mkdir(parents=True)
    (tmp_path / "proc/spl/kstat/zfs/tank").mkdir(parents=True)
    probe = host.probe(lambda argv: (0, "TYPE=btrfs\nUUID=f00d\nLABEL=pool\n", ""))
    findings, _idle = probe.in_use([str(tmp_path / "dev/vdy")])
    assert findings[0][1:] == ("vdy (a device of btrfs pool on vdy, vdz, mounted on /srv/pool)", ["umount /srv/pool"])
    probe = host.probe(lambda argv: (0, "TYPE=zfs_member\nLABEL=tank\n", ""))
    findings, _idle = probe.in_use([str(tmp_path / "dev/vdy")])
    assert findings[0][1:] == ("vdy (a vdev of the imported ZFS pool tank)", ["zpool export tank"])


def test_a_partition_without_a_device_node_cannot_be_checked(tmp_path):
    host = FakeHost(tmp_path)
    host.block("vdz")
    host.block("vdz1", parent="vdz")
    (tmp_path / "dev/vdz1").unlink()
    with pytest.raises(DiskError, match=r"vdz1 holds: the kernel lists it but there is no device node"):
        interlock.check(host.probe(lambda argv: (0, "", "")), [str(tmp_path / "dev/vdz")], wipe=True)
