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

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# After the confirm timeout, how long the host may take to roll back and let us in again.
RECOVERY_GRACE = 120
# How long the runner may take to finish after the confirmation (pruning generations included).
FINISH_WAIT = 300
SAME_CONNECTION_RC = 4

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


def lost_connection_message(host, exc):
    """One line for a connection that failed while the module ran: what happened, and why a rerun is safe."""
    lines = str(exc).strip().splitlines()
    return ("the connection to %s was lost while nixos_switch ran (%s). A switch that had started goes on on the host, "
            "detached from the connection. Rerunning the task is safe: it waits for that switch under the deploy lock "
            "(/run/ansinix/deploy.lock) and reports how it ended from its runner's status file (last_activation)"
            % (host, lines[-1] if lines else "no detail"))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        try:
            module_result = self._execute_module(module_name="ansinix.nixos.nixos_switch", module_args=self._task.args,
                                                 task_vars=task_vars)
        except AnsibleConnectionFailure as exc:
            result.update(unreachable=True, msg=lost_connection_message(self._play_context.remote_addr, exc))
            return result
        request = module_result.pop("confirm", None)
        if request and not module_result.get("failed"):
            self._confirm(request, module_result)
        result.update(module_result)
        return result

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
        try:
            res = self._fresh_command(script)
        except AnsibleError as exc:
            error = "no new connection: %s" % str(exc).strip().splitlines()[-1]
        else:
            connection, status = parse_confirm_output(res.get("stdout"))
            result["confirm_connection"] = connection if connection != "none" else None
            if res.get("rc") == SAME_CONNECTION_RC:
                # The connection plugin gave us the old connection again: no new login was tested.
                status = None
                error = ("the connection plugin %s reused the connection the switch ran over (sshd %s), so no new login could be "
                         "tested" % (self._connection.transport, connection))
            elif res.get("rc") != 0 or status is None:
                error = (res.get("stderr") or res.get("stdout") or "exit %s" % res.get("rc")).strip().splitlines()[-1]
            elif status.get("confirmed"):
                self._note_how_confirmed(request, result)
        if status is not None and status.get("state") == "finished":
            self._finish(status, result, error)
            return
        display.warning("nixos_switch: could not confirm the new system over a new connection (%s); waiting up to %ss for the "
                        "host to roll itself back" % (error or "no answer", int(request["timeout"]) + RECOVERY_GRACE))
        status = self._wait_for_runner(request, int(request["timeout"]) + RECOVERY_GRACE)
        self._finish(status, result, error or "no answer")

    def _note_how_confirmed(self, request, result):
        """confirmed_by: new_connection when both the switch and the confirmation came over SSH logins the host could
        tell apart; unverified (with a warning) when either had no sshd above it (a local connection, a become method
        such as machinectl or run0 that starts commands outside the login), so the host took the confirmation on trust."""
        original, confirming = request.get("connection_id"), result.get("confirm_connection")
        if original and confirming and original != confirming:
            result["confirmed_by"] = "new_connection"
            return
        result["confirmed_by"] = "unverified"
        display.warning("nixos_switch: the host could not tell which SSH login %s came over (connection %s, become %s), so the "
                        "magic rollback took the confirmation on trust: it proves the host still runs commands, not that a new "
                        "SSH login works. Use the ssh or paramiko connection with become_method sudo or su for the full check"
                        % ("the switch" if not original else "the confirmation", self._connection.transport,
                           self._play_context.become_method if self._play_context.become else "off"))

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
