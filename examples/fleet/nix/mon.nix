# A monitoring server whose Prometheus scrapes every web server of the play, from the inventory.
{ ansinixArgs, ... }:
let
  nodes = ansinixArgs.nodes or { };
  webServers = builtins.filter (name: (nodes.${name}.nixos_configuration or "") == "web") (builtins.attrNames nodes);
in
{
  networking.hostName = "mon";

  services.prometheus = {
    enable = true;
    scrapeConfigs = [{
      job_name = "node";
      static_configs = [{ targets = map (name: "${nodes.${name}.ansible_host}:9100") webServers; }];
    }];
  };
}
