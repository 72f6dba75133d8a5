# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nixos_nodes: the variables every host shares with the others' configurations (NixOps's `nodes`)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def nixos_nodes(hostvars, hosts, names):
    """{host: {name: value}} for the named variables each host defines; undefined ones are left out."""
    if not isinstance(names, (list, tuple)):
        raise AnsibleFilterError("nixos_nodes: the variable names must be a list, got %r" % (names,))
    nodes = {}
    for host in hosts:
        host_vars = hostvars[host]
        nodes[host] = dict((name, host_vars[name]) for name in names if name in host_vars)
    return nodes


class FilterModule:
    def filters(self):
        return {"nixos_nodes": nixos_nodes}
