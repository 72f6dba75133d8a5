# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of module_utils/host_program: an action plugin runs its module's code without AnsiballZ."""

from __future__ import annotations

import inspect
import shlex

from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ansinix.nixos.plugins.module_utils import host_program

# Where a host's Python is looked for when the inventory does not say (the NixOS system's first).
PYTHONS = ("/run/current-system/sw/bin/python3", "python3", "/usr/bin/python3")


def sources_of(*modules):
    """{dotted name: source} of module utils, for host_program.program()."""
    return {m.__name__: inspect.getsource(m) for m in modules}


def host_python(action, task_vars):
    """The host's Python as the inventory names it (or as Ansible found it), or None."""
    if action._task.delegate_to:
        # As ActionBase does: the variables of the host the task is delegated to.
        task_vars = (task_vars.get("ansible_delegated_vars") or {}).get(action._task.delegate_to) or {}
    configured = task_vars.get("ansible_python_interpreter")
    if configured:
        configured = str(action._templar.template(configured)).strip()
        if configured and not configured.startswith("auto"):
            return configured
    return (task_vars.get("ansible_facts") or {}).get("discovered_interpreter_python")


class DirectRun:
    """A module's code, ready to run on the task's host by one `python3 -` (host_program)."""

    def __init__(self, command, code, what):
        self.command = command  # a shell command that execs the host's Python on its stdin
        self.code = code
        self.what = what

    def run(self, action):
        """The module's result, or None: run the module."""
        try:
            res = action._low_level_execute_command(self.command, sudoable=True, in_data=self.code.encode())
        except AnsibleError:
            return None  # the module's run says what is wrong with the connection
        return self.result(res)

    def result(self, res):
        """The result in a command's output; None when it found no Python 3 (the module's discovery says more)."""
        if res.get("rc") == host_program.NO_PYTHON_RC:
            return None
        result = host_program.parse_result(res.get("stdout"))
        if result is None:
            output = (res.get("stderr") or res.get("stdout") or "").strip().splitlines()
            return {"failed": True, "msg": "%s could not run on the host (exit %s): %s"
                    % (self.what, res.get("rc"), output[-1] if output else "no output")}
        return result


def validated_params(action, spec, path_options=()):
    """The task's arguments as the module would have them, checked on the controller; None: leave them to the module.

    spec: the module's argument_spec, mutually_exclusive, required_one_of (a dict). None for values the module
    words its own way, and for paths the host would expand (~, $ in path_options).
    """
    args = action._task.args
    if any(c in str(args.get(name, "")) for name in path_options for c in "~$"):
        return None
    validated = ArgumentSpecValidator(**spec).validate(dict(args))
    return None if validated.error_messages else validated.validated_parameters


def direct_run(action, task_vars, params, sources, function, what):
    """A DirectRun of function(params) on the task's host, or None: run the module.

    Saves Ansible's packing of the module and the host's import of ansible.module_utils.basic. Only where
    Ansible itself would pipeline a module (its code goes over stdin), and only for a real run: check and
    diff mode and async are the module's. params: from validated_params(); function: "dotted.module.name:function",
    a module among sources.
    """
    task = action._task
    if params is None or task.check_mode or task.diff or task.async_val or not action._is_pipelining_enabled("new"):
        return None
    module, _sep, name = function.partition(":")
    code = host_program.program(sources, module, name, params, what)
    # The task's environment, as Ansible gives it to a module: assignments before exec reach the program.
    env = action._compute_environment_string()
    python = host_python(action, task_vars)
    if python:
        command = "%sexec %s -" % (env, python)
    else:
        command = "; ".join("command -v %s >/dev/null 2>&1 && %sexec %s -" % (shlex.quote(p), env, shlex.quote(p)) for p in PYTHONS)
        command += "; exit %d" % host_program.NO_PYTHON_RC
    return DirectRun(command, code, what)


def run_module_code(action, task_vars, spec, sources, function, what, path_options=()):
    """direct_run() of the validated arguments, run at once: the module's result, or None: run the module."""
    direct = direct_run(action, task_vars, validated_params(action, spec, path_options), sources, function, what)
    return direct.run(action) if direct else None
