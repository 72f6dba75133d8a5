# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of nixos_keys: reads each key's source here, checks everything, then sends contents no_log."""

from __future__ import annotations

import subprocess

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.ansinix.nixos.plugins.module_utils.keys import (
    KEY_OPTIONS, SETTINGS, KeysError, check_dest_dir, check_name, parse_mode)

KNOWN = set(KEY_OPTIONS) | set(SETTINGS)
COMMAND_TIMEOUT = 300


def kind(value):
    """What a YAML value is, in YAML's words (Ansible's own classes carry internal names)."""
    for types, name in ((bool, "a boolean"), ((int, float), "a number"), (dict, "a dictionary"), (list, "a list"), (str, "text")):
        if isinstance(value, types):
            return name
    return "null" if value is None else type(value).__name__


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            # Before any key is read: the module would otherwise go through a file on the host, secrets and all.
            refusal = self._why_no_pipelining()
            if refusal:
                raise KeysError(refusal)
            if "contents" in args:
                raise KeysError("contents is filled in by the action plugin; give each key's content, src or command in keys")
            keys = args.get("keys")
            if keys is None:
                raise KeysError("keys is required: a dictionary of key name -> {content | src | command, user, group, permissions}")
            if not isinstance(keys, dict):
                raise KeysError("keys must be a dictionary of key name -> {content | src | command, user, group, permissions}, "
                                "got %s" % kind(keys))
            if args.get("dest_dir") is not None:
                check_dest_dir("(all)", args["dest_dir"])
            # Every key is checked and read before the first byte goes to the host.
            resolved = dict((name, self._resolve(name, spec)) for name, spec in keys.items())
            # Metadata and contents travel apart: only `contents` is no_log, so names and owners stay readable
            # in results and messages while Ansible masks every secret wherever it shows arguments or results.
            args["contents"] = dict((name, spec.pop("content")) for name, spec in resolved.items())
            args["keys"] = resolved
        except KeysError as exc:
            result.update(failed=True, msg=exc.msg)
            return result
        module_result = self._execute_module(module_name="ansinix.nixos.nixos_keys", module_args=args, task_vars=task_vars)
        module_result.pop("invocation", None)
        result.update(module_result)
        return result

    def _is_pipelining_enabled(self, module_style, wrap_async=False):
        # The module carries the secrets in its arguments. Without pipelining Ansible writes module and
        # arguments to a file in the login user's temporary directory on the host (and keeps it there with
        # ANSIBLE_KEEP_REMOTE_FILES). Sent over the connection's stdin, they touch no disk. So pipeline
        # whenever the connection and the become method can, even where pipelining is off; run() refuses
        # before anything is sent where they cannot.
        return module_style == "new" and not wrap_async and self._why_no_pipelining() is None

    def _why_no_pipelining(self):
        """None when the module can travel over the connection's stdin, else the one-line reason why not."""
        connection = self._connection
        fix = ("use a become method that pipelines (sudo, doas) or log in as root without become, "
               "so that the keys travel over the connection and never rest in a file on the host")
        if self._task.async_val:
            return "nixos_keys cannot run with async: an async task's module is written to a file on the host first; drop async"
        if not connection.has_pipelining:
            return ("nixos_keys will not run over the %s connection: it cannot send the module over stdin, so the keys "
                    "would be written to a file on the host; use the ssh connection" % connection.transport)
        become = connection.become
        if become is not None and not become.pipelining:
            return "nixos_keys will not run with become method %s, which cannot pipeline; %s" % (become.name, fix)
        # ssh with a tty forced (-tt) cannot pipeline: the interpreter would read the module interactively.
        if getattr(connection, "_is_tty_requested", lambda: False)():
            return ("nixos_keys will not run with a tty forced on the connection (-tt), which cannot pipeline; drop -tt from "
                    "the ssh arguments for this task")
        return None

    def _resolve(self, name, spec):
        check_name(name)
        if not isinstance(spec, dict):
            raise KeysError("key %r: give a dictionary with one of content, src or command, got %s" % (name, kind(spec)))
        unknown = sorted(set(spec) - KNOWN)
        if unknown:
            raise KeysError("key %r: unknown setting(s) %s; known: %s" % (name, ", ".join(unknown), ", ".join(sorted(KNOWN))))
        sources = [o for o in KEY_OPTIONS if spec.get(o) is not None]
        if len(sources) != 1:
            raise KeysError("key %r: give exactly one of content, src or command (got %s)" % (name, ", ".join(sources) or "none"))
        if spec.get("permissions") is not None:
            parse_mode(name, spec["permissions"])
        if spec.get("dest_dir") is not None:
            check_dest_dir(name, spec["dest_dir"])
        resolved = dict((k, v) for k, v in spec.items() if k not in KEY_OPTIONS)
        resolved["content"] = getattr(self, "_from_" + sources[0])(name, spec[sources[0]])
        return resolved

    def _from_content(self, name, content):
        if not isinstance(content, str):
            raise KeysError("key %r: content must be text, got %s; quote numbers in YAML" % (name, kind(content)))
        return str(content)

    def _from_src(self, name, src):
        if not isinstance(src, str):
            raise KeysError("key %r: src must be a path, got %s" % (name, kind(src)))
        try:
            path = self._find_needle("files", src)
            # Decrypts a vault-encrypted file into a private temporary file, removed below.
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
        if not isinstance(command, str) or not command.strip():
            raise KeysError("key %r: command must be a shell command line" % name)
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=COMMAND_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise KeysError("key %r: command did not finish within %d seconds" % (name, COMMAND_TIMEOUT)) from None
        if proc.returncode != 0:
            # The exit code and the program only: what a secret command prints may itself be secret.
            raise KeysError("key %r: command %r failed on the controller (exit %d)"
                            % (name, command.split()[0], proc.returncode))
        try:
            return proc.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise KeysError("key %r: command printed something that is not text (UTF-8)" % name) from None
