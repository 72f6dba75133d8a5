# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copies store closures from the controller to the task's host, sending only what is missing."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.playbook.play_context import PlayContext
from ansible.plugins.action import ActionBase

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import (
    ARGUMENT_SPEC, NO_NIX_RC, batches, choose_method, ssh_options,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import INSTALL_HINT, NixError, check_store_path, error_summary

MIB = 1024 * 1024
QUERY_CHUNK = 500


def local(argv, stdout=subprocess.PIPE, env=None):
    """Run a nix command on the controller; NixError with Nix's message when it fails."""
    try:
        proc = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, env=env, check=False)
    except FileNotFoundError:
        raise NixError("`%s` was not found on the controller: %s" % (argv[0], INSTALL_HINT)) from None
    if proc.returncode != 0:
        raise NixError("%s failed on the controller: %s" % (argv[0], error_summary(proc.stderr.decode(errors="replace"))))
    return proc.stdout.decode() if isinstance(proc.stdout, bytes) else ""


class ControllerStore:
    """The controller's own Nix store as the source of a copy."""

    name = "the controller"

    def run(self, argv):
        return local(argv)

    def export_to(self, paths, local_file, compress):
        exporter = subprocess.Popen(["nix-store", "--export"] + paths, stdout=subprocess.PIPE if compress else local_file,
                                    stderr=subprocess.PIPE)
        gzip_rc = 0
        if compress:
            gzip_rc = subprocess.run(["gzip", "-1"], stdin=exporter.stdout, stdout=local_file, check=False).returncode
            exporter.stdout.close()
        err = exporter.communicate()[1]
        if exporter.returncode != 0 or gzip_rc != 0:
            raise NixError("nix-store --export failed on the controller: %s" % error_summary(err.decode(errors="replace")))

    def close(self):
        pass


