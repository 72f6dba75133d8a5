# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of hetzner_rescue: the rescue root password reaches the registered variable and no output.

The module returns the password so that a later task can use it (``register``). Two things would show it:
Ansible's output of results (``-v``, callbacks, AWX job events), which a result marked ``_ansible_no_log``
avoids (shown censored, the registered variable keeps all of it); and ANSIBLE_DEBUG, which prints every
module's raw output whatever no_log says. So the module seals the password to a key this plugin makes for
each run (module_utils/sealed.py) and only this plugin opens it.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.ansinix.nixos.plugins.module_utils.sealed import SealError, new_key_pair, unseal


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "seal_key" in self._task.args:
            result.update(failed=True, msg="seal_key is set by the action plugin of hetzner_rescue; remove it from the task")
            return result
        private, public = new_key_pair()
        module_args = dict(self._task.args, seal_key=public)
        module_result = self._execute_module(module_name="ansinix.nixos.hetzner_rescue", module_args=module_args,
                                             task_vars=task_vars)
        sealed = module_result.pop("sealed_root_password", None)
        # The module's echo of its arguments names the key: it is public, but it is no user's option.
        module_args_shown = (module_result.get("invocation") or {}).get("module_args")
        if isinstance(module_args_shown, dict):
            module_args_shown.pop("seal_key", None)
        result.update(module_result)
        if sealed is not None:
            try:
                result["root_password"] = unseal(sealed, private)
            except SealError as exc:
                result.update(failed=True, root_password=None, msg="the rescue root password came back damaged (%s); run again" % exc)
        if result.get("root_password"):
            result["_ansible_no_log"] = True
        return result
