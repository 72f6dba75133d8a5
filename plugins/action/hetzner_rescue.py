# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""hetzner_rescue, all of it: it only talks to the Hetzner APIs, so it runs here, on the controller.

No module runs. A module's arguments (the credentials) and its raw output (the rescue root password) are
what ANSIBLE_DEBUG prints whatever no_log says; here neither ever exists. The task's options are checked
against the same spec a module would use (module_utils/rescue.py), environment fallbacks included: they read
the controller's environment. delegate_to changes nothing: the API calls always run on the controller.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

from ansible_collections.ansinix.nixos.plugins.module_utils.hetzner import HetznerError
from ansible_collections.ansinix.nixos.plugins.module_utils.rescue import ARGUMENT_SPEC, run

NAME = "ansinix.nixos.hetzner_rescue"


def no_log_values(spec, params):
    """The values of the no_log options (the credentials) in `params`: no message may show them."""
    found = set()
    for name, option in spec.items():
        value = params.get(name) if isinstance(params, dict) else None
        if option.get("no_log") and isinstance(value, str) and value:
            found.add(value)
        if option.get("options") and isinstance(value, dict):
            found |= no_log_values(option["options"], value)
    return found


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        checked = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        secrets = no_log_values(ARGUMENT_SPEC, checked.validated_parameters)
        if checked.error_messages:
            msg = checked.errors.msg
            if checked.unsupported_parameters:
                msg = "Unsupported parameters for (%s) module: %s" % (NAME, msg)
            result.update(failed=True, msg=remove_values(msg, secrets))
            return result
        try:
            result.update(run(checked.validated_parameters, bool(self._task.check_mode)))
        except HetznerError as exc:
            result.update(failed=True, msg=remove_values(exc.msg, secrets))
            return result
        if result.get("root_password"):
            # Censored in Ansible's output (-v, callbacks); the registered variable keeps the password.
            result["_ansible_no_log"] = True
        return result
