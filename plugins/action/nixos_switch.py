# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of nixos_switch: confirms a switch over a new connection (magic rollback)."""

from __future__ import annotations

import shlex
import time

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# After the confirm timeout, how long the host may take to roll back and let us in again.
RECOVERY_GRACE = 60


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module_result = self._execute_module(module_name="ansinix.nixos.nixos_switch", module_args=self._task.args,
                                             task_vars=task_vars)
        confirm = module_result.pop("confirm", None)
        if confirm and not module_result.get("failed"):
            self._confirm(confirm, module_result)
        result.update(module_result)
        return result

    def _fresh_command(self, cmd):
        """Run cmd over a connection opened now (a cached or multiplexed one would prove nothing)."""
        self._connection.reset()
        return self._low_level_execute_command(cmd, sudoable=True)

    def _read_outcome(self, status_dir):
        res = self._low_level_execute_command("cat %s 2>/dev/null || true" % shlex.quote(status_dir + "/outcome"), sudoable=True)
        return (res.get("stdout") or "").strip()

    def _confirm(self, confirm, result):
        status_dir, timeout = confirm["status_dir"], int(confirm["timeout"])
        marker = shlex.quote(status_dir + "/confirmed")
        try:
            res = self._fresh_command("test -d %s && echo confirmed > %s" % (shlex.quote(status_dir), marker))
            reached = res.get("rc") == 0
            error = (res.get("stderr") or res.get("stdout") or "").strip()
        except AnsibleError as exc:
            reached, error = False, str(exc)
        if reached:
            # Make sure the runner took the confirmation (it looks ten times a second), not a timeout.
            outcome = ""
            for _attempt in range(100):
                outcome = self._read_outcome(status_dir)
                if outcome:
                    break
                time.sleep(0.2)
            if outcome == "done":
                result["confirmed"] = True
                return
            error = "the host reported %r instead of taking the confirmation" % (outcome or "nothing")
        display.warning("nixos_switch: could not confirm the new system on %s over a new connection (%s); waiting %ss for the "
                        "host to roll itself back" % (self._task.get_name(), error.splitlines()[-1] if error else "no answer", timeout))
        self._wait_for_rollback(status_dir, timeout, result, error)

    def _wait_for_rollback(self, status_dir, timeout, result, error):
        deadline = time.time() + timeout + RECOVERY_GRACE
        time.sleep(min(timeout, 2))
        outcome = ""
        while time.time() < deadline:
            try:
                self._connection.reset()
                outcome = self._read_outcome(status_dir)
                if outcome and outcome != "done":
                    break
            except AnsibleError:
                pass
            time.sleep(2)
        result["failed"] = True
        result["confirmed"] = False
        if outcome == "unconfirmed":
            current = self._low_level_execute_command("readlink -f /run/current-system", sudoable=True).get("stdout", "").strip()
            result.update(rolled_back=True, current=current, changed=True)
            result["msg"] = ("the new system %s did not let a new SSH connection in (%s); the host rolled itself back to %s"
                             % (result.get("system"), error.splitlines()[-1] if error else "no answer", current))
        else:
            result["msg"] = ("the new system %s could not be confirmed (%s) and the host could not be reached again within "
                             "%ss to learn whether it rolled back; check it on the console" % (result.get("system"), error, timeout + RECOVERY_GRACE))
