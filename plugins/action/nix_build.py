# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of nix_build: runs the module's code without AnsiballZ where Ansible would pipeline.

A deploy's build is one task on the controller or the builder, in the way of every host; a build that
has nothing to do takes its Nix commands a tenth of what Ansible's packing and the module library's
imports cost. Everything else (check mode, async) runs the module as Ansible's own `normal` action does.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.ansinix.nixos.plugins.module_utils import build, host_program, nix
from ansible_collections.ansinix.nixos.plugins.plugin_utils.host_run import run_module_code, sources_of

HOST_SOURCES = sources_of(build, host_program, nix)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module_result = run_module_code(self, task_vars, build.SPEC, HOST_SOURCES, build.__name__ + ":run_on_host", "nix_build",
                                        path_options=("file", "out_link"))
        if module_result is not None:
            result.update(module_result)
            return result
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result.update(self._execute_module(module_name="ansinix.nixos.nix_build", module_args=self._task.args, task_vars=task_vars,
                                           wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