class HostStore:
    """Another inventory host's store as the source: the controller relays, so the two hosts need no SSH trust."""

    def __init__(self, action, name, task_vars):
        self.name = name
        hostvars = task_vars.get("hostvars", {})
        if name not in hostvars:
            raise NixError("src_host %r is not a host of the inventory" % name)
        variables = dict(hostvars[name])
        templar = action._templar
        variables.setdefault("ansible_host", name)
        play_context = PlayContext().set_task_and_variable_override(task=action._task, variables=variables, templar=templar)
        conn_type = templar.template(variables.get("ansible_connection", "ssh"))
        self.connection = action._shared_loader_obj.connection_loader.get(conn_type, play_context, None)
        if self.connection is None:
            raise NixError("src_host %r: connection plugin %r not found" % (name, conn_type))
        options = {}
        for var in C.config.get_plugin_vars("connection", self.connection._load_name):
            if var in variables:
                options[var] = templar.template(variables[var])
        self.connection.set_options(task_keys=action._task.dump_attrs(), var_options=options)
        self.connection._shell.set_options(var_options={})
        self.tmpdir = None

    def _exec(self, cmd):
        # Not sudoable: no terminal is allocated, so the output is exactly what the command printed.
        rc, out, err = self.connection.exec_command(
            "/bin/sh -c %s" % shlex.quote("PATH=$PATH:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin; " + cmd),
            sudoable=False)
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def run(self, argv):
        rc, out, err = self._exec(" ".join(shlex.quote(a) for a in argv))
        if rc == NO_NIX_RC:
            raise NixError("`%s` was not found on src_host %s: %s" % (argv[0], self.name, INSTALL_HINT))
        if rc != 0:
            raise NixError("%s failed on src_host %s: %s" % (argv[0], self.name, error_summary(err or out)))
        return out

    def export_to(self, paths, local_file, compress):
        if self.tmpdir is None:
            self.tmpdir = self.run(["mktemp", "-d", "/tmp/ansinix-export.XXXXXX"]).strip()
        remote = self.tmpdir + "/closure.nar"
        self.run(["sh", "-c", "nix-store --export \"$@\" %s> %s" % ("| gzip -1 " if compress else "", shlex.quote(remote)), "export"] + paths)
        self.connection.fetch_file(remote, local_file.name)
        self.run(["rm", "-f", remote])

    def close(self):
        if self.tmpdir:
            self._exec("rm -rf %s" % shlex.quote(self.tmpdir))
        self.connection.close()


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            result.update(self._copy(args, task_vars))
        except NixError as exc:
            result.update(failed=True, msg=exc.msg)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # -- the target, through Ansible's own connection -----------------------------------------------

    def _remote(self, what, cmd):
        res = self._low_level_execute_command("PATH=$PATH:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin; " + cmd,
                                              sudoable=True)
        if res.get("rc") == NO_NIX_RC:
            raise NixError("`nix-store` was not found on %s: %s" % (self._task_host(), INSTALL_HINT))
        if res.get("rc") != 0:
            output = res.get("stderr") or res.get("stdout") or ""
            raise NixError("on %s, %s failed: %s" % (self._task_host(), what, error_summary(output)))
        return res.get("stdout", "")

    def _task_host(self):
        return self._play_context.remote_addr or "the target"

    def _missing_on_target(self, closure):
        # In chunks: a closure of thousands of paths is longer than a command line should be, and stdin
        # is not available on every connection plugin (paramiko has none for commands).
        missing = set()
        for start in range(0, len(closure), QUERY_CHUNK):
            chunk = closure[start:start + QUERY_CHUNK]
            out = self._remote("asking which paths are missing",
                               "command -v nix-store >/dev/null || exit %d; nix-store --check-validity --print-invalid %s"
                               % (NO_NIX_RC, " ".join(chunk)))
            missing.update(out.split())
        return [p for p in closure if p in missing]

    # -- the copy ------------------------------------------------------------------------------------

    def _copy(self, args, task_vars):
        paths = [check_store_path(p) for p in args["path"]]
        method = choose_method(args["method"], args["use_substitutes"])
        if args["src_host"]:
            if method == "ssh":
                raise NixError("src_host copies through the controller, which method=ssh cannot do; use method=stream")
            source = HostStore(self, args["src_host"], task_vars)
        else:
            source = ControllerStore()
        try:
            return self._copy_from(source, paths, method, args, task_vars)
        finally:
            source.close()

    def _copy_from(self, source, paths, method, args, task_vars):
        invalid = source.run(["nix-store", "--check-validity", "--print-invalid"] + paths).split()
        if invalid:
            raise NixError("not in the Nix store of %s: %s (build it there first, e.g. ansinix.nixos.nix_build "
                           "with delegate_to: localhost)" % (source.name, ", ".join(invalid)))
        # Dependencies come before the paths that refer to them, as an import needs.
        closure = source.run(["nix-store", "--query", "--requisites"] + paths).split()
        missing = self._missing_on_target(closure)
        result = {"changed": bool(missing), "missing": missing, "copied": 0, "bytes": 0, "method": method,
                  "closure_size": len(closure)}
        if not missing or self._task.check_mode:
            return result
        sizes = dict(zip(missing, (int(n) for n in source.run(["nix-store", "--query", "--size"] + missing).split())))
        result["nar_bytes"] = sum(sizes.values())
        if method == "ssh":
            self._copy_ssh(paths, args, task_vars)
            result.update(copied=len(missing), bytes=result["nar_bytes"])
        else:
            for batch in batches(missing, sizes, args["batch_size"] * MIB):
                result["bytes"] += self._stream_batch(source, batch, args["compress"])
                result["copied"] += len(batch)
        still_missing = self._missing_on_target(closure)
        if still_missing:
            raise NixError("after the copy, %d paths are still missing on the target, e.g. %s" % (len(still_missing), still_missing[0]))
        return result

    def _stream_batch(self, source, batch, compress):
        """Export a batch to a file (disk, not memory), send it with the connection's own file transfer, import as root."""
        remote_tmp = self._connection._shell.tmpdir or self._make_tmp_path()
        with tempfile.NamedTemporaryFile(prefix="ansinix-nar-", suffix=".nar") as export:
            source.export_to(batch, export, compress)
            export.flush()
            size = os.path.getsize(export.name)
            remote = self._connection._shell.join_path(remote_tmp, "closure.nar" + (".gz" if compress else ""))
            self._transfer_file(export.name, remote)
        reader = "gzip -dc %s" % shlex.quote(remote) if compress else "cat %s" % shlex.quote(remote)
        try:
            self._remote("nix-store --import", "%s | nix-store --import >/dev/null" % reader)
        finally:
            self._low_level_execute_command("rm -f %s" % shlex.quote(remote), sudoable=False)
        return size

    def _copy_ssh(self, paths, args, task_vars):
        """nix-copy-closure on the controller, with the target's own Ansible SSH settings."""
        if self._play_context.become and (self._play_context.remote_user or "root") != "root":
            raise NixError("method=ssh imports as the SSH user %s, which Nix only allows for trusted users; use "
                           "method=stream (it imports as root through become)" % self._play_context.remote_user)
        conn = self._connection

        def option(name, default=None):
            try:
                value = conn.get_option(name)
            except (AnsibleError, KeyError):
                return default
            return default if value is None else value

        host = option("host") or self._play_context.remote_addr
        user = option("remote_user") or "root"
        opts = ssh_options(option("port"), option("private_key_file"), option("ssh_common_args"), option("ssh_extra_args"),
                           option("host_key_checking", True))
        argv = ["nix-copy-closure", "--to", "%s@%s" % (user, host)]
        if args["use_substitutes"]:
            argv.append("--use-substitutes")
        if args["compress"]:
            argv.append("--gzip")
        env = dict(os.environ, NIX_SSHOPTS=" ".join(opts))
        local(argv + paths, stdout=subprocess.DEVNULL, env=env)
