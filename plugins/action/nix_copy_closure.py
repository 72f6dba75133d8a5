# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copies store closures to the task's host, sending only what is missing.

method=stream relays Nix's serve protocol, as nix-copy-closure speaks it: the source's
`nix-store --serve` (on the controller, or on src_host) gives path infos and NARs; the target's
`nix-store --serve --write`, run as root under become, says which paths it lacks and adds each
path as it arrives. Over the ssh connection plugin both ends are live pipes and the controller
only forwards bytes (splice(2) on Linux). With any other connection plugin, or when a password
must be typed, the same requests go through the plugin's own file transfer, in batches.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import (
    ARGUMENT_SPEC, NIX_PATH_PREFIX, NO_NIX_RC, ProtocolError, batches, choose_method, import_failure_hint, nix_store_uri,
    ssh_argv, ssh_wrapper_script, topo_order,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import INSTALL_HINT, NixError, check_store_path, error_summary
from ansible_collections.ansinix.nixos.plugins.plugin_utils.copy_sinks import FileSink, LiveSink
from ansible_collections.ansinix.nixos.plugins.plugin_utils.copy_sources import ControllerStore, HostStore
from ansible_collections.ansinix.nixos.plugins.plugin_utils.serve_process import local, serve_command
from ansible_collections.ansinix.nixos.plugins.plugin_utils.ssh_settings import become_wrap, becomes, connection_settings

MIB = 1024 * 1024
# Paths per command line of a text query: a closure can have thousands.
QUERY_CHUNK = 500
# Which of the paths (%s) a store lacks, one a line; preceded on the target by the check that it has Nix at all.
VALIDITY_QUERY = "nix-store --check-validity --print-invalid %s"
NEEDS_NIX_STORE = "command -v nix-store >/dev/null || exit %d; " % NO_NIX_RC


def shell_words(paths):
    """Store paths as words of a shell command: a valid name may hold `?` and `=`, which a shell would glob."""
    return " ".join(shlex.quote(p) for p in paths)


def store_paths(output, where):
    """The store paths a source printed, one a word, each checked: its output decides what reaches a shell."""
    paths = output.split()
    for path in paths:
        try:
            check_store_path(path)
        except NixError:
            raise NixError("%s answered %r where a Nix store path belongs; is its Nix working? Nothing was copied"
                           % (where, path[:200])) from None
    return paths


def nar_sizes(output, paths, where):
    """{path: NAR size} from `nix-store --query --size` of paths."""
    sizes = output.split()
    if len(sizes) != len(paths) or not all(size.isdigit() for size in sizes):
        raise NixError("%s answered %r to a query of NAR sizes; is its Nix working? Nothing was copied" % (where, output[:200]))
    return dict(zip(paths, (int(size) for size in sizes)))


# -- the action --------------------------------------------------------------------------------------------

