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
  - Each host gets C(ansible_host) (see O(connect_with)) and the variables C(hetzner_kind) (V(cloud) or
    V(robot)), C(hetzner_id), C(hetzner_name), C(hetzner_status), C(hetzner_location), C(hetzner_type),
    C(hetzner_labels), C(hetzner_ipv4), C(hetzner_ipv6) (the server's first address in its /64),
    C(hetzner_ipv6_network), C(hetzner_private_ipv4), C(hetzner_private_networks) (network name to address),
    C(hetzner_image) and C(hetzner_rescue) (whether the rescue system is enabled; for Robot servers only with
    O(robot.rescue_status), else V(null)).
  - A server labelled O(nixos_label) gets C(nixos_configuration) set to the label's value, so a server labelled
    C(nixos=web) is deployed from C(nixosConfigurations.web).
  - 'Groups: C(hetzner) (every host), C(hetzner_cloud), C(hetzner_robot), one per location (C(hetzner_fsn1)),
    and C(nixos): every host with a C(nixos_configuration), from the label or from O(compose). The
    C(ansinix.nixos.site) playbook deploys the C(nixos) group.'
  - 'Names: a host is named like its server when that name is a host name (RFC 1123: letters, digits and C(-) in
    dot-separated labels of at most 63 characters, 253 in all; case is kept, and ignored when names are compared).
    Any other name, and C(localhost), C(all) and C(ungrouped), gives C(cloudID) or C(robotNUMBER) and a warning.'
  - 'A name that several servers carry (a Cloud and a Robot server, or two Robot servers) goes to none of them: each
    is named C(NAME_cloudID) or C(NAME_robotNUMBER), and a warning says so. C(host_vars/NAME) then applies to no host,
    so one account''s naming never decides which machine receives variables and keys meant for another.'
  - API data never becomes a template, a shell word or an option of ssh. A label value Hetzner would not accept gives
    no C(nixos_configuration), and a location that is not a name gives no location group; a warning says so.
  - With a warm cache (O(cache)), listing the inventory sends no request at all, and credentials are not even
    rendered. The cache keeps the API objects, never a credential; changing what is asked of the APIs (endpoints,
    O(cloud.label_selector), O(cloud.status), O(robot.rescue_status)) makes the plugin ask again.
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
  - ansinix.nixos.hetzner
  - ansinix.nixos.hetzner.inventory
requirements:
  - jmespath (only for O(filter))
notes:
  - Values under O(cloud) and O(robot) may be templates, such as a vault variable given with C(--extra-vars),
    a lookup, or an inline C(!vault) value. Credentials never appear in messages.
  - Ansible reports an inventory source that fails as a warning and goes on without it. Set
    C(ANSIBLE_INVENTORY_UNPARSED_FAILED=true) (C([inventory] unparsed_is_failed) in C(ansible.cfg)) to make
    such a failure stop the run, which is what CI and AWX jobs usually want.
seealso:
  - name: Hetzner Cloud API
    description: The servers and networks endpoints this plugin reads.
    link: https://docs.hetzner.cloud/reference/cloud
  - name: Hetzner Robot webservice
    description: The dedicated server and rescue endpoints this plugin reads.
    link: https://robot.hetzner.com/doc/webservice/en.html
options:
  plugin:
    description: Marks this file as a source for this plugin.
    type: str
    required: true
    choices: [ansinix.nixos.hetzner]
  connect_with:
    description:
      - What C(ansible_host) is. V(public_ipv6) is the server's first address in its /64, V(private_ipv4) its
        address in O(cloud.network), V(name) the server's name (for name resolution).
      - A server without such an address gets no C(ansible_host); a warning names it. O(compose) can set
        C(ansible_host) from other variables instead.
    type: str
    choices: [public_ipv4, public_ipv6, private_ipv4, name]
    default: public_ipv4
  nixos_label:
    description:
      - The label whose value names a Cloud server's NixOS configuration. Robot servers carry no labels; give
        them C(nixos_configuration) with O(compose) or host variables.
    type: str
    default: nixos
  filter:
    description:
      - A JMESPath expression evaluated against each server's API object (a Cloud server as C(GET /servers)
        returns it, a Robot server as C(GET /server) does). Servers for which it is not true are left out.
      - For example V(server_type.cores >= `4`) or V(contains(server_name, 'db')).
    type: str
