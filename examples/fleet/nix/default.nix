# A small fleet: web servers and a monitoring server that scrapes them. Classic Nix files, no flakes.
#
# nixpkgs comes from the deploy role's nixos_nix_path, never from your shell's NIX_PATH
# (docs/howto.md, "Pin nixpkgs without NIX_PATH"):
#   nixos_file: "{{ inventory_dir }}/nix/default.nix"
#   nixos_nix_path: [ "nixpkgs={{ inventory_dir }}/nixpkgs" ]
#
# `args` is what the role passes: `args.nodes` holds every host's shared variables (ansible_host,
# nixos_configuration, ...). Modules receive it as the module argument `ansinixArgs`.
{ args ? { } }:
let
  nixosSystem = modules: import <nixpkgs/nixos/lib/eval-config.nix> {
    system = "x86_64-linux";
    modules = [ ./common.nix { _module.args.ansinixArgs = args; } ] ++ modules;
  };
in
{
  nixosConfigurations = {
    web = nixosSystem [ ./web.nix ];
    mon = nixosSystem [ ./mon.nix ];
  };
}
