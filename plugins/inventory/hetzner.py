# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: hetzner
short_description: Hetzner Cloud servers and Robot dedicated servers, ready for NixOS deploys
version_added: 0.1.0
author:
  - ansinix.nixos maintainers (@ansinix)
description:
  - Lists the servers of a Hetzner Cloud project, the dedicated servers of a Hetzner Robot account, or both,
    from a file whose name ends in C(hetzner.yml) or C(hetzner.yaml).
  - Sets C(ansible_host) and C(hetzner_*) variables on each host. Servers with the O(nixos_label) label get
    C(nixos_configuration) and join the C(nixos) group, which the C(ansinix.nixos.deploy) role and the
    C(ansinix.nixos.site) playbook deploy.
  - Groups C(hetzner), C(hetzner_cloud), C(hetzner_robot), one group per location (C(hetzner_fsn1)), and C(nixos).
  - When a Cloud server and a Robot server have the same name, the Cloud server keeps it and the Robot server
    becomes C(NAME_robotNUMBER), with a warning.
extends_documentation_fragment:
  - constructed
  - inventory_cache
requirements:
  - jmespath (for O(filter))
options:
  plugin:
    description: Marks this file as a source for this plugin.
    type: str
    required: true
    choices: [ansinix.nixos.hetzner]
  cloud:
    description:
      - Hetzner Cloud. Leave it out to list no Cloud servers. Keys are C(token) (default C($HCLOUD_TOKEN)),
        C(endpoint) (default V(https://api.hetzner.cloud/v1)), C(label_selector) and C(status) (a list;
        both are sent to the API), and C(locations), C(server_types) (lists) and C(network) (a network name
        or id) to filter by. Values may be templates, such as a vault variable or a lookup.
    type: dict
  robot:
    description:
      - Hetzner Robot dedicated servers. Leave it out to list none. Keys are C(user) and C(password) of the
        Robot webservice (default C($ROBOT_USER) and C($ROBOT_PASSWORD)), C(endpoint) (default
        V(https://robot-ws.your-server.de)), and C(rescue_status) (V(true) asks for each server whether the
        rescue system is enabled, one request per server, and sets C(hetzner_rescue)).
    type: dict
  connect_with:
    description:
      - What C(ansible_host) is. V(public_ipv6) is the first address of the server's /64, V(private_ipv4) its
        address in C(cloud.network), V(name) leaves it to name resolution.
    type: str
    choices: [public_ipv4, public_ipv6, private_ipv4, name]
    default: public_ipv4
  nixos_label:
    description:
      - The label whose value names the server's NixOS configuration. A Cloud server labelled C(nixos=web)
        gets C(nixos_configuration=web) and is deployed from C(nixosConfigurations.web). Robot servers carry
        no labels; give them C(nixos_configuration) with O(compose) or host variables.
    type: str
    default: nixos
  filter:
    description:
      - A JMESPath expression evaluated against each server's API object. Servers for which it is false are left out.
    type: str
  timeout:
    description: Seconds to wait for one API answer.
    type: int
    default: 30
  max_retries:
    description: How often a rate-limited, failed (5xx) or timed-out request is tried again, with back-off.
    type: int
    default: 5
"""

EXAMPLES = r"""
# hetzner.yml: every Cloud server labelled nixos=..., and the Robot dedicated servers.
plugin: ansinix.nixos.hetzner
cloud:
  token: "{{ lookup('ansible.builtin.env', 'HCLOUD_TOKEN') }}"
  label_selector: nixos
robot:
  user: "{{ vault_robot_user }}"
  password: "{{ vault_robot_password }}"
compose:
  # The one dedicated server runs the configuration named like it.
  nixos_configuration: nixos_configuration | default(hetzner_name)
keyed_groups:
  - key: hetzner_labels.env | default('none')
    prefix: env
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ansinix-inventory
cache_timeout: 600
"""

import os

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.ansinix.nixos.plugins.module_utils.hetzner import (
    CLOUD_ENDPOINT, ROBOT_ENDPOINT, CloudClient, HetznerError, RobotClient,
)

try:
    import jmespath
    HAS_JMESPATH = True
except ImportError:
    HAS_JMESPATH = False

CLOUD_KEYS = {"token", "endpoint", "label_selector", "status", "locations", "server_types", "network"}
ROBOT_KEYS = {"user", "password", "endpoint", "rescue_status"}


def ipv6_host(network):
    """Hetzner gives each server a /64; its first address (::1) is the one configured on the server."""
    if not network:
        return None
    prefix = network.split("/")[0]
    return prefix + ("1" if prefix.endswith("::") else "")


def robot_location(dc):
    """'FSN1-DC14' -> 'fsn1'."""
    return (dc or "").split("-")[0].lower() or None


def cloud_hostvars(server, networks):
    public = server.get("public_net") or {}
    private = dict((networks.get(p.get("network"), {}).get("name", str(p.get("network"))), p.get("ip"))
                   for p in server.get("private_net") or [])
    image = server.get("image") or {}
    return {
        "hetzner_kind": "cloud",
        "hetzner_id": server.get("id"),
        "hetzner_name": server.get("name"),
        "hetzner_status": server.get("status"),
        "hetzner_location": (((server.get("datacenter") or {}).get("location") or {}).get("name")),
        "hetzner_type": (server.get("server_type") or {}).get("name"),
        "hetzner_labels": dict(server.get("labels") or {}),
        "hetzner_ipv4": ((public.get("ipv4") or {}).get("ip")),
        "hetzner_ipv6": ipv6_host((public.get("ipv6") or {}).get("ip")),
        "hetzner_private_ipv4": private,
        "hetzner_image": image.get("name") or image.get("description"),
        "hetzner_rescue": bool(server.get("rescue_enabled")),
    }


def robot_hostvars(server, rescue=None):
    return {
        "hetzner_kind": "robot",
        "hetzner_id": server.get("server_number"),
        "hetzner_name": server.get("server_name") or "server%s" % server.get("server_number"),
        "hetzner_status": server.get("status"),
        "hetzner_location": robot_location(server.get("dc")),
        "hetzner_type": server.get("product"),
        "hetzner_labels": {},
        "hetzner_ipv4": server.get("server_ip"),
        "hetzner_ipv6": ipv6_host(server.get("server_ipv6_net")),
        "hetzner_private_ipv4": {},
        "hetzner_image": None,
        "hetzner_rescue": rescue,
    }


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "ansinix.nixos.hetzner"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("hetzner.yml", "hetzner.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cloud_cfg, robot_cfg = self._section("cloud", CLOUD_KEYS), self._section("robot", ROBOT_KEYS)
        if cloud_cfg is None and robot_cfg is None:
            raise AnsibleParserError("%s: give a cloud: section, a robot: section, or both" % path)
        if self.get_option("filter") and not HAS_JMESPATH:
            raise AnsibleParserError("the filter option needs the Python library jmespath on the controller (pip install jmespath)")

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        data = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                data = None
        if data is None:
            data = self._fetch(cloud_cfg, robot_cfg)
            if self.get_option("cache"):
                self._cache[cache_key] = data
        self._populate(data, cloud_cfg)

    # -- configuration -----------------------------------------------------------------------------

    def _section(self, name, known):
        section = self.get_option(name)
        if section is None:
            return None
        if not isinstance(section, dict):
            raise AnsibleParserError("%s: must be a dictionary of settings (%s)" % (name, ", ".join(sorted(known))))
        unknown = sorted(set(section) - known)
        if unknown:
            raise AnsibleParserError("%s: unknown setting(s) %s; known: %s" % (name, ", ".join(unknown), ", ".join(sorted(known))))
        resolved = {}
        for key, value in section.items():
            if isinstance(value, str) and self.templar.is_possibly_template(value):
                try:
                    value = self.templar.template(value)
                except AnsibleError as exc:
                    # The message names the setting, never its value (it may be a secret).
                    raise AnsibleParserError("%s.%s: the template could not be rendered: %s"
                                             % (name, key, str(exc).splitlines()[0])) from None
            resolved[key] = value
        for key in ("status", "locations", "server_types"):
            if key in resolved and not isinstance(resolved[key], list):
                raise AnsibleParserError("%s.%s: must be a list" % (name, key))
        return resolved

    def _clients(self, cloud_cfg, robot_cfg):
        common = dict(timeout=self.get_option("timeout"), max_retries=self.get_option("max_retries"))
        cloud = robot = None
        if cloud_cfg is not None:
            cloud = CloudClient(cloud_cfg.get("token") or os.environ.get("HCLOUD_TOKEN"),
                                endpoint=cloud_cfg.get("endpoint") or CLOUD_ENDPOINT, **common)
        if robot_cfg is not None:
            robot = RobotClient(robot_cfg.get("user") or os.environ.get("ROBOT_USER"),
                                robot_cfg.get("password") or os.environ.get("ROBOT_PASSWORD"),
                                endpoint=robot_cfg.get("endpoint") or ROBOT_ENDPOINT, **common)
        return cloud, robot

    # -- fetching (what the cache keeps: the API objects) ---------------------------------------------

    def _fetch(self, cloud_cfg, robot_cfg):
        try:
            cloud, robot = self._clients(cloud_cfg, robot_cfg)
            data = {"cloud": [], "networks": [], "robot": [], "rescue": {}}
            if cloud:
                data["cloud"] = cloud.servers(cloud_cfg.get("label_selector"), cloud_cfg.get("status"))
                if any(s.get("private_net") for s in data["cloud"]) or cloud_cfg.get("network"):
                    data["networks"] = cloud.networks()
            if robot:
                data["robot"] = robot.servers()
                if robot_cfg.get("rescue_status"):
                    for server in data["robot"]:
                        number = server.get("server_number")
                        data["rescue"][str(number)] = bool(robot.rescue(number).get("active"))
            return data
        except HetznerError as exc:
            raise AnsibleParserError(exc.msg) from None

    # -- hosts and groups ------------------------------------------------------------------------------

    def _keep(self, server):
        expression = self.get_option("filter")
        if not expression:
            return True
        try:
            return bool(jmespath.search(expression, server))
        except jmespath.exceptions.JMESPathError as exc:
            raise AnsibleParserError("filter %r is not a valid JMESPath expression: %s" % (expression, str(exc).splitlines()[0])) from None

    def _populate(self, data, cloud_cfg):
        cloud_cfg = cloud_cfg or {}
        networks = dict((n.get("id"), n) for n in data.get("networks") or [])
        network_name = None
        if cloud_cfg.get("network") is not None:
            wanted = str(cloud_cfg["network"])
            match = [n for n in networks.values() if str(n.get("id")) == wanted or n.get("name") == wanted]
            if not match:
                raise AnsibleParserError("cloud.network %r: no such network in the project (it has: %s)"
                                         % (wanted, ", ".join(sorted(n.get("name", "") for n in networks.values())) or "none"))
            network_name = match[0]["name"]
        hosts = []
        for server in data.get("cloud") or []:
            if not self._keep(server):
                continue
            hostvars = cloud_hostvars(server, networks)
            if cloud_cfg.get("locations") and hostvars["hetzner_location"] not in cloud_cfg["locations"]:
                continue
            if cloud_cfg.get("server_types") and hostvars["hetzner_type"] not in cloud_cfg["server_types"]:
                continue
            if network_name and network_name not in hostvars["hetzner_private_ipv4"]:
                continue
            hosts.append((hostvars["hetzner_name"], hostvars, network_name))
        cloud_names = set(name for name, _v, _n in hosts)
        for server in data.get("robot") or []:
            if not self._keep(server):
                continue
            hostvars = robot_hostvars(server, data.get("rescue", {}).get(str(server.get("server_number"))))
            name = hostvars["hetzner_name"]
            if name in cloud_names:
                renamed = "%s_robot%s" % (name, hostvars["hetzner_id"])
                self.display.warning("Hetzner Cloud and Robot both have a server named %r; the Robot server is %r in this "
                                     "inventory" % (name, renamed))
                name = renamed
            hosts.append((name, hostvars, None))
        for name, hostvars, net in hosts:
            self._add_host(name, hostvars, net)

    def _add_host(self, name, hostvars, network_name):
        inventory = self.inventory
        inventory.add_group("hetzner")
        inventory.add_host(name, group="hetzner")
        inventory.add_group("hetzner_" + hostvars["hetzner_kind"])
        inventory.add_child("hetzner_" + hostvars["hetzner_kind"], name)
        if hostvars["hetzner_location"]:
            group = inventory.add_group("hetzner_" + hostvars["hetzner_location"].replace("-", "_"))
            inventory.add_child(group, name)
        label = self.get_option("nixos_label")
        if label and hostvars["hetzner_labels"].get(label):
            hostvars["nixos_configuration"] = hostvars["hetzner_labels"][label]
            inventory.add_group("nixos")
            inventory.add_child("nixos", name)
        connect_with = self.get_option("connect_with")
        address = {"public_ipv4": hostvars["hetzner_ipv4"], "public_ipv6": hostvars["hetzner_ipv6"],
                   "private_ipv4": hostvars["hetzner_private_ipv4"].get(network_name) if network_name else None,
                   "name": name}[connect_with]
        if connect_with == "private_ipv4" and not network_name:
            raise AnsibleParserError("connect_with: private_ipv4 needs cloud.network, the network whose address to use")
        if address:
            hostvars["ansible_host"] = address
        for key, value in hostvars.items():
            inventory.set_variable(name, key, value)
        # The constructed features template per host; skip them when none is configured (a fleet of a
        # thousand servers spends most of its time there otherwise).
        strict = self.get_option("strict")
        if self.get_option("compose"):
            self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
        if self.get_option("groups"):
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
        if self.get_option("keyed_groups"):
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
