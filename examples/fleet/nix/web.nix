# A web server, with the node exporter the monitoring server scrapes.
{ ... }:
{
  networking.hostName = "web";
  networking.firewall.allowedTCPPorts = [ 80 ];

  services.nginx = {
    enable = true;
    virtualHosts.default.locations."/".return = "200 'hello from NixOS'";
  };
  services.prometheus.exporters.node = {
    enable = true;
    openFirewall = true;
  };
}
