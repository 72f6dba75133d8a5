# Replace with the one `nixos-generate-config` wrote on your server (/etc/nixos/hardware-configuration.nix).
# It holds the disks and drivers; the boot loader is in configuration.nix (here common.nix).
{ lib, ... }:
{
  boot.initrd.availableKernelModules = [ "ahci" "nvme" "sd_mod" ];
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  networking.useDHCP = lib.mkDefault true;
}
