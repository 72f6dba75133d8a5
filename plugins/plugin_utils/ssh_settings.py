# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""The ssh and become wiring of nix_copy_closure: an ssh command line that reaches the task's host as Ansible's ssh
connection plugin does, and a command wrapped in the task's become as Ansible would."""

from __future__ import annotations

import re
import shlex

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.utils.path import unfrackpath


def connection_settings(conn, remote_addr=None):
    """What an ssh command line needs from an Ansible ssh connection plugin, or None if it cannot be had.

    None when the connection is no ssh one, or authenticates in a way a plain ssh command cannot
    repeat by itself (a password, a key held in memory, a PKCS#11 PIN).
    """
    if getattr(conn, "transport", None) != "ssh":
        return None

    def option(name):
        try:
            return conn.get_option(name)
        except (AnsibleError, KeyError):
            return None

    if option("password") or option("private_key") or option("pkcs11_provider"):
        return None
    names = ("ssh_executable", "remote_user", "port", "private_key_file", "ssh_args", "ssh_common_args", "ssh_extra_args",
             "host_key_checking", "timeout")
    settings = {name: option(name) for name in names}
    settings["host"] = option("host") or remote_addr
    if not settings["host"]:
        return None
    settings.update(master_settings(conn, option, settings))
    return settings


def master_settings(conn, option, settings):
    """control_path of the SSH master Ansible keeps for the host (ControlPersist), and whether it compresses.

    A transfer multiplexed over that master saves an SSH handshake per task. control_path is None when
    Ansible keeps no master; the path is the one Ansible's ssh plugin gives its own commands.
    """
    args = " ".join(a for a in (settings["ssh_args"], settings["ssh_common_args"], settings["ssh_extra_args"]) if a)
    lowered = args.lower()
    if "controlpersist" not in lowered:
        return {"control_path": None}
    compresses = "-C" in shlex.split(args) or bool(re.search(r"compression[= ]+\"?yes", lowered))
    named = re.search(r"controlpath[= ]+(\"[^\"]*\"|\S+)", args, re.IGNORECASE)
    if named:
        path = named.group(1).strip('"')
    else:
        try:
            path = option("control_path") or conn._create_control_path(settings["host"], settings["port"], settings["remote_user"])
            path = path % {"directory": unfrackpath(option("control_path_dir") or "~/.ansible/cp")}
        except (AttributeError, TypeError, ValueError, KeyError):
            return {"control_path": None}
    return {"control_path": path, "master_compresses": compresses}


def becomes(action):
    """Whether a sudoable command of this task runs under become (the rule of _low_level_execute_command)."""
    ruser = action._get_remote_user()
    buser = action.get_become_option("become_user")
    return bool(action._connection.become) and (C.BECOME_ALLOW_SAME_USER or buser != ruser or not any((ruser, buser)))


def become_wrap(action, cmd):
    """cmd as _low_level_execute_command would run it (become, executable); None when become needs a password."""
    conn = action._connection
    if becomes(action):
        cmd = conn.become.build_become_command(cmd, conn._shell)
        if conn.become.expect_prompt():
            return None
    executable = action._play_context.executable
    if conn.allow_executable and executable:
        cmd = executable + " -c " + shlex.quote(cmd)
    return cmd
