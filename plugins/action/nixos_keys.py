# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of nixos_keys: reads each key's source here, checks everything, then sends contents no_log."""

from __future__ import annotations

import subprocess

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.ansinix.nixos.plugins.module_utils.keys import KEY_OPTIONS, KeysError, check_name, parse_mode

KNOWN = set(KEY_OPTIONS) | {"user", "group", "permissions", "dest_dir", "defer_owner"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        keys = args.get("keys")
        try:
            if not isinstance(keys, dict) or not keys:
                raise KeysError("keys must be a dictionary of key name -> {content | src | command, user, group, permissions}")
            resolved = dict((name, self._resolve(name, spec)) for name, spec in keys.items())
            # Metadata and contents travel apart: only `contents` is no_log, so owner names stay readable
            # in results and messages while every secret is masked wherever Ansible shows arguments.
            args["contents"] = dict((name, spec.pop("content")) for name, spec in resolved.items())
            args["keys"] = resolved
        except KeysError as exc:
            result.update(failed=True, msg=exc.msg)
            return result
        module_result = self._execute_module(module_name="ansinix.nixos.nixos_keys", module_args=args, task_vars=task_vars)
        module_result.pop("invocation", None)
        result.update(module_result)
        return result

    def _resolve(self, name, spec):
        check_name(name)
        if not isinstance(spec, dict):
            raise KeysError("key %r: give a dictionary with one of content, src or command" % name)
        unknown = sorted(set(spec) - KNOWN)
        if unknown:
            raise KeysError("key %r: unknown setting(s) %s; known: %s" % (name, ", ".join(unknown), ", ".join(sorted(KNOWN))))
        sources = [o for o in KEY_OPTIONS if spec.get(o) is not None]
        if len(sources) != 1:
            raise KeysError("key %r: give exactly one of content, src or command (got %s)" % (name, ", ".join(sources) or "none"))
        if spec.get("permissions") is not None:
            parse_mode(name, spec["permissions"])
        resolved = dict((k, v) for k, v in spec.items() if k not in KEY_OPTIONS)
        resolved["content"] = getattr(self, "_from_" + sources[0])(name, spec[sources[0]])
        return resolved

    def _from_content(self, name, content):
        if not isinstance(content, str):
            raise KeysError("key %r: content must be text" % name)
        return content

    def _from_src(self, name, src):
        try:
            path = self._find_needle("files", src)
            real = self._loader.get_real_file(path, decrypt=True)
        except AnsibleError as exc:
            raise KeysError("key %r: cannot read src %s: %s" % (name, src, to_text(exc).splitlines()[0])) from None
        try:
            with open(real, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise KeysError("key %r: cannot read src %s: %s" % (name, src, exc.strerror)) from None
        finally:
            self._loader.cleanup_tmp_file(real)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise KeysError("key %r: src %s is not text (UTF-8); base64-encode binary secrets" % (name, src)) from None

    def _from_command(self, name, command):
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            raise KeysError("key %r: command did not finish within 300 seconds" % name) from None
        if proc.returncode != 0:
            # Only the exit code: what a failing secret command prints may itself be sensitive.
            program = command.split()[0] if command.split() else command
            raise KeysError("key %r: command %r failed on the controller (exit %d)" % (name, program, proc.returncode))
        try:
            return proc.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise KeysError("key %r: command printed something that is not text (UTF-8)" % name) from None
