# The server's whole system, as /etc/nixos/configuration.nix would describe it.
{ pkgs, ... }:
{
  # Keep these as the server's own /etc/nixos/configuration.nix has them: its boot loader (NixOS builds no
  # system without one), its network settings (other ones can cut the server off), and stateVersion, the
  # release it was first installed with. stateVersion stays when nixpkgs moves to a newer release.
  boot.loader.grub.enable = true;
  boot.loader.grub.device = "/dev/sda";
  system.stateVersion = "26.11";

  networking.hostName = "web";
  networking.firewall.allowedTCPPorts = [ 80 ];

  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = [
    "ssh-ed25519 AAAA... you@laptop" # the key you log in with
  ];

  services.nginx = {
    enable = true;
    virtualHosts.default.locations."/".return = "200 'hello from NixOS'";
  };

  # Ansible runs its modules with the server's Python.
  environment.systemPackages = [ pkgs.python3 pkgs.htop ];
}