"""

EXAMPLES = r"""
# hetzner.yml -- the one dedicated server of a Robot account, deployed from nixosConfigurations.<its name>.
plugin: ansinix.nixos.hetzner
robot:
  user: "{{ vault_robot_user }}"          # ansible-inventory -i hetzner.yml -e @vault.yml --ask-vault-pass
  password: "{{ vault_robot_password }}"
compose:
  nixos_configuration: hetzner_name

---
# cloud.hetzner.yml -- the Cloud servers labelled nixos=<configuration>, running, reached over a private network.
plugin: ansinix.nixos.hetzner
cloud:
  token: "{{ lookup('ansible.builtin.pipe', 'pass show hetzner/cloud-token') }}"   # a password manager
  label_selector: nixos
  status: [running]
  network: backend
connect_with: private_ipv4
keyed_groups:
  - key: hetzner_labels.env | default('none')
    prefix: env

---
# fleet.hetzner.yml -- both, with a filter on the API objects, and cached for ten minutes.
plugin: ansinix.nixos.hetzner
cloud:
  locations: [fsn1, nbg1]
robot: {}                                # HROBOT_API_USER and HROBOT_API_PASSWORD
filter: "status != 'off'"
compose:
  nixos_configuration: "hetzner_name if hetzner_kind == 'robot' else nixos_configuration"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ansinix-inventory
