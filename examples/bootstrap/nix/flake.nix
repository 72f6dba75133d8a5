{
  description = "My Hetzner servers, installed from the rescue system";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.11";

  outputs = { self, nixpkgs }:
    let
      # One configuration per server: what they all run, the hardware facts the bootstrap wrote for
      # this server (hosts/NAME/hardware.json), and its name.
      server = name: nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [
          ./configuration.nix
          (import ./hardware.nix (./hosts + "/${name}/hardware.json"))
          { networking.hostName = name; }
        ];
      };
    in
    {
      nixosConfigurations = {
        dedi1 = server "dedi1";
        cloud1 = server "cloud1";
        deb1 = server "deb1";
      };
    };
}