class ActionModule(ActionBase):
    # A live copy needs no temporary directory on the host; the file-based one makes its own.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # no longer has any effect
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            result.update(self._copy(args, task_vars))
        except NixError as exc:
            result.update(failed=True, msg=exc.msg)
            result.update({k: v for k, v in exc.details.items() if k in ("changed", "copied", "bytes", "missing", "method")})
        except (OSError, ProtocolError) as exc:
            # Whatever slipped past the messages above still ends as one line, never a traceback.
            result.update(failed=True, msg="copying to %s failed: %s" % (self.task_host(), exc))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # -- the target, through Ansible's own connection -----------------------------------------------

    def _execute(self, cmd):
        """Run a shell command on the target (as root under become); its result. NixError when it found no Nix."""
        res = self._low_level_execute_command(NIX_PATH_PREFIX + cmd, sudoable=True)
        if res.get("rc") == NO_NIX_RC:
            raise NixError("`nix-store` was not found on %s: %s" % (self.task_host(), INSTALL_HINT))
        return res

    def remote(self, cmd, what):
        """Run a shell command on the target (as root under become); its stdout, or NixError."""
        res = self._execute(cmd)
        if res.get("rc") != 0:
            # Under a terminal (-tt) the command's stderr comes in stdout; ssh's own notices in stderr.
            lines = (res.get("stdout", "") + "\n" + res.get("stderr", "")).splitlines()
            output = "\n".join(line for line in lines if not line.startswith("Shared connection to "))
            summary = error_summary(output) or "exit %s" % res.get("rc")
            raise NixError("on %s, %s failed: %s%s" % (self.task_host(), what, summary, self.failure_hint(output)))
        return res.get("stdout", "")

    def failure_hint(self, output):
        """Why a command on the target may have failed, and what to do."""
        hint = import_failure_hint(output)
        if not hint and not becomes(self) and (self._get_remote_user() or "root") != "root" and (
                "Permission denied" in output or "Operation not permitted" in output):
            hint = (" (the SSH user %s may not write the host's Nix store: use become: true, which imports as root)"
                    % self._get_remote_user())
        return hint

    def remote_chunked(self, template, paths, what):
        """Run template % paths on the target, a chunk of paths at a time (stdin is not there on every plugin)."""
        out = ""
        for start in range(0, len(paths), QUERY_CHUNK):
            out += self.remote(NEEDS_NIX_STORE + template % shell_words(paths[start:start + QUERY_CHUNK]), what)
        return out

    def missing_of(self, paths):
        missing = set(self.remote_chunked(VALIDITY_QUERY, paths, "asking which paths are missing").split())
        return [p for p in paths if p in missing]

    def _missing_at_once(self, closure, paths):
        """What the target lacks of closure, asked by one command over the task's own connection; None: ask in full.

        A rerun learns it has nothing to send from this one command; it also opens the connection (an SSH
        master, with ControlPersist) the next task reuses. A closure too long for one command is judged by its
        top paths: a valid store path has its whole closure in the store, so none missing means nothing is.
        None (top paths missing from a long closure): the copy asks for the whole closure.
        """
        asked = closure if len(closure) <= QUERY_CHUNK else paths
        if len(asked) > QUERY_CHUNK:
            return None
        invalid = set(self.remote(NEEDS_NIX_STORE + VALIDITY_QUERY % shell_words(asked), "asking which paths are missing").split())
        if asked is closure:
            return [p for p in closure if p in invalid]
        return None if invalid else []

    def task_host(self):
        return self._play_context.remote_addr or "the target"

    def _sink(self, compress, write):
        """A live serve session over its own ssh connection where the connection allows; files otherwise."""
        settings = connection_settings(self._connection, self._play_context.remote_addr)
        command = become_wrap(self, serve_command(write)) if settings else None
        if command is None:
            return FileSink(self, compress)
        return LiveSink(ssh_argv(settings, compress) + [settings["host"], command], "on %s" % self.task_host(), self.failure_hint)

    # -- the copy ------------------------------------------------------------------------------------

    def _copy(self, args, task_vars):
        paths = [check_store_path(p) for p in args["path"]]
        if not paths:
            raise NixError("path is empty: give at least one store path, e.g. the out_path of ansinix.nixos.nix_build")
        if args["batch_size"] < 1:
            raise NixError("batch_size must be at least 1 (MiB), not %d" % args["batch_size"])
        settings = connection_settings(self._connection, self._play_context.remote_addr)
        method = choose_method(args["method"], args["use_substitutes"], ssh_possible=settings is not None and not args["src_host"])
        if args["src_host"]:
            if method == "ssh":
                raise NixError("method=ssh copies straight from the controller's store; with src_host the controller relays "
                               "between the two hosts, which only method=stream does: use method=stream (or auto)")
            source = HostStore(self, args["src_host"], task_vars)
        else:
            source = ControllerStore()
        try:
            # Dependencies first: the order a store adds paths in. Every host of a deploy asks this on the
            # controller, so the check for paths the source lacks is made only when the query fails.
            try:
                closure = store_paths(source.run(["nix-store", "--query", "--requisites"] + paths), source.name)
            except NixError:
                invalid = store_paths(source.run(["nix-store", "--check-validity", "--print-invalid"] + paths), source.name)
                if invalid:
                    raise NixError("not in the Nix store of %s: %s (build it there first, e.g. ansinix.nixos.nix_build "
                                   "with delegate_to: %s)" % (source.name, ", ".join(invalid), source.delegate_to)) from None
                raise
            missing = self._missing_at_once(closure, paths)
            if missing == []:
                return self._result(method, closure, [], {}, [], changed=False)
            if method == "ssh":
                return self._copy_ssh(source, closure, paths, missing, args)
            return self._copy_stream(source, closure, args)
        finally:
            source.close()

    def _result(self, method, closure, missing, sizes, added, changed):
        return {"changed": changed, "missing": missing, "copied": len(added), "bytes": sum(sizes.get(p, 0) for p in added),
                "method": method, "closure_size": len(closure), "nar_bytes": sum(sizes.get(p, 0) for p in missing)}

    def _copy_stream(self, source, closure, args):
        compress, check_mode = args["compress"], self._task.check_mode
        sink = self._sink(compress, write=not check_mode)
        try:
            sink.start()
            # Asked first; the paths it has stay locked against its garbage collector while the session lasts.
            have = sink.valid(closure, lock=True)
            missing = [p for p in closure if p not in have]
            if not missing:
                return self._result("stream", closure, [], {}, [], changed=False)
            if check_mode:
                sizes = nar_sizes(source.run(["nix-store", "--query", "--size"] + missing), missing, source.name)
                return self._result("stream", closure, missing, sizes, [], changed=True)
            to_send = missing
            if args["use_substitutes"]:
                fetched = sink.valid(missing, lock=True, substitute=True)
                to_send = [p for p in missing if p not in fetched]
            serving = source.serve(compress)
            sizes = {}
            try:
                infos = serving.infos(missing)
                sizes = {p: info.nar_size for p, info in infos.items()}
                added = self._relay(serving, sink, infos, to_send, args) if to_send else []
            except NixError as exc:
                # What did arrive stays (each path whole or not at all): the next run sends only the rest.
                done = self._arrived(missing, sink)
                exc.details.update(method="stream", missing=missing, changed=bool(done), copied=len(done),
                                   bytes=sum(sizes.get(p, 0) for p in done))
                raise
            finally:
                serving.close()
            result = self._result("stream", closure, missing, sizes, added, changed=True)
            result["wire_bytes"] = sink.wire_bytes()
            return result
        finally:
            sink.abort()

    def _arrived(self, missing, sink):
        """After a failure: the missing paths the target has now, asked again if it can be reached."""
        try:
            left = set(self.missing_of(missing))
        except (NixError, AnsibleError):
            return sink.added()
        return [p for p in missing if p not in left]

    def _relay(self, serving, sink, infos, paths, args):
        """Send paths, in dependency order, from the source's serve process to the target's. Returns those added."""
        absent = [p for p in paths if p not in infos]
        if absent:
            raise NixError("the source no longer has %s (garbage-collected during the copy?)" % absent[0])
        order = topo_order(paths, {p: infos[p].references for p in paths})
        # Both ends live: one stream. Otherwise files, in batches that bound the disk space used.
        limit = None if serving.live and sink.live else args["batch_size"] * MIB
        try:
            for batch in batches(order, {p: infos[p].nar_size for p in order}, limit):
                for info, reader in serving.nars([infos[p] for p in batch]):
                    sink.add(info, reader)
                sink.end_batch()
        except ProtocolError as exc:
            # A reply ended early: the source stopped; it says why.
            raise serving.failure(exc) from None
        except OSError as exc:
            # A write failed: the target stopped (or a local disk is full).
            raise sink.failure(exc) from None
        return sink.finish()

    def _copy_ssh(self, source, closure, paths, missing, args):
        """`nix copy` on the controller to the target's ssh:// store, with the target's own Ansible SSH settings.

        missing: what the target lacks of closure, or None when that is still to be asked.
        """
        if missing is None:
            missing = self.missing_of(closure)
        sizes = nar_sizes(source.run(["nix-store", "--query", "--size"] + missing), missing, source.name) if missing else {}
        if not missing or self._task.check_mode:
            return self._result("ssh", closure, missing, sizes, [], changed=bool(missing))
        to_send = missing
        if args["use_substitutes"]:
            # The host fetches what its substituters have first, so the result says what was really sent.
            self.remote_chunked("nix-store --realise --keep-going %s >/dev/null 2>&1; true", missing,
                                "fetching from the host's substituters")
            to_send = self.missing_of(missing)
            if not to_send:
                return self._result("ssh", closure, missing, sizes, [], changed=True)
        try:
            self._nix_copy(paths, args)
        except NixError as exc:
            left = set(self.missing_of(closure))
            done = [p for p in missing if p not in left]
            exc.details.update(method="ssh", missing=missing, changed=bool(done), copied=len(done), bytes=sum(sizes[p] for p in done))
            raise
        # nix copy does not say what it sent. It exits 0 only once every path is valid on the target, so all that
        # was still missing is there now; the switch would refuse a system that is not.
        return self._result("ssh", closure, missing, sizes, to_send, changed=True)

    def _nix_copy(self, paths, args):
        settings = connection_settings(self._connection, self._play_context.remote_addr)
        if settings is None:
            raise NixError("method=ssh needs the ssh connection plugin and key authentication (no password); this task "
                           "uses %s: use method=stream, which works through any connection"
                           % getattr(self._connection, "transport", "another connection"))
        remote_program = None
        if becomes(self):
            # Nix lets only trusted users add unsigned paths; as root (sudo in front of nix-store) that is no question.
            become = self._connection.become
            become_name = getattr(become, "name", None) or getattr(become, "_load_name", "")
            if become_name.split(".")[-1] != "sudo":
                raise NixError("method=ssh can become root only with become_method=sudo, not %s: use method=stream" % become_name)
            if become.get_option("become_pass"):
                raise NixError("method=ssh cannot type a sudo password: use method=stream, or passwordless sudo")
            remote_program = "sudo -n -u %s nix-store" % shlex.quote(self.get_become_option("become_user") or "root")
        argv = ssh_argv(settings, compress=False)
        # The wrapper is first on PATH as `ssh`: it must run the real one by its full path, never itself.
        real_ssh = shutil.which(argv[0])
        if real_ssh is None:
            raise NixError("`%s` was not found on the controller: install OpenSSH's client, or set ansible_ssh_executable" % argv[0])
        argv[0] = real_ssh
        tmp = tempfile.mkdtemp(prefix="ansinix-ssh-")
        try:
            wrapper = os.path.join(tmp, "ssh")
            with open(os.open(wrapper, os.O_WRONLY | os.O_CREAT, 0o700), "w", encoding="utf-8") as f:
                f.write(ssh_wrapper_script(argv, os.environ.get("PATH", os.defpath)))
            argv = ["nix", "--extra-experimental-features", "nix-command", "copy", "--no-check-sigs",
                    "--to", nix_store_uri(settings.get("remote_user"), settings["host"], args["compress"], remote_program)]
            if args["use_substitutes"]:
                argv.append("--substitute-on-destination")
            env = dict(os.environ, PATH=tmp + os.pathsep + os.environ.get("PATH", ""))
            env.pop("NIX_SSHOPTS", None)
            try:
                local(argv + paths, env=env)
            except NixError as exc:
                stderr = exc.details.get("stderr", "")
                raise NixError("copying with nix copy to %s failed: %s%s" % (self.task_host(), error_summary(stderr),
                                                                             import_failure_hint(stderr))) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