cache_timeout: 600
"""

import difflib
import json
import os
import re

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.ansinix.nixos.plugins.module_utils.hetzner import (
    CLOUD_SERVER_STATUSES, CloudClient, HetznerError, RobotClient,
)
from ansible_collections.ansinix.nixos.plugins.plugin_utils.hetzner_hosts import (
    cloud_hostvars, cloud_wanted, connection_address, host_names, invalid_name_warning, is_host_name, is_label_value,
    location_group, robot_hostvars, shared_name_warning, shown,
)

try:
    import jmespath
    HAS_JMESPATH = True
except ImportError:
    HAS_JMESPATH = False

try:
    # ansible-core 2.19 and later only ever template strings trusted as templates, which API data is not.
    from ansible.template import trust_as_template  # pylint: disable=unused-import
    API_DATA_NEEDS_UNSAFE = False
except ImportError:
    API_DATA_NEEDS_UNSAFE = True

# What may stand in the cloud: and robot: sections, and of which kind. Credentials are rendered only when
# the APIs are asked (a warm cache needs none).
CLOUD_SETTINGS = {"token": str, "endpoint": str, "label_selector": str, "status": list, "locations": list,
                  "server_types": list, "network": str}
ROBOT_SETTINGS = {"user": str, "password": str, "endpoint": str, "rescue_status": bool}
CREDENTIALS = ("token", "user", "password")
CACHE_FORMAT = 2  # bump when the cached data changes shape


def first_line(exc):
    """The first line of an error's message, without a dangling 'for expression:' (JMESPath's)."""
    text = getattr(exc, "message", None) or str(exc)
    line = (str(text).strip().splitlines() or [exc.__class__.__name__])[0]
    return re.sub(r",? for expression:$", "", line)


def did_you_mean(word, choices):
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return " (did you mean %s?)" % close[0] if close else ""


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "ansinix.nixos.hetzner"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("hetzner.yml", "hetzner.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        config = self._read_config_data(path)
        # Templates in the sections may use extra vars (-e @vault.yml), like constructed expressions can.
        self.templar.available_variables = self._vars
        self._check_options(config)
        cloud_cfg = self._section("cloud", CLOUD_SETTINGS)
        robot_cfg = self._section("robot", ROBOT_SETTINGS)
        if cloud_cfg is None and robot_cfg is None:
            raise AnsibleParserError("give a cloud: section (Hetzner Cloud), a robot: section (Hetzner Robot), or both")
        if self.get_option("connect_with") == "private_ipv4" and not (cloud_cfg or {}).get("network"):
            raise AnsibleParserError("connect_with: private_ipv4 needs cloud.network, the private network whose address to use")
        self._filter = self._compile_filter(self.get_option("filter"))

        query = self._query(cloud_cfg, robot_cfg)
        cache_key = self.get_cache_key(path)
        data = None
        if self.get_option("cache") and cache:
            try:
                cached = self._cache[cache_key]
            except KeyError:
                cached = None
            if isinstance(cached, dict) and cached.get("query") == query:
                data = cached
        if data is None:
            data = self._fetch(cloud_cfg, robot_cfg, query)
            if self.get_option("cache"):
                self._cache[cache_key] = data
        self._populate(data, cloud_cfg or {})

    # -- configuration ---------------------------------------------------------------------------------------

    def _check_options(self, config):
        """Ansible ignores unknown keys in a source; a misspelt one would silently change nothing."""
        for key in config:
            if key not in self._options:
                raise AnsibleParserError("unknown option %r%s" % (key, did_you_mean(key, self._options)))
        for key, least in (("timeout", 1), ("max_retries", 0), ("max_wait", 0)):
            if self.get_option(key) < least:
                raise AnsibleParserError("%s must be at least %d" % (key, least))

    def _section(self, name, settings):
        """The cloud: or robot: section with its values rendered (credentials stay templates), or None."""
        section = self.get_option(name)
        if section is None:
            return None
        if not isinstance(section, dict):
            raise AnsibleParserError("%s: must be a mapping of settings (%s), or {} for the defaults" % (name, ", ".join(settings)))
        resolved = {}
        for key, value in section.items():
            if key not in settings:
                raise AnsibleParserError("%s.%s is not a setting%s; the settings are %s"
                                         % (name, key, did_you_mean(key, settings), ", ".join(settings)))
            resolved[key] = value if key in CREDENTIALS else self._render(name, key, value)
        for key, value in resolved.items():
            self._check_kind(name, key, value, settings[key])
        return resolved

    def _render(self, section, key, value):
        """A setting's value with templates (and vault values) resolved; errors name the setting, not the value."""
        try:
            return self.templar.template(value)
        except AnsibleError as exc:
            vault = re.search(r"decrypt|vault secret", first_line(exc), re.I)
            hint = "; give the vault password (--ask-vault-pass or --vault-password-file)" if vault else ""
            raise AnsibleParserError("%s.%s: its value could not be rendered: %s%s" % (section, key, first_line(exc), hint)) from None

    @staticmethod
    def _check_kind(section, key, value, kind):
        where = "%s.%s" % (section, key)
        if value is None or key in CREDENTIALS:
            return
        if kind is str and key == "network" and isinstance(value, int) and not isinstance(value, bool):
            return  # a network id
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                example = {"status": "running", "locations": "fsn1, nbg1"}.get(key, "cx22, cpx31")
                raise AnsibleParserError("%s: must be a list of names, such as [%s]" % (where, example))
            if key == "status":
                for status in value:
                    if status not in CLOUD_SERVER_STATUSES:
                        raise AnsibleParserError("%s: %r is not a server status%s; the statuses are %s"
                                                 % (where, status, did_you_mean(status, CLOUD_SERVER_STATUSES), ", ".join(CLOUD_SERVER_STATUSES)))
        elif not isinstance(value, kind):
            raise AnsibleParserError("%s: must be %s, not %s" % (where, "true or false" if kind is bool else "a string", type(value).__name__))

    def _compile_filter(self, expression):
        if not expression:
            return None
        if not HAS_JMESPATH:
            raise AnsibleParserError("the filter option needs the Python library jmespath on the controller (pip install jmespath)")
        try:
            return jmespath.compile(expression)
        except jmespath.exceptions.IncompleteExpressionError:
            raise AnsibleParserError("filter %r is not a JMESPath expression: it ends too early" % expression) from None
        except jmespath.exceptions.ParseError as exc:
            raise AnsibleParserError("filter %r is not a JMESPath expression: %s at column %s" % (expression, exc.msg, exc.lex_position)) from None
        except jmespath.exceptions.JMESPathError as exc:
            raise AnsibleParserError("filter %r is not a JMESPath expression: %s" % (expression, first_line(exc))) from None

    def _query(self, cloud_cfg, robot_cfg):
        """What is asked of the APIs (never a credential): a cache entry answers only the same query."""
        query = {"format": CACHE_FORMAT, "cloud": None, "robot": None}
        if cloud_cfg is not None:
            query["cloud"] = {"endpoint": cloud_cfg.get("endpoint") or os.environ.get("HCLOUD_ENDPOINT"),
                              "label_selector": cloud_cfg.get("label_selector"), "status": cloud_cfg.get("status"),
                              "networks": cloud_cfg.get("network") is not None}
        if robot_cfg is not None:
            query["robot"] = {"endpoint": robot_cfg.get("endpoint") or os.environ.get("HROBOT_API_ENDPOINT"),
                              "rescue_status": bool(robot_cfg.get("rescue_status"))}
        return json.loads(json.dumps(query))  # as it comes back from a cache file

    def _clients(self, cloud_cfg, robot_cfg):
        common = dict(timeout=self.get_option("timeout"), max_retries=self.get_option("max_retries"),
                      max_wait=self.get_option("max_wait"))
        cloud = robot = None
        if cloud_cfg is not None:
            token = self._render("cloud", "token", cloud_cfg.get("token")) or os.environ.get("HCLOUD_TOKEN")
            cloud = CloudClient(token, cloud_cfg.get("endpoint") or os.environ.get("HCLOUD_ENDPOINT"),
                                token_setting="cloud.token (or HCLOUD_TOKEN)", endpoint_setting="cloud.endpoint", **common)
        if robot_cfg is not None:
            user = self._render("robot", "user", robot_cfg.get("user")) or os.environ.get("HROBOT_API_USER")
            password = self._render("robot", "password", robot_cfg.get("password")) or os.environ.get("HROBOT_API_PASSWORD")
            robot = RobotClient(user, password, robot_cfg.get("endpoint") or os.environ.get("HROBOT_API_ENDPOINT"),
                                credentials_setting="robot.user and robot.password (or HROBOT_API_USER and HROBOT_API_PASSWORD)",
                                endpoint_setting="robot.endpoint", **common)
        return cloud, robot

    # -- fetching: what the cache keeps is the API objects ---------------------------------------------------

    def _fetch(self, cloud_cfg, robot_cfg, query):
        data = {"query": query, "cloud": [], "networks": [], "robot": [], "rescue": {}}
        try:
            cloud, robot = self._clients(cloud_cfg, robot_cfg)
            if cloud:
                data["cloud"] = cloud.servers(cloud_cfg.get("label_selector"), cloud_cfg.get("status"))
                # Network names are only needed where a server is attached to one.
                if cloud_cfg.get("network") is not None or any(isinstance(s, dict) and s.get("private_net") for s in data["cloud"]):
                    data["networks"] = cloud.networks()
            if robot:
                data["robot"] = robot.servers()
                self._check_ids(data)
                if robot_cfg.get("rescue_status"):
                    for server in data["robot"]:
                        number = server.get("server_number")
                        # Only the flag: an active rescue system's answer also holds its root password.
                        data["rescue"][str(number)] = bool(robot.rescue(number).get("active"))
        except HetznerError as exc:
            raise AnsibleParserError(exc.msg) from None
        return data

    # -- hosts and groups ------------------------------------------------------------------------------------

    @staticmethod
    def _check_ids(data):
        """Every server has a numeric id: it names the host when the server's name cannot (cached data too)."""
        for kind, what in (("cloud", "Hetzner Cloud"), ("robot", "Hetzner Robot")):
            key = "id" if kind == "cloud" else "server_number"
            for server in data.get(kind) or []:
                ident = server.get(key) if isinstance(server, dict) else None
                if not isinstance(ident, int) or isinstance(ident, bool) or ident < 1:
                    raise AnsibleParserError("%s listed a server without a numeric %s (%s); is %s.endpoint the API's address?"
                                             % (what, key, json.dumps(server)[:80], kind))

    def _keep(self, server):
        if self._filter is None:
            return True
        try:
            return bool(self._filter.search(server))
        except jmespath.exceptions.JMESPathError as exc:
            if is_host_name(server.get("name")):
                which = server["name"]
            elif "server_number" in server:
                which = "Robot server %s" % server["server_number"]
            else:
                which = "Cloud server %s" % server.get("id")
            raise AnsibleParserError("filter %r failed on %s: %s" % (self.get_option("filter"), which, first_line(exc))) from None

    def _network_id(self, wanted, networks):
        if wanted is None:
            return None
        match = [n for n in networks.values() if str(n.get("id")) == str(wanted) or n.get("name") == str(wanted)]
        if not match:
            raise AnsibleParserError("cloud.network %r: the project has no such network (it has %s)"
                                     % (str(wanted), ", ".join(sorted(str(n.get("name")) for n in networks.values())) or "none"))
        return match[0].get("id")

    def _populate(self, data, cloud_cfg):
        self._check_ids(data)
        networks = dict((n.get("id"), n) for n in data.get("networks") or [] if isinstance(n, dict))
        network_id = self._network_id(cloud_cfg.get("network"), networks)
        cloud, cloud_vars = [], {}
        for server in data.get("cloud") or []:
            hostvars = cloud_hostvars(server, networks, network_id)
            if not (cloud_wanted(hostvars, cloud_cfg, network_id) and self._keep(server)):
                continue
            cloud.append(server)
            cloud_vars[server["id"]] = hostvars
        robot = [server for server in data.get("robot") or [] if self._keep(server)]
        hosts, invalid, shared = host_names(cloud, robot)
        for entry in invalid:
            self.display.warning(invalid_name_warning(*entry))
        for name, holders in shared:
            self.display.warning(shared_name_warning(name, holders))
        rescue = data.get("rescue") or {}
        no_address, no_group = [], []
        for name, kind, server in hosts:
            if kind == "cloud":
                hostvars = cloud_vars[server["id"]]
            else:
                hostvars = robot_hostvars(server, rescue.get(str(server.get("server_number"))))
            address, grouped = self._add_host(name, hostvars)
            if not address:
                no_address.append(name)
            if not grouped:
                no_group.append(name)
        for hosts_, message in ((no_address, "have no %s address and get no ansible_host (choose another connect_with, "
                                             "or set ansible_host with compose)" % self.get_option("connect_with")),
                                (no_group, "have a location that is not a location name and are in no location group")):
            if hosts_:
                listed = ", ".join(hosts_[:20]) + (" ..." if len(hosts_) > 20 else "")
                self.display.warning("%d Hetzner server(s) %s: %s" % (len(hosts_), message, listed))

    def _add_host(self, name, hostvars):
        """Adds the host with its variables and groups: (whether it has an address, whether its location made a group)."""
        label = self.get_option("nixos_label")
        configuration = hostvars["hetzner_labels"].get(label) if label else None
        if configuration and is_label_value(configuration):
            hostvars["nixos_configuration"] = configuration
        elif configuration:
            self.display.warning("Hetzner Cloud server %s: its label %s=%s is not a label value Hetzner allows, so it names no "
                                 "NixOS configuration" % (name, label, shown(configuration)))
        address = connection_address(hostvars, self.get_option("connect_with"))
        if address:
            hostvars["ansible_host"] = address
        if API_DATA_NEEDS_UNSAFE:
            # API data is never a template (a server named "{{ ... }}" stays a name).
            hostvars = wrap_var(hostvars)
        inventory = self.inventory
        inventory.add_group("hetzner")
        inventory.add_host(name, group="hetzner")
        location = location_group(hostvars["hetzner_location"])
        for group in ("hetzner_" + hostvars["hetzner_kind"], location):
            if group:
                inventory.add_group(group)
                inventory.add_child(group, name)
        for key, value in hostvars.items():
            inventory.set_variable(name, key, value)
        # The constructed features template per host; skip those not configured (on a fleet of a thousand
        # servers they would take most of the time).
        strict = self.get_option("strict")
        if self.get_option("compose"):
            self._set_composite_vars(self.get_option("compose"), inventory.get_host(name).get_vars(), name, strict=strict)
        if self.get_option("groups"):
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
        if self.get_option("keyed_groups"):
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
        # The nixos group is what gets deployed: every host with a configuration, from the label or compose.
        if inventory.get_host(name).vars.get("nixos_configuration"):
            inventory.add_group("nixos")
            inventory.add_child("nixos", name)
        return bool(address), bool(location or not hostvars["hetzner_location"])
