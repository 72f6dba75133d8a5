# The demo fleet: two web servers and a monitoring server whose configuration lists the others.
#
# Real NixOS configurations come from nixpkgs (see examples/ and docs/); the demo runs on any Debian
# machine without nixpkgs or network, so its systems are the NixOS-like stand-ins of
# tests/fixtures/nixos, which switch, roll back and boot the way NixOS does.
#
# `args` is the data the playbook passes (ansinix.nixos.nix_build's args): here the address of
# every host in the play, so the monitoring server's configuration lists its targets — NixOps's
# `nodes`, without a state file and without --impure.
{ args ? { } }:
let
  system = knobs: { config.system.build.toplevel = import ../../tests/fixtures/nixos/system.nix knobs; };
  addresses = args.addresses or { };
  webServers = builtins.filter (name: name != "mon") (builtins.attrNames addresses);
  version = args.version or "1";
in
{
  nixosConfigurations = {
    web1 = system { name = "web1"; inherit version; };
    web2 = system { name = "web2"; inherit version; };
    mon = system {
      name = "mon";
      inherit version;
      units = {
        "sshd.service" = "openssh 9.6";
        "prometheus.service" = "prometheus 2.48";
      };
      packages = { prometheus = "2.48.1"; coreutils = "9.4"; };
      etcFiles."prometheus/targets.json" = builtins.toJSON (map (name: "${addresses.${name}}:9100") webServers);
    };
  };
}
