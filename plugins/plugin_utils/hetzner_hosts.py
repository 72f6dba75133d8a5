# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: how the hetzner inventory plugin turns API objects into hosts.

Host variables, host names and groups from the servers the Hetzner Cloud API and the Robot webservice
list. Everything here is API data and untrusted: names become host names only when they are host names.
"""

from __future__ import annotations

import ipaddress
import json
import re


def as_list(value):
    return value if isinstance(value, list) else []


def as_dict(value):
    return value if isinstance(value, dict) else {}


def dig(obj, *keys):
    """obj[k1][k2]..., or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _ipv6_net(network):
    """A server's IPv6 net as the APIs give it (with or without /64), or None."""
    if not network:
        return None
    text = str(network) if "/" in str(network) else "%s/64" % network
    try:
        return ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        return None


def first_ipv6(network):
    """The first address of a /64 ('2001:db8:1::/64' -> '2001:db8:1::1'): the one Hetzner configures."""
    net = _ipv6_net(network)
    return str(net.network_address + 1) if net else None


def ipv6_network(network):
    """The /64 itself, written the short way ('2001:db8:0::' -> '2001:db8::/64')."""
    net = _ipv6_net(network)
    return str(net) if net else None


def robot_location(dc):
    """'FSN1-DC14' -> 'fsn1'."""
    return str(dc or "").partition("-")[0].lower() or None


