"""The disk layout planner: pure functions, no disks touched."""
import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils import disks
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
    assert steps.index("mount -t btrfs -o compress=zstd /dev/sda2 /mnt") < steps.index("mount -t vfat -o umask=0077 /dev/sda1 /mnt/boot")
    assert disks.hardware(lay)["file_systems"]["/boot"]["device"] == "/dev/disk/by-partlabel/ESP"


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
