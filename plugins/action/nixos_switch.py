# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of nixos_switch: confirms a switch over a new connection (magic rollback).

The module leaves the host waiting for a confirmation token. Only a connection opened after the
switch proves that the new system still lets us in: a multiplexed SSH master (ControlPersist) or a
cached paramiko transport would carry the token over the old, already authenticated connection.
So the connection is reset first, and the host-side script checks that its own sshd process is
not the one the module ran under; the runner on the host checks that again before it accepts.
"""

from __future__ import annotations

import json
import shlex
import time

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.ansinix.nixos.plugins.module_utils import (
    activation, activation_runner, host_program, nix, nixos, switch,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, check_store_path
from ansible_collections.ansinix.nixos.plugins.module_utils.switch import (
    ACTIVATES, ARGUMENT_SPEC, SETS_PROFILE, up_to_date_result, up_to_date_script, validate_params,
)
from ansible_collections.ansinix.nixos.plugins.plugin_utils.host_run import direct_run, sources_of, validated_params

display = Display()

# After the confirm timeout, how long the host may take to roll back and let us in again.
RECOVERY_GRACE = 120
# How long the runner may take to finish after the confirmation (pruning generations included).
FINISH_WAIT = 300
SAME_CONNECTION_RC = 4
# What the module runs on the host, sent as it is when the action starts it without AnsiballZ.
HOST_SOURCES = sources_of(activation, activation_runner, host_program, nix, nixos, switch)

# Runs on the host over the new connection: find this command's sshd process (the connection's),
# refuse to confirm over the module's, hand the runner the token, and wait for it to finish.
CONFIRM_SCRIPT = r"""
dir=%(dir)s; original=%(original)s
conn=none; p=$$
while [ "$p" -gt 1 ] 2>/dev/null; do
  read -r stat < /proc/$p/stat || break
  read -r comm < /proc/$p/comm || break
  set -- ${stat##*\) }
  case $comm in sshd*) conn="$p:${20}"; break ;; esac
  p=$2
done
echo "connection $conn"
[ -d "$dir" ] || { echo "the status directory $dir is gone"; exit 3; }
if [ "$original" != none ] && [ "$conn" = "$original" ]; then exit %(same_rc)d; fi
printf '%%s %%s\n' %(token)s "$conn" > "$dir/confirm.tmp" && mv -f "$dir/confirm.tmp" "$dir/confirm" || exit 5
i=0
while [ "$i" -lt %(polls)d ] && ! grep -q '"state": "finished"' "$dir/status.json"; do
  if [ "$i" -lt 25 ]; then sleep 0.02; else sleep 0.1; fi; i=$((i + 1))
