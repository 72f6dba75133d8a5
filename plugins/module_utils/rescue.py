# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""The rescue system of a Hetzner server: enable or disable it for the next boot, and reset the server.

What hetzner_rescue does (its action plugin, on the controller), as small functions over the clients of module_utils/hetzner.py:
find the server (id, number or name), the SSH keys (id, name or fingerprint), decide what has to
change, and do it (or, in check mode, only say so), waiting for Cloud actions to finish.

The root password of a rescue system is a secret: it is returned (the caller registers it) and
never put into a message.
"""

from __future__ import annotations

import time

from ansible_collections.ansinix.nixos.plugins.module_utils.hetzner import (
    CLIENT_ARGUMENT_SPEC, CLOUD_ARGUMENT_SPEC, ROBOT_ARGUMENT_SPEC, HetznerError, cloud_client, robot_client,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.host_keys import HostKeyError, public_key_line

RESETS = ("none", "hardware", "software", "power")
# Cloud: the actions each reset is made of; a server that is off is switched on instead.
CLOUD_RESETS = {"hardware": ("reset",), "software": ("reboot",), "power": ("poweroff", "poweron")}
# Robot: the reset type (POST /reset/{number} type=...).
ROBOT_RESETS = {"hardware": "hw", "software": "sw", "power": "power"}
CLOUD_RESCUE_TYPE = "linux64"
ROBOT_RESCUE_OS = "linux"

ARGUMENT_SPEC = dict(
    api=dict(type="str", required=True, choices=["cloud", "robot"]),
    server=dict(type="str", required=True),
    rescue=dict(type="bool", default=True),
    ssh_keys=dict(type="list", elements="str", default=[], no_log=False),
    rescue_type=dict(type="str", aliases=["os"]),
    reset=dict(type="str", default="none", choices=list(RESETS)),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
)
ARGUMENT_SPEC.update(CLOUD_ARGUMENT_SPEC)
ARGUMENT_SPEC.update(ROBOT_ARGUMENT_SPEC)
ARGUMENT_SPEC.update(CLIENT_ARGUMENT_SPEC)


# -- finding things ------------------------------------------------------------------------------------------

def find_cloud_server(client, server):
    """The Cloud server with this id or name."""
    server = str(server).strip()
    if server.isdigit():
        try:
            return client.server(int(server))
        except HetznerError as exc:
            if exc.status != 404:
                raise
    found = client.servers(name=server)
    if not found:
        raise HetznerError("the Hetzner Cloud project has no server %s %r (check server)"
                           % ("with the id or name" if server.isdigit() else "named", server))
    return found[0]


def find_robot_server(client, server):
    """The Robot server with this number or name."""
    server = str(server).strip()
    if server.isdigit():
        try:
            return client.server(int(server))
        except HetznerError as exc:
            if exc.code != "SERVER_NOT_FOUND":
                raise
    found = [s for s in client.servers() if s.get("server_name") == server]
    if not found:
        raise HetznerError("the Hetzner Robot account has no server %s %r (check server)"
                           % ("with the number or name" if server.isdigit() else "named", server))
    if len(found) > 1:
        raise HetznerError("%d Hetzner Robot servers are named %r (numbers %s): give server as the number"
                           % (len(found), server, ", ".join(str(s.get("server_number")) for s in found)))
    return found[0]


def _find_keys(wanted, keys, fields, where, forms):
    """The keys (from `keys`) that the entries of `wanted` name, by any of `fields`, in the order asked."""
    chosen = []
    for entry in wanted:
        entry = str(entry).strip()
        key = next((k for field in fields for k in keys if str(k.get(field)) == entry), None)
        if key is None:
            known = ", ".join(sorted(str(k.get("name")) for k in keys)) or "none"
            raise HetznerError("%s has no SSH key %r (its keys: %s); give a key's %s in ssh_keys" % (where, entry, known, forms))
        if key not in chosen:
            chosen.append(key)
    return chosen


def cloud_key_ids(client, wanted):
    """The ids of the Cloud SSH keys named by id, name or fingerprint."""
    if not wanted:
        return []
    keys = _find_keys(wanted, client.ssh_keys(), ("id", "name", "fingerprint"), "the Hetzner Cloud project", "name, id or fingerprint")
    return [k["id"] for k in keys]


def robot_key_fingerprints(client, wanted):
    """The fingerprints of the Robot SSH keys named by fingerprint or name."""
    if not wanted:
        return []
    keys = _find_keys(wanted, client.keys(), ("fingerprint", "name"), "the Hetzner Robot account", "name or fingerprint")
    return [k["fingerprint"] for k in keys]


def cloud_reset_commands(reset, status):
    """The Cloud actions that make a reset: a server that is off is switched on, whatever the reset."""
    if reset in (None, "none"):
        return ()
    if status == "off":
        return ("poweron",)
    return CLOUD_RESETS[reset]


# -- waiting -------------------------------------------------------------------------------------------------

def wait_for_action(client, action, timeout, sleep=time.sleep, clock=time.monotonic):
    """Poll a Cloud action until it is no longer running; the finished action, or a HetznerError."""
    deadline = clock() + timeout
    interval = 0.5
    while action.get("status") == "running":
        left = deadline - clock()
        if left <= 0:
            raise HetznerError("Hetzner Cloud action %s (id %s) was still running after %d s (wait_timeout); it goes on, so "
                               "check the server before trying again" % (action.get("command"), action.get("id"), timeout))
        sleep(min(interval, left))
        interval = min(interval * 2, 2)
        action = client.action(action["id"])
    if action.get("status") == "error":
        error = action.get("error") or {}
        raise HetznerError("Hetzner Cloud action %s (id %s) failed: %s" % (
            action.get("command"), action.get("id"), ": ".join(str(w) for w in (error.get("code"), error.get("message")) if w) or "no reason given"))
    return action


def _action_summary(action):
    return {"id": action.get("id"), "command": action.get("command"), "status": action.get("status")}


# -- the two APIs --------------------------------------------------------------------------------------------

def robot_host_keys(rescue):
    """The rescue system's public host keys in Robot's answer (host_key), each checked as `<type> <base64>`.

    An entry is the key's text, or a dict with it under data (alone or under key); an entry with only a
    fingerprint cannot be pinned and is left out. Key text that is not one plain key fails."""
    keys = []
    for entry in rescue.get("host_key") or []:
        inner = entry.get("key", entry) if isinstance(entry, dict) else entry
        text = inner.get("data") if isinstance(inner, dict) else inner
        if text is None:
            continue
        try:
            line = public_key_line(text, "the Hetzner Robot API's rescue host_key")
        except HostKeyError as exc:
            raise HetznerError(str(exc))
        if line not in keys:
            keys.append(line)
    return keys


def _result(api, server, rescue_active, password, changed, plan, check_mode, done, host_keys=None):
    result = dict(changed=changed, api=api, server=server, rescue_active=rescue_active, root_password=password,
                  reset=None if check_mode else done, actions=plan["actions"], host_keys=host_keys or [])
    if check_mode:
        result.update(would_enable=plan["enable"], would_disable=plan["disable"], would_reset=plan["reset"])
    return result


def cloud_rescue(client, params, check_mode=False, sleep=time.sleep, clock=time.monotonic):
    """Enable or disable the rescue system of a Cloud server and reset it, as `params` (ARGUMENT_SPEC) ask."""
    found = find_cloud_server(client, params["server"])
    server_id = found["id"]
    ipv4 = ((found.get("public_net") or {}).get("ipv4") or {}).get("ip")
    ipv6 = ((found.get("public_net") or {}).get("ipv6") or {}).get("ip")
    server = dict(id=server_id, name=found.get("name"), ipv4=ipv4, ipv6_network=ipv6, status=found.get("status"))
    key_ids = cloud_key_ids(client, params["ssh_keys"]) if params["rescue"] else []
    # enable_rescue always makes a new password, so enabling is always a change.
    enable = bool(params["rescue"])
    disable = not params["rescue"] and bool(found.get("rescue_enabled"))
    commands = cloud_reset_commands(params["reset"], found.get("status"))
    reset = params["reset"] if commands else None
    plan = dict(enable=enable, disable=disable, reset=reset, actions=[])
    changed = enable or disable or bool(commands)
    if check_mode:
        return _result("cloud", server, enable or (bool(found.get("rescue_enabled")) and not disable), None, changed, plan, True, None)

    def finish(action, must_wait):
        if params["wait"] or must_wait:
            action = wait_for_action(client, action, params["wait_timeout"], sleep, clock)
        plan["actions"].append(_action_summary(action))

    password = None
    if enable:
        answer = client.enable_rescue(server_id, key_ids, params["rescue_type"] or CLOUD_RESCUE_TYPE)
        password = answer.get("root_password")
        # A reset before the rescue system is set would boot the old system.
        finish(answer.get("action") or {}, bool(commands))
    if disable:
        finish(client.disable_rescue(server_id), bool(commands))
    for index, command in enumerate(commands):
        finish(getattr(client, command)(server_id), index + 1 < len(commands))
    return _result("cloud", server, enable, password, changed, plan, False, reset)


def robot_rescue(client, params, check_mode=False):
    """Enable or disable the rescue system of a Robot server and reset it, as `params` (ARGUMENT_SPEC) ask."""
    found = find_robot_server(client, params["server"])
    number = found["server_number"]
    server = dict(id=number, name=found.get("server_name"), ipv4=found.get("server_ip"), ipv6_network=found.get("server_ipv6_net"),
                  status=found.get("status"))
    state = client.rescue(number)
    active = bool(state.get("active"))
    os_name = params["rescue_type"] or ROBOT_RESCUE_OS
    fingerprints = robot_key_fingerprints(client, params["ssh_keys"]) if params["rescue"] else []
    has = sorted(((k or {}).get("key") or {}).get("fingerprint") for k in state.get("authorized_key") or [])
    same = active and state.get("os") == os_name and has == sorted(fingerprints)
    enable = bool(params["rescue"]) and not same
    disable = active and (not params["rescue"] or enable)  # an active rescue with other settings is replaced
    reset_type = ROBOT_RESETS.get(params["reset"])
    plan = dict(enable=enable, disable=disable and not params["rescue"], reset=params["reset"] if reset_type else None, actions=[])
    changed = enable or disable or bool(reset_type)
    password = state.get("password") if same else None
    host_keys = robot_host_keys(state) if same else []
    if check_mode:
        return _result("robot", server, bool(params["rescue"]), password, changed, plan, True, None, host_keys)
    if disable:
        client.disable_rescue(number)
        plan["actions"].append(dict(id=None, command="disable_rescue", status="success"))
    if enable:
        answer = client.enable_rescue(number, os_name, fingerprints)
        password = answer.get("password")
        host_keys = robot_host_keys(answer)
        plan["actions"].append(dict(id=None, command="enable_rescue", status="success"))
    if reset_type:
        client.reset(number, reset_type)
        plan["actions"].append(dict(id=None, command="reset_" + reset_type, status="success"))
    return _result("robot", server, bool(params["rescue"]), password, changed, plan, False, plan["reset"], host_keys)


def run(params, check_mode=False, **client_kwargs):
    """The task's result, for its parameters (ARGUMENT_SPEC, validated); a HetznerError with one line for the user otherwise."""
    if params["wait_timeout"] is not None and params["wait_timeout"] < 0:
        raise HetznerError("wait_timeout must be 0 or more seconds, got %d" % params["wait_timeout"])
    if params["api"] == "cloud":
        sleep = client_kwargs.get("sleep", time.sleep)
        return cloud_rescue(cloud_client(params, **client_kwargs), params, check_mode, sleep=sleep)
    return robot_rescue(robot_client(params, **client_kwargs), params, check_mode)
