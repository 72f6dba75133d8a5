"""examples/bootstrap/nix: the Nix files parse, and facts.nix turns the facts file the bootstrap roles write into
the NixOS settings the guide (docs/bootstrap.md) promises, evaluated with Nix alone (no nixpkgs here)."""
import json
import os
import subprocess

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils import disks
from ansinix_test import REPO_ROOT

EXAMPLE = os.path.join(REPO_ROOT, "examples", "bootstrap", "nix")
NIX_FILES = sorted(n for n in os.listdir(EXAMPLE) if n.endswith(".nix"))


def network(**extra):
    value = {"interface": "eth0", "mac": "a8:a1:59:00:00:01",
             "ipv4": {"address": "203.0.113.20", "prefix_length": "26", "gateway": "203.0.113.1"},
             "ipv6": {"address": "2001:db8:1:2::2", "prefix_length": "64", "gateway": "fe80::1"}, "interfaces": []}
    value.update(extra)
    return value


def facts_of(layout, efi=False, **net):
    """A facts file as the rescue_install role writes it, its hardware from the module's own code."""
    return {"hostname": "dedi1", "hardware": disks.hardware(disks.normalize(layout, efi_firmware=efi)), "network": network(**net)}


def evaluate(tmp_path, facts, expression="import %(example)s/facts.nix (builtins.fromJSON (builtins.readFile %(file)s))"):
    path = tmp_path / "hardware.json"
    path.write_text(json.dumps(facts, indent=2))
    proc = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E",
                           expression % {"example": EXAMPLE, "file": path}], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", NIX_FILES)
