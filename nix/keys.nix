# NixOS module shipped with ansinix.nixos: a `<name>-key.service` for every key that
# ansinix.nixos.nixos_keys puts on the host, active while the key file exists.
#
#   imports = [ ./ansinix/nix/keys.nix ];   # from the installed collection, or a copy
#   ansinix.keys.db-password = { };          # /run/keys/db-password
#   systemd.services.postgresql = {
#     after = [ "db-password-key.service" ];
#     wants = [ "db-password-key.service" ];
#   };
#
# The unit names are the ones NixOps and colmena give their keys, so configurations written for them
# keep working. How the units behave:
# - A path unit starts `<name>-key.service` as soon as the file exists. Nothing else starts it, so a
#   switch or a boot never waits for a key that has not been sent.
# - A unit that wants it waits (`after`) until the file exists: the service stays "activating" until then.
# - The service is active while the file exists and stops when it is removed (prune, or a reboot that
#   empties /run/keys); units with `bindsTo` or `partOf` on it stop with it.
# - nixos_keys replaces a changed key by a rename and leaves an unchanged one untouched: the file never
#   disappears during a deploy, so the key unit, and the units bound to it, are not bounced.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption types mapAttrs' nameValuePair escapeShellArg literalExpression;
  cfg = config.ansinix.keys;

  keyOptions = { name, config, ... }: {
    options = {
      destDir = mkOption {
        type = types.str;
        default = "/run/keys";
        description = "The directory nixos_keys writes the key to (its dest_dir).";
      };
      path = mkOption {
        type = types.str;
        default = "${config.destDir}/${name}";
        defaultText = literalExpression ''"''${config.destDir}/<name>"'';
        description = "The key file whose presence the unit stands for.";
      };
    };
  };

  keyPath = name: key: nameValuePair "${name}-key" {
    description = "Start ${name}-key.service when ${key.path} exists";
    wantedBy = [ "paths.target" ];
    pathConfig.PathExists = key.path;
  };

  keyService = name: key: let file = escapeShellArg key.path; in nameValuePair "${name}-key" {
    description = "Key ${name} at ${key.path} (written by ansinix.nixos.nixos_keys)";
    path = [ pkgs.coreutils ];
    unitConfig.StartLimitIntervalSec = 0;
    serviceConfig = {
      Type = "simple";
      # Waiting for the key is the start-up of the unit: units ordered after it wait too.
      TimeoutStartSec = "infinity";
      # Once the key is removed the unit goes back to waiting for it.
      Restart = "always";
      RestartSec = "100ms";
    };
    preStart = ''
      while [ ! -e ${file} ]; do sleep 0.5; done
    '';
    # Polling (not inotify's delete_self) on purpose: a key replaced by a rename is still present.
    script = ''
      echo "key ${name} is present"
      while [ -e ${file} ]; do sleep 1; done
      echo "key ${name} was removed"
    '';
  };
in
{
  options.ansinix.keys = mkOption {
    type = types.attrsOf (types.submodule keyOptions);
    default = { };
    example = { db-password = { }; tls-key.destDir = "/run/keys/nginx"; };
    description = ''
      Keys deployed with ansinix.nixos.nixos_keys; each gets a `<name>-key.service` that is active while
      its file exists. Service users reading keys in /run/keys need the group `keys`
      (for example `serviceConfig.SupplementaryGroups = [ "keys" ];`).
    '';
  };

  config = {
    # nixos_keys creates /run/keys as root:keys 0750; NixOS defines the group already, this only makes sure.
    users.groups.keys = { };
    systemd.paths = mapAttrs' keyPath cfg;
    systemd.services = mapAttrs' keyService cfg;
  };
}
