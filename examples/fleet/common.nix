# What every machine of the fleet has.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
  # users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA... you@laptop" ];

  environment.systemPackages = [ pkgs.htop pkgs.curl ];
  system.stateVersion = "24.05";
}
