{
  # The flake variant of default.nix: the same modules, nixpkgs pinned by flake.lock (`nix flake lock`).
  # ../inventory.yml deploys it: ansible-playbook -i inventory.yml ansinix.nixos.site
  description = "A small fleet deployed with ansinix.nixos: web servers and a monitoring server";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.11";

  outputs = { self, nixpkgs }:
    let
      nixosSystem = modules: nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [
          ./common.nix
          # ansinix.nixos.nix_build passes the role's data (args.nodes, nixos_args) as ansinixArgs
          # through extendModules; this default lets `nixos-rebuild` build the flake too.
          { _module.args.ansinixArgs = nixpkgs.lib.mkDefault { nodes = { }; }; }
        ] ++ modules;
      };
    in
    {
      nixosConfigurations = {
        web = nixosSystem [ ./web.nix ];
        mon = nixosSystem [ ./mon.nix ];
      };
    };
}