def location_group(location):
    """hetzner_fsn1 for the location fsn1; None for a location that is not a short name of letters, digits and '-'."""
    if isinstance(location, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", location):
        return "hetzner_" + location.lower().replace("-", "_")
    return None


# RFC 1123 host names: labels of letters, digits and '-' (not first or last), 1 to 63 characters, joined by dots,
# 253 characters in all. Letters of either case are kept as they are; names are compared ignoring case, like DNS.
HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Names Ansible gives a meaning of its own: a server named localhost would receive the plays meant for the controller.
RESERVED_NAMES = ("localhost", "all", "ungrouped")
# Hetzner's rule for label values: what nixos_configuration may be taken from.
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def is_host_name(name):
    """Whether an API's server name may be an inventory host name as it is."""
    if not isinstance(name, str) or not name or len(name) > 253 or name.lower() in RESERVED_NAMES:
        return False
    return all(HOST_LABEL.fullmatch(label) for label in name.split("."))


def is_label_value(value):
    return isinstance(value, str) and bool(LABEL_VALUE.fullmatch(value))


def shown(text):
    """An API's string quoted for a message: control characters and non-ASCII escaped, at most 80 characters."""
    text = str(text)
    return json.dumps(text[:80] + ("..." if len(text) > 80 else ""))


def cloud_hostvars(server, networks, network_id=None):
    """The hetzner_* variables of a Cloud server. `networks` maps network ids to the API's network objects."""
    attachments = [a for a in as_list(server.get("private_net")) if isinstance(a, dict)]
    private = {}
    for attachment in attachments:
        name = dig(networks, attachment.get("network"), "name") or str(attachment.get("network"))
        private[name] = attachment.get("ip")
    chosen = [a.get("ip") for a in attachments if network_id is None or a.get("network") == network_id]
    image = as_dict(server.get("image"))
    return {
        "hetzner_kind": "cloud",
        "hetzner_id": server.get("id"),
        "hetzner_name": server.get("name"),
        "hetzner_status": server.get("status"),
        # Datacenters are leaving the API; servers name their location directly.
        "hetzner_location": dig(server, "location", "name") or dig(server, "datacenter", "location", "name"),
        "hetzner_type": dig(server, "server_type", "name"),
        "hetzner_labels": dict(as_dict(server.get("labels"))),
        "hetzner_ipv4": dig(server, "public_net", "ipv4", "ip"),
        "hetzner_ipv6": first_ipv6(dig(server, "public_net", "ipv6", "ip")),
        "hetzner_ipv6_network": ipv6_network(dig(server, "public_net", "ipv6", "ip")),
        "hetzner_private_ipv4": chosen[0] if chosen else None,
        "hetzner_private_networks": private,
        "hetzner_image": image.get("name") or image.get("description"),
        "hetzner_rescue": bool(server.get("rescue_enabled")),
    }


def robot_hostvars(server, rescue_active=None):
    """The hetzner_* variables of a Robot server; `rescue_active` is None when it was not asked."""
    return {
        "hetzner_kind": "robot",
        "hetzner_id": server.get("server_number"),
        "hetzner_name": server.get("server_name") or None,
        "hetzner_status": server.get("status"),
        "hetzner_location": robot_location(server.get("dc")),
        "hetzner_type": server.get("product"),
        "hetzner_labels": {},
        "hetzner_ipv4": server.get("server_ip"),
        "hetzner_ipv6": first_ipv6(server.get("server_ipv6_net")),
        "hetzner_ipv6_network": ipv6_network(server.get("server_ipv6_net")),
        "hetzner_private_ipv4": None,
        "hetzner_private_networks": {},
        "hetzner_image": None,
        "hetzner_rescue": rescue_active,
    }


def cloud_wanted(hostvars, cloud_cfg, network_id):
    """Whether a Cloud server passes the locations, server_types and network settings."""
    if cloud_cfg.get("locations") and hostvars["hetzner_location"] not in cloud_cfg["locations"]:
        return False
    if cloud_cfg.get("server_types") and hostvars["hetzner_type"] not in cloud_cfg["server_types"]:
        return False
    return network_id is None or hostvars["hetzner_private_ipv4"] is not None


def server_id(kind, server):
    return server.get("id") if kind == "cloud" else server.get("server_number")


def host_names(cloud_servers, robot_servers):
    """[(inventory name, kind, server)], the servers whose name is no host name, and the names several servers carry.

    A server is named like itself when its name is a host name (is_host_name), else cloudID or robotNUMBER. A name that
    more than one server would get (ignoring case) goes to none of them: each becomes NAME_cloudID or NAME_robotNUMBER,
    so no server receives host_vars/NAME meant for another. `invalid` is [(kind, id, API name, new name)]; `shared`
    is [(name, [(kind, id, new name)])].
    """
    wanted = []
    invalid = []
    servers = [("cloud", s) for s in cloud_servers]
    servers += [("robot", s) for s in sorted(robot_servers, key=lambda s: s["server_number"])]
    for kind, server in servers:
        ident = server_id(kind, server)
        name = server.get("name") if kind == "cloud" else server.get("server_name")
        if is_host_name(name):
            wanted.append((name, kind, ident, server))
            continue
        fallback = "%s%d" % (kind, ident)
        if name or kind == "cloud":  # a Robot server without a name is robotNUMBER, as documented
            invalid.append((kind, ident, name, fallback))
        wanted.append((fallback, kind, ident, server))
    holders = {}
    for name, kind, ident, _server in wanted:
        holders.setdefault(name.lower(), []).append(name)
    hosts, shared = [], {}
    for name, kind, ident, server in wanted:
        if len(holders[name.lower()]) > 1:
            # The underscore makes it no host name: it cannot be the name of another server.
            new = "%s_%s%d" % (name, kind, ident)
            shared.setdefault(name.lower(), (name, []))[1].append((kind, ident, new))
            name = new
        hosts.append((name, kind, server))
    return hosts, invalid, sorted(shared.values())


def invalid_name_warning(kind, ident, name, new):
    where = "in the Cloud Console" if kind == "cloud" else "in Robot (Server, the server's name)"
    return ("Hetzner %s server %d is named %s, which is not a host name (letters, digits and '-' in dot-separated labels of "
            "at most 63 characters): it is listed as %s. Rename it %s to use its name"
            % ("Cloud" if kind == "cloud" else "Robot", ident, shown(name) if name else "nothing", new, where))


def shared_name_warning(name, holders):
    listed = " and ".join("%s server %d as %s" % ("Cloud" if kind == "cloud" else "Robot", ident, new) for kind, ident, new in holders)
    return ("Hetzner servers share the name %s: %s, so host_vars/%s applies to none of them. Rename all but one of them, "
            "or move the variables to host_vars/%s" % (name, listed, name, holders[0][2]))


def connection_address(hostvars, connect_with):
    return {
        "public_ipv4": hostvars["hetzner_ipv4"],
        "public_ipv6": hostvars["hetzner_ipv6"],
        "private_ipv4": hostvars["hetzner_private_ipv4"],
        # Only a name that is a host name reaches ssh: "-oProxyCommand=..." would be an option.
        "name": hostvars["hetzner_name"] if is_host_name(hostvars["hetzner_name"]) else None,
    }[connect_with]