done
echo status; cat "$dir/status.json"
"""


def parse_confirm_output(stdout):
    """(connection id of the confirming command, the runner's status or None) from CONFIRM_SCRIPT's output."""
    connection, status = None, None
    # With a terminal (ssh -tt) lines end in \r\n.
    lines = [line.rstrip("\r") for line in (stdout or "").splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("connection "):
            connection = line.split(None, 1)[1].strip()
        elif line == "status":
            try:
                status = json.loads("\n".join(lines[i + 1:]))
            except ValueError:
                status = None
            break
    return connection, status


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        params = validated_params(self, {"argument_spec": ARGUMENT_SPEC}, path_options=("profile",))
        direct = direct_run(self, task_vars, params, HOST_SOURCES, switch.__name__ + ":run_on_host", "nixos_switch")
        module_result = self._already_there(params, direct)
        if module_result is None and direct is not None:
            module_result = direct.run(self)
        if module_result is None:
            module_result = self._execute_module(module_name="ansinix.nixos.nixos_switch", module_args=self._task.args,
                                                 task_vars=task_vars)
        request = module_result.pop("confirm", None)
        if request and not module_result.get("failed"):
            self._confirm(request, module_result)
        result.update(module_result)
        return result

    # -- a host that already runs the system ---------------------------------------------------------

    def _already_there(self, params, direct):
        """The module's result when the host already runs `path`, read by one shell command; None: run the module.

        A rerun that changes nothing then costs one command over the task's connection, not a Python start on
        the host. Anything unusual (check or diff mode, a specialisation, another deploy holding the lock, not
        root, not NixOS) is left to the module, which says what is wrong or waits. With a direct run (direct),
        the same command goes on to run the module's code where the host does not run `path` yet, or where
        only the module can decide: its result is returned then.
        """
        if params is None or self._task.check_mode or self._task.diff or not params["path"]:
            return None
        if params["rollback"] or params["generation"] is not None or params["specialisation"]:
            return None
        action, profile = params["action"], params["profile"]
        if action not in SETS_PROFILE + ACTIVATES:
            return None
        try:
            path = check_store_path(params["path"])
            # Values the module would refuse are the module's to report, up to date or not.
            validate_params(params)
        except NixError:
            return None
        script = up_to_date_script(path, profile, params["require_nixos"], action, otherwise=direct.command if direct else None)
        try:
            res = self._low_level_execute_command(script, sudoable=True, in_data=direct.code.encode() if direct else None)
        except AnsibleError:
            return None  # the module's run says what is wrong with the connection
        if direct is not None and "end" not in [line.rstrip("\r") for line in (res.get("stdout") or "").splitlines()]:
            return direct.result(res)  # the module's code ran (or found no Python: None)
        if res.get("rc") != 0:
            return None
        return up_to_date_result(action, path, profile, res.get("stdout"))

    # -- over a new connection ----------------------------------------------------------------------

    def _fresh_command(self, cmd):
        """Run cmd as root over a connection opened now: reset() stops an SSH master, reconnects paramiko."""
        self._connection.reset()
        return self._low_level_execute_command(cmd, sudoable=True)

    def _confirm(self, request, result):
        # Stripped: Ansible appends " && sleep 0" to the last line.
        script = CONFIRM_SCRIPT.strip() % {
            "dir": shlex.quote(request["status_dir"]), "original": shlex.quote(request.get("connection_id") or "none"),
            "token": shlex.quote(request["token"]), "same_rc": SAME_CONNECTION_RC, "polls": FINISH_WAIT * 10,
        }
        error, status = None, None
        for _attempt in range(2):
            try:
                res = self._fresh_command(script)
            except AnsibleError as exc:
                error = "no new connection: %s" % str(exc).strip().splitlines()[-1]
                break
            connection, status = parse_confirm_output(res.get("stdout"))
            result["confirm_connection"] = connection
            if res.get("rc") == SAME_CONNECTION_RC:
                # The connection plugin gave us the old connection again; one more reset, then give up.
                error = ("the connection plugin %s reused the connection the switch ran over (sshd %s), so no new login could be "
                         "tested" % (self._connection.transport, connection))
                continue
            if res.get("rc") != 0 or status is None:
                error = (res.get("stderr") or res.get("stdout") or "exit %s" % res.get("rc")).strip().splitlines()[-1]
            else:
                error = None
            break
        if status is not None and status.get("state") == "finished":
            self._finish(status, result, error)
            return
        display.warning("nixos_switch: could not confirm the new system over a new connection (%s); waiting up to %ss for the "
                        "host to roll itself back" % (error or "no answer", int(request["timeout"]) + RECOVERY_GRACE))
        status = self._wait_for_runner(request, int(request["timeout"]) + RECOVERY_GRACE)
        self._finish(status, result, error or "no answer")

    def _wait_for_runner(self, request, timeout):
        """The runner's final status, read over new connections as soon as one gets in, or None."""
        deadline = time.time() + timeout
        cmd = "cat %s" % shlex.quote(request["status_dir"] + "/status.json")
        while time.time() < deadline:
            try:
                res = self._fresh_command(cmd)
                status = json.loads(res.get("stdout") or "null") if res.get("rc") == 0 else None
                if status and status.get("state") == "finished":
                    return status
            except (AnsibleError, ValueError):
                pass
            time.sleep(1)
        return None

    def _finish(self, status, result, error):
        if status is None:
            result.update(failed=True, confirmed=False)
            result["msg"] = ("the new system %s could not be confirmed (%s) and the host could not be reached again to learn "
                             "whether it rolled back; look at it on its console" % (result.get("system"), error))
            return
        result.update(current=status.get("current_system"), generation=status.get("current_generation"),
                      rolled_back=bool(status.get("rolled_back")), deleted_generations=status.get("deleted_generations") or [],
                      confirmed=bool(status.get("confirmed")))
        if status.get("outcome") == "done" and status.get("confirmed"):
            return
        result["failed"] = True
        if status.get("rolled_back") and status.get("rollback_reason") == "unconfirmed":
            errors = status.get("rollback_errors") or []
            result["msg"] = ("the new system %s did not let a new SSH connection in (%s); the host rolled itself back to %s "
                             "(generation %s)%s" % (result.get("system"), error or "confirmation too late", status.get("current_system"),
                                                    status.get("current_generation"),
                                                    ", with errors: " + "; ".join(errors) if errors else ""))
        else:
            result["msg"] = ("the switch to %s did not complete after the confirmation: %s (outcome %s); log on the host: %s"
                             % (result.get("system"), status.get("error") or error, status.get("outcome"), status.get("log")))
