# NixOS module shipped with ansinix.nixos: a `<name>-key.service` for every key that
# ansinix.nixos.nixos_keys puts on the host, active while the key file exists.
#
#   imports = [ ./ansinix/nix/keys.nix ];   # from the installed collection, or a copy
#   ansinix.keys.db-password = { user = "postgres"; };
#   systemd.services.postgresql = {
#     after = [ "db-password-key.service" ];
#     wants = [ "db-password-key.service" ];
#   };
#
# The unit names are the ones NixOps and colmena give their keys, so configurations written for
# them keep working. A unit waits (without a time limit) until its file appears, stays active while
# it exists, and stops when it is removed (prune, or a reboot empties /run/keys), so units bound to
# it stop too. A key rewritten with the same content is not touched by nixos_keys, so nothing restarts.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption types mapAttrs' nameValuePair;
  cfg = config.ansinix.keys;

  keyOptions = { name, ... }: {
    options = {
      path = mkOption {
        type = types.str;
        default = "/run/keys/${name}";
        description = "Where nixos_keys writes the key (its dest_dir and name).";
      };
      user = mkOption {
        type = types.str;
        default = "root";
        description = "Owner of the key file. Informational here; nixos_keys sets it.";
      };
      group = mkOption {
        type = types.str;
        default = "root";
        description = "Group of the key file. Informational here; nixos_keys sets it.";
      };
    };
  };

  keyUnit = name: key: nameValuePair "${name}-key" {
    description = "Key ${name} at ${key.path} (written by ansinix.nixos.nixos_keys)";
    wantedBy = [ "multi-user.target" ];
    path = [ pkgs.coreutils ];
    serviceConfig = {
      Type = "simple";
      TimeoutStartSec = "infinity";
      Restart = "always";
      RestartSec = "1s";
    };
    # Active while the file exists: wait for it, then watch until it is gone.
    script = ''
      while [ ! -e ${lib.escapeShellArg key.path} ]; do sleep 1; done
      echo "key ${name} is present"
      while [ -e ${lib.escapeShellArg key.path} ]; do sleep 1; done
      echo "key ${name} was removed"
    '';
  };
in
{
  options.ansinix.keys = mkOption {
    type = types.attrsOf (types.submodule keyOptions);
    default = { };
    description = "Keys deployed with ansinix.nixos.nixos_keys; each gets a <name>-key.service.";
  };

  config = {
    users.groups.keys = { };
    systemd.services = mapAttrs' keyUnit cfg;
  };
}
