# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of hetzner_rescue: hides a result that holds a rescue root password from the output.

The module returns the password so that a later task can use it (``register``). Ansible shows
results in its output (``-v``, callbacks, AWX job events); a result marked ``_ansible_no_log`` is
shown censored everywhere, while the registered variable keeps all of it.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module_result = self._execute_module(module_name="ansinix.nixos.hetzner_rescue", module_args=self._task.args,
                                             task_vars=task_vars)
        result.update(module_result)
        if result.get("root_password"):
            result["_ansible_no_log"] = True
        return result
