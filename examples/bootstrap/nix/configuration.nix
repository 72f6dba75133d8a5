# What every server of this directory runs: SSH with your key, Python for Ansible, Hetzner's resolvers.
# Put your services here (or in a file per server), as in /etc/nixos/configuration.nix.
{ pkgs, ... }:
{
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = [
    "ssh-ed25519 AAAA... you@laptop" # the key you log in with: the same one you gave Hetzner
  ];

  # Hetzner's resolvers; the facts file holds addresses and gateways, not name servers.
  networking.nameservers = [ "185.12.64.1" "185.12.64.2" "2a01:4ff:ff00::add:1" ];

  # Ansible runs its modules with the server's Python.
  environment.systemPackages = [ pkgs.python3 ];

  # The release these servers are installed with. Leave it when you move nixpkgs to a newer release later:
  # it keeps the data formats of services as they were at the install.
  system.stateVersion = "26.11";
}
