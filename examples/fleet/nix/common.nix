# What every machine of the fleet has.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
  # users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA... you@laptop" ];

  # Ansible runs its modules with the Python of the host (ansible_python_interpreter in inventory.yml).
  environment.systemPackages = [ pkgs.python3 pkgs.htop pkgs.curl ];
  system.stateVersion = "24.05";
}
