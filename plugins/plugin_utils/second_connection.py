# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""A connection to another inventory host from inside a task: nix_copy_closure's src_host.

ansible-core has no public API for this. The function below does what its TaskExecutor does for a task's own host
(PlayContext from the host's variables, the connection plugin by name, its options from those variables), using
PlayContext, the action's _templar, _task and _shared_loader_obj, the connection's _load_name, _shell and _connect().
Checked against ansible-core 2.19, 2.20 and 2.21; the list of private APIs is in docs/development.md.
"""

from __future__ import annotations

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.playbook.play_context import PlayContext

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError


def connect_to_inventory_host(action, name, task_vars):
    """(connected connection plugin, its remote address) for inventory host `name`; NixError when that fails."""
    hostvars = task_vars.get("hostvars", {})
    if name not in hostvars:
        raise NixError("src_host %r is not a host of the inventory: give the inventory name of the host that has "
                       "the paths" % name)
    variables = dict(hostvars[name])
    templar = action._templar
    variables.setdefault("ansible_host", name)
    play_context = PlayContext().set_task_and_variable_override(task=action._task, variables=variables, templar=templar)
    conn_type = templar.template(variables.get("ansible_connection", "ssh"))
    connection = action._shared_loader_obj.connection_loader.get(conn_type, play_context, None)
    if connection is None:
        raise NixError("src_host %r: connection plugin %r not found" % (name, conn_type))
    options = {}
    for var in C.config.get_plugin_vars("connection", connection._load_name):
        if var in variables:
            options[var] = templar.template(variables[var])
    task_keys = action._task.dump_attrs()
    # The task's own `timeout` keyword is no connection timeout (the task executor does the same).
    task_keys["timeout"] = play_context.timeout
    connection.set_options(task_keys=task_keys, var_options=options)
    connection._shell.set_options(var_options={})
    try:
        connection._connect()
    except AnsibleError as exc:
        raise NixError("src_host %s is unreachable: %s" % (name, exc)) from None
    return connection, play_context.remote_addr
