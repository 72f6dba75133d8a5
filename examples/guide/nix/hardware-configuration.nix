# Replace with the one `nixos-generate-config` wrote on your server (/etc/nixos/hardware-configuration.nix).
{
  boot.loader.grub.device = "/dev/sda";
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
}
