"""The examples' NixOS configurations pass what real NixOS checks (option names, assertions), as the stand-in
nixpkgs of the tests (tests/fixtures/mini-nixpkgs) checks it, and the stand-in refuses what NixOS refuses."""
import json
import os
import subprocess

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils import disks
from ansinix_test import REPO_ROOT

STAND_IN = os.path.join(REPO_ROOT, "tests", "fixtures", "mini-nixpkgs")
EXAMPLES = os.path.join(REPO_ROOT, "examples")
RELEASE = "26.11"  # the release the examples pin (nixos-26.11), which the stand-in's systems are named after


def toplevel_name(*modules, cwd=None):
    """The system's name, evaluated through the stand-in's eval-config.nix: the checks run or it fails."""
    expression = "(import %s/nixos/lib/eval-config.nix { modules = [ %s ]; }).config.system.build.toplevel.name" % (
        STAND_IN, " ".join(modules))
    return subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-I", "nixpkgs=" + STAND_IN, "-E", expression],
                          capture_output=True, text=True, check=False, cwd=cwd)


def example(path):
    return os.path.join(EXAMPLES, path)


def test_the_guides_configuration_with_a_generated_hardware_configuration():
    """docs/guide.md: web.nix keeps the boot loader and stateVersion, hardware-configuration.nix has none."""
    proc = toplevel_name(example("guide/nix/web.nix"), example("guide/nix/hardware-configuration.nix"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == "nixos-system-web-" + RELEASE


@pytest.mark.parametrize("name", ["web", "mon"])
def test_the_fleets_configurations(name):
    expression = "(import %s { }).nixosConfigurations.%s.config.system.build.toplevel.name" % (example("fleet/nix/default.nix"), name)
    proc = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-I", "nixpkgs=" + STAND_IN, "-E", expression],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == "nixos-system-%s-%s" % (name, RELEASE)


@pytest.mark.parametrize("layout,efi", [
    ({"disks": ["/dev/nvme0n1", "/dev/nvme1n1"], "boot": "bios", "raid": "mdadm",
      "partitions": [{"label": "swap", "size": "16G", "fs": "swap"}, {"label": "root", "size": "100%", "fs": "ext4", "mount": "/"}]},
     False),
    ({"disks": ["/dev/sda"], "partitions": [{"label": "root", "fs": "ext4", "mount": "/"}]}, True),
    ({"disks": ["/dev/nvme0n1", "/dev/nvme1n1"], "boot": "auto", "raid": "mdadm",
      "partitions": [{"label": "root", "size": "100%", "fs": "ext4", "mount": "/"}]}, True),
], ids=["dedicated-raid1-bios", "cloud-efi", "dedicated-raid1-efi"])
def test_the_bootstrap_configuration_with_the_facts_the_roles_write(tmp_path, layout, efi):
    network = {"interface": "eth0", "mac": "a8:a1:59:00:00:01", "interfaces": [],
               "ipv4": {"address": "203.0.113.20", "prefix_length": "26", "gateway": "203.0.113.1"},
               "ipv6": {"address": "2001:db8:1:2::2", "prefix_length": "64", "gateway": "fe80::1"}}
    facts = tmp_path / "hardware.json"
    facts.write_text(json.dumps({"hostname": "dedi1", "network": network,
                                 "hardware": disks.hardware(disks.normalize(layout, efi_firmware=efi))}))
    proc = toplevel_name(example("bootstrap/nix/configuration.nix"),
                         "(import %s %s)" % (example("bootstrap/nix/hardware.nix"), facts), '{ networking.hostName = "dedi1"; }')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == "nixos-system-dedi1-" + RELEASE


BOOT = '{ boot.loader.grub.device = "/dev/sda"; }'
ROOT = '{ fileSystems."/".device = "/dev/sda1"; }'
STATE = '{ system.stateVersion = "%s"; }' % RELEASE


@pytest.mark.parametrize("modules,message", [
    ([BOOT, ROOT, STATE, '{ services.openssh.permitRootLogin = "no"; }'],
     "The option `services.openssh.permitRootLogin' does not exist."),
    ([BOOT, ROOT, STATE, "{ sound.enable = true; }"], "The option `sound' does not exist."),
    ([BOOT, ROOT, STATE, '{ systemd.network.networks.uplink.routes = [ { routeConfig.Gateway = "fe80::1"; } ]; }'],
     "systemd.network.networks.uplink.routes: Using 'routeConfig' is deprecated!"),
    ([ROOT, STATE], "You must set the option \u2018boot.loader.grub.devices\u2019"),
    ([BOOT, STATE], "does not specify your root file system"),
    ([BOOT, ROOT], "system.stateVersion is not set"),
    ([ROOT, STATE, '{ boot.loader.grub = { devices = [ "nodev" ]; efiSupport = true; efiInstallAsRemovable = true; }; '
                   'boot.loader.efi.canTouchEfiVariables = true; }'],
     "If you wish to to use boot.loader.grub.efiInstallAsRemovable, then turn off boot.loader.efi.canTouchEfiVariables"),
    ([ROOT, STATE, '{ boot.loader.grub.efiInstallAsRemovable = true; boot.loader.grub.devices = [ "/dev/sda" ]; }'],
     "then turn on boot.loader.grub.efiSupport"),
    ([ROOT, STATE, '{ boot.loader.grub.mirroredBoots = [ { path = "/boot"; devices = [ "nodev" ]; } { path = "/boot-fallback"; } ]; }'],
     "A boot path cannot have an empty devices string in /boot-fallback"),
    ([ROOT, STATE, '{ boot.loader.grub.mirroredBoots = [ { path = "boot"; devices = [ "sda" ]; efiSysMountPoint = "boot"; } ]; }'],
     "Boot paths must be absolute, not boot"),
    ([ROOT, STATE, '{ boot.loader.grub.devices = [ "/dev/sda" ]; boot.loader.grub.mirroredBoots = [ '
                   '{ path = "/boot-fallback"; devices = [ "/dev/sda" ]; } ]; }'],
     "You cannot have duplicated devices in mirroredBoots"),
], ids=["renamed-option", "removed-option", "routeConfig", "no-boot-loader", "no-root-file-system", "no-state-version",
        "removable-and-nvram", "removable-without-efi", "mirror-without-devices", "relative-boot-path", "duplicated-devices"])
def test_the_stand_in_refuses_what_nixos_refuses(modules, message):
    proc = toplevel_name(*modules)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
