# What every machine of the fleet has.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  # As your servers' /etc/nixos/configuration.nix has them: the boot loader, and stateVersion, the release
  # they were first installed with (it stays when nixpkgs moves to a newer release).
  boot.loader.grub.enable = true;
  boot.loader.grub.device = "/dev/sda";
  system.stateVersion = "26.11";

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
  # users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA... you@laptop" ];

  # Ansible runs its modules with the Python of the host (ansible_python_interpreter in inventory.yml).
  environment.systemPackages = [ pkgs.python3 pkgs.htop pkgs.curl ];
}
