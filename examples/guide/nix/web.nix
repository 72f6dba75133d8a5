# The server's whole system, as /etc/nixos/configuration.nix would describe it.
{ pkgs, ... }:
{
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
  system.stateVersion = "24.05";
}
