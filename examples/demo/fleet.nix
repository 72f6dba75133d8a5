# The demo fleet: two web servers and a monitoring server whose configuration lists the others.
#
# Real NixOS configurations come from nixpkgs (see docs/guide.md); the demo runs on any Debian machine
# without nixpkgs or network, so its systems are the NixOS-like stand-ins of tests/fixtures/nixos,
# which switch, roll back and boot the way NixOS does.
#
# `args` is what the ansinix.nixos.deploy role passes: `nodes` holds the shared variables of every host
# in the play (ansible_host, nixos_configuration), so the monitoring server's configuration lists its
# targets (NixOps's `nodes`, without a state file and without --impure); `version` comes from nixos_args.
{ args ? { } }:
let
  system = knobs: { config.system.build.toplevel = import ../../tests/fixtures/nixos/system.nix knobs; };
  nodes = args.nodes or { };
  webServers = builtins.filter (name: (nodes.${name}.nixos_configuration or name) != "mon") (builtins.attrNames nodes);
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
      etcFiles."prometheus/targets.json" = builtins.toJSON (map (name: "${nodes.${name}.ansible_host}:9100") webServers);
    };
  };
}