def test_the_nix_files_parse(name):
    proc = subprocess.run(["nix-instantiate", "--parse", os.path.join(EXAMPLE, name)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_flake_names_the_inventorys_hosts():
    with open(os.path.join(EXAMPLE, "flake.nix"), encoding="utf-8") as f:
        flake = f.read()
    for name in ("dedi1", "cloud1", "deb1"):
        assert '%s = server "%s";' % (name, name) in flake


def test_dedicated_server_mdadm_raid1_bios(tmp_path):
    """The guide's dedicated server: two NVMe disks, BIOS boot, mirrored swap and ext4 root, static network."""
    facts = facts_of({"disks": ["/dev/nvme0n1", "/dev/nvme1n1"], "boot": "bios", "raid": "mdadm",
                      "partitions": [{"label": "swap", "size": "16G", "fs": "swap"},
                                     {"label": "root", "size": "100%", "fs": "ext4", "mount": "/"}]})
    config = evaluate(tmp_path, facts)
    assert config["fileSystems"] == {"/": {"device": "/dev/disk/by-label/root", "fsType": "ext4", "options": ["defaults"]}}
    assert config["swapDevices"] == [{"device": "/dev/disk/by-label/swap"}]
    grub = config["boot"]["loader"]["grub"]
    assert grub["devices"] == ["/dev/nvme0n1", "/dev/nvme1n1"] and not grub["efiSupport"]
    assert config["boot"]["swraid"] == {"enable": True, "mdadmConf": "MAILADDR root"}
    assert config["networking"] == {"useDHCP": False, "useNetworkd": True}
    uplink = config["systemd"]["network"]["networks"]["10-uplink"]
    assert uplink["matchConfig"] == {"MACAddress": "a8:a1:59:00:00:01"}
    assert uplink["address"] == ["203.0.113.20/26", "2001:db8:1:2::2/64"]
    # Route sections as NixOS 24.11 and later want them: the keys themselves, no routeConfig level.
    assert uplink["routes"] == [{"Gateway": "203.0.113.1", "GatewayOnLink": True}, {"Gateway": "fe80::1", "GatewayOnLink": True}]


def test_cloud_server_one_disk_btrfs_ipv4_only(tmp_path):
    """A Cloud server: one disk, btrfs with options, no swap, no RAID; the /32 with its off-subnet gateway."""
    facts = facts_of({"disks": ["/dev/sda"], "boot": "bios",
                      "partitions": [{"label": "root", "fs": "btrfs", "mount": "/", "mount_options": ["compress=zstd"]}]},
                     ipv4={"address": "203.0.113.30", "prefix_length": "32", "gateway": "172.31.1.1"},
                     ipv6={"address": "", "prefix_length": "", "gateway": ""})
    config = evaluate(tmp_path, facts)
    assert config["fileSystems"]["/"] == {"device": "/dev/disk/by-label/root", "fsType": "btrfs", "options": ["compress=zstd"]}
    assert config["swapDevices"] == [] and config["boot"]["swraid"]["enable"] is False
    assert config["boot"]["loader"]["grub"]["devices"] == ["/dev/sda"]
    uplink = config["systemd"]["network"]["networks"]["10-uplink"]
    assert uplink["address"] == ["203.0.113.30/32"]
    assert uplink["routes"] == [{"Gateway": "172.31.1.1", "GatewayOnLink": True}]


def test_efi_esp_at_boot(tmp_path):
    """EFI firmware (boot: auto on an EFI machine): GRUB for EFI, the ESP mounted at /boot."""
    facts = facts_of({"disks": ["/dev/sda"], "partitions": [{"label": "root", "fs": "ext4", "mount": "/"}]}, efi=True)
    config = evaluate(tmp_path, facts)
    assert config["fileSystems"]["/boot"] == {"device": "/dev/disk/by-partlabel/ESP", "fsType": "vfat", "options": ["umask=0077"]}
    grub = config["boot"]["loader"]["grub"]
    assert grub["devices"] == ["nodev"] and grub["efiSupport"] and grub["efiInstallAsRemovable"]
    assert config["boot"]["loader"]["efi"]["efiSysMountPoint"] == "/boot"


def test_two_disk_efi_mirrors_grub_onto_each_esp(tmp_path):
    """Two disks with EFI: an ESP on each, at /boot and /boot-fallback, by its own name; GRUB on both (mirroredBoots),
    at the firmware's fallback path, so that either disk boots alone."""
    facts = facts_of({"disks": ["/dev/nvme0n1", "/dev/nvme1n1"], "raid": "mdadm",
                      "partitions": [{"label": "root", "fs": "ext4", "mount": "/"}]}, efi=True)
    config = evaluate(tmp_path, facts)
    assert config["fileSystems"]["/boot"] == {"device": "/dev/disk/by-partlabel/ESP0", "fsType": "vfat", "options": ["umask=0077", "nofail"]}
    assert config["fileSystems"]["/boot-fallback"] == {
        "device": "/dev/disk/by-partlabel/ESP1", "fsType": "vfat", "options": ["umask=0077", "nofail"]}
    grub = config["boot"]["loader"]["grub"]
    assert grub["devices"] == [] and grub["efiSupport"] and grub["efiInstallAsRemovable"]
    assert grub["mirroredBoots"] == [{"path": "/boot", "devices": ["nodev"], "efiSysMountPoint": "/boot"},
                                     {"path": "/boot-fallback", "devices": ["nodev"], "efiSysMountPoint": "/boot-fallback"}]
    assert "canTouchEfiVariables" not in config["boot"]["loader"]["efi"]  # NixOS's default, false: the removable install needs it


def test_facts_of_an_older_two_disk_efi_install_keep_their_one_esp(tmp_path):
    """A facts file written before the ESPs were mirrored has no esp_mounts: the configuration stays as it was."""
    facts = facts_of({"disks": ["/dev/sda", "/dev/sdb"], "raid": "mdadm", "partitions": [{"label": "root", "mount": "/"}]}, efi=True)
    del facts["hardware"]["esp_mounts"], facts["hardware"]["file_systems"]["/boot-fallback"]
    facts["hardware"]["file_systems"]["/boot"]["device"] = "/dev/disk/by-partlabel/ESP"
    config = evaluate(tmp_path, facts)
    grub = config["boot"]["loader"]["grub"]
    assert grub["devices"] == ["nodev"] and "mirroredBoots" not in grub and sorted(config["fileSystems"]) == ["/", "/boot"]


def test_infect_facts_with_an_esp_at_boot_efi(tmp_path):
    """What the infect role writes for an EFI Debian Cloud image: the running root and its ESP at /boot/efi."""
    hardware = {"boot": "efi", "raid": "none", "disks": ["/dev/sda"], "grub_devices": [], "esp_devices": ["/dev/sda15"],
                "esp_mount": "/boot/efi", "file_systems": {"/": {"device": "/dev/sda1", "fsType": "ext4", "options": []}},
                "swap_devices": [], "mdadm_arrays": []}
    config = evaluate(tmp_path, {"hostname": "deb1", "hardware": hardware, "network": network()})
    assert config["fileSystems"] == {
        "/": {"device": "/dev/sda1", "fsType": "ext4", "options": ["defaults"]},
        "/boot/efi": {"device": "/dev/sda15", "fsType": "vfat", "options": ["umask=0077"]}}
    assert config["boot"]["loader"]["efi"]["efiSysMountPoint"] == "/boot/efi"


def test_hardware_module_imports_the_facts_and_names_a_missing_file(tmp_path):
    facts = facts_of({"disks": ["/dev/sda"], "boot": "bios", "partitions": [{"label": "root", "fs": "ext4", "mount": "/"}]})
    module = evaluate(tmp_path, facts, "(import %(example)s/hardware.nix %(file)s) { }")
    assert module["imports"][0]["fileSystems"]["/"]["device"] == "/dev/disk/by-label/root"
    assert "nvme" in module["boot"]["initrd"]["availableKernelModules"]
    proc = subprocess.run(["nix-instantiate", "--eval", "--strict", "-E", "(import %s/hardware.nix %s/hosts/nope/hardware.json) { }"
                           % (EXAMPLE, tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "Run the bootstrap playbook" in proc.stderr and "git add" in proc.stderr


def test_disks_laid_out_by_a_disko_script_leave_file_systems_to_disko(tmp_path):
    """With nixos_disk_script, disko's module declares fileSystems and swapDevices; the facts give boot and network."""
    hardware = {"boot": "bios", "raid": "script", "disks": ["/dev/sda"], "grub_devices": ["/dev/sda"], "esp_devices": [],
                "file_systems": {"/": {"device": "/dev/sda2", "fsType": "ext4", "options": []}},
                "swap_devices": [{"device": "/dev/sda3"}], "mdadm_arrays": []}
    config = evaluate(tmp_path, {"hostname": "dedi2", "hardware": hardware, "network": network()})
    assert config["fileSystems"] == {} and config["swapDevices"] == []
    assert config["boot"]["loader"]["grub"]["devices"] == ["/dev/sda"]
    assert config["systemd"]["network"]["networks"]["10-uplink"]["address"] == ["203.0.113.20/26", "2001:db8:1:2::2/64"]
