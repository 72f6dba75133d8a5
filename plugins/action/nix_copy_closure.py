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

import gzip
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading

from ansible import constants as C
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.playbook.play_context import PlayContext
from ansible.plugins.action import ActionBase
from ansible.utils.path import unfrackpath

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import (
    ARGUMENT_SPEC, MIN_SERVER_MINOR, NIX_PATH_PREFIX, NO_NIX_RC, FdReader, FdWriter, ProtocolError, StreamWriter,
    add_to_store_nar, batches, choose_method, dump_store_path, hello, import_failure_hint, nix_store_uri,
    query_path_infos, query_valid_paths, server_minor, ssh_argv, ssh_wrapper_script, topo_order,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import INSTALL_HINT, NixError, check_store_path, error_summary

MIB = 1024 * 1024
# Paths per command line of a text query: a closure can have thousands.
QUERY_CHUNK = 500
SSH_FAILED_RC = 255
# Which of the paths (%s) a store lacks, one a line; preceded on the target by the check that it has Nix at all.
VALIDITY_QUERY = "nix-store --check-validity --print-invalid %s"
NEEDS_NIX_STORE = "command -v nix-store >/dev/null || exit %d; " % NO_NIX_RC


def local(argv, env=None):
    """Run a command on the controller; NixError with its message when it fails."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
    except FileNotFoundError:
        raise NixError("`%s` was not found on the controller: %s" % (argv[0], INSTALL_HINT)) from None
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")
        raise NixError("%s failed on the controller: %s" % (argv[0], error_summary(stderr)), stderr=stderr)
    return proc.stdout.decode(errors="replace")


def connection_settings(conn, remote_addr=None):
    """What an ssh command line needs from an Ansible ssh connection plugin, or None if it cannot be had.

    None when the connection is no ssh one, or authenticates in a way a plain ssh command cannot
    repeat by itself (a password, a key held in memory, a PKCS#11 PIN).
    """
    if getattr(conn, "transport", None) != "ssh":
        return None

    def option(name):
        try:
            return conn.get_option(name)
        except (AnsibleError, KeyError):
            return None

    if option("password") or option("private_key") or option("pkcs11_provider"):
        return None
    names = ("ssh_executable", "remote_user", "port", "private_key_file", "ssh_args", "ssh_common_args", "ssh_extra_args",
             "host_key_checking", "timeout")
    settings = {name: option(name) for name in names}
    settings["host"] = option("host") or remote_addr
    if not settings["host"]:
        return None
    settings.update(master_settings(conn, option, settings))
    return settings


def master_settings(conn, option, settings):
    """control_path of the SSH master Ansible keeps for the host (ControlPersist), and whether it compresses.

    A transfer multiplexed over that master saves an SSH handshake per task. control_path is None when
    Ansible keeps no master; the path is the one Ansible's ssh plugin gives its own commands.
    """
    args = " ".join(a for a in (settings["ssh_args"], settings["ssh_common_args"], settings["ssh_extra_args"]) if a)
    lowered = args.lower()
    if "controlpersist" not in lowered:
        return {"control_path": None}
    compresses = "-C" in shlex.split(args) or bool(re.search(r"compression[= ]+\"?yes", lowered))
    named = re.search(r"controlpath[= ]+(\"[^\"]*\"|\S+)", args, re.IGNORECASE)
    if named:
        path = named.group(1).strip('"')
    else:
        try:
            path = option("control_path") or conn._create_control_path(settings["host"], settings["port"], settings["remote_user"])
            path = path % {"directory": unfrackpath(option("control_path_dir") or "~/.ansible/cp")}
        except (AttributeError, TypeError, ValueError, KeyError):
            return {"control_path": None}
    return {"control_path": path, "master_compresses": compresses}


def serve_command(write):
    return NIX_PATH_PREFIX + "exec nix-store --serve" + (" --write" if write else "")


class ServeProcess:
    """A serve protocol peer on pipes: a local `nix-store --serve`, or one at the end of an ssh command."""

    def __init__(self, argv, where, ssh=False, hint=import_failure_hint):
        self.where = where
        self.ssh = ssh
        self.hint = hint
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        except FileNotFoundError:
            self.stderr.close()
            raise NixError("`%s` was not found on the controller: %s" % (argv[0], INSTALL_HINT)) from None
        self.reader = FdReader(self.proc.stdout.fileno(), where)
        self.writer = FdWriter(self.proc.stdin.fileno())

    def failure(self, doing, exc=None):
        """The exception to raise for a failure of the peer, with what it printed."""
        if exc is not None and self.proc.poll() is None:
            # The peer's output ended: give it a moment to exit, so its exit code says why (127: no nix-store).
            self.finish_input()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.close(kill=self.proc.poll() is None and exc is not None)
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace")
        detail = error_summary(text) or (str(exc) if exc else "") or "it exited with %s" % self.proc.returncode
        if self.proc.returncode == NO_NIX_RC:
            return NixError("`nix-store` was not found %s: %s" % (self.where, INSTALL_HINT))
        if self.ssh and self.proc.returncode == SSH_FAILED_RC:
            return AnsibleConnectionFailure("ssh %s failed: %s" % (self.where, detail))
        return NixError("%s, %s failed: %s%s" % (self.where, doing, detail, self.hint(text)), stderr=text)

    def finish_input(self):
        if not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def close(self, kill=False):
        if kill and self.proc.poll() is None:
            self.proc.kill()
        self.finish_input()
        self.proc.wait()
        self.proc.stdout.close()


# -- sources: where the paths come from ----------------------------------------------------------------

class LiveSource:
    """Path infos and NARs from a live `nix-store --serve`."""

    live = True

    def __init__(self, argv, where, ssh=False):
        self.peer = ServeProcess(argv, where, ssh)
        self.started = False

    def _start(self):
        if not self.started:
            self.peer.writer.write(hello())
            self.peer.reader.greeting()
            self.started = True

    def infos(self, paths):
        try:
            self._start()
            self.peer.writer.write(query_path_infos(paths))
            return self.peer.reader.path_infos()
        except (OSError, ProtocolError) as exc:
            raise self.peer.failure("reading path infos", exc) from None

    def nars(self, infos):
        """Yield (info, reader) in order; the caller forwards info.nar_size bytes from reader before the next."""
        try:
            self._start()
            if infos:
                self.peer.writer.write(dump_store_path(infos[0].path))
            for i, info in enumerate(infos):
                # One request ahead, so the source is already dumping the next NAR while this one is sent.
                if i + 1 < len(infos):
                    self.peer.writer.write(dump_store_path(infos[i + 1].path))
                yield info, self.peer.reader
        except OSError as exc:
            raise self.peer.failure("sending NARs", exc) from None

    def failure(self, exc=None):
        return self.peer.failure("sending NARs", exc)

    def close(self):
        self.peer.close(kill=True)


class FileSource:
    """Path infos and NARs from src_host's `nix-store --serve`, through its connection's file transfer."""

    live = False

    def __init__(self, store, compress):
        self.store = store
        self.compress = compress
        self.opened = []  # fds and gzip processes of fetched replies

    def _serve(self, request, local_dir):
        """Run nix-store --serve on the host with this request; an FdReader on its reply, fetched here."""
        remote_dir = self.store.tmpdir()
        req_local = os.path.join(local_dir, "request")
        with open(req_local, "wb") as f:
            f.write(request)
        self.store.connection.put_file(req_local, remote_dir + "/request")
        reply = remote_dir + "/reply" + (".gz" if self.compress else "")
        self.store.run_shell("nix-store --serve < %s/request %s> %s" % (
            shlex.quote(remote_dir), "| gzip -1 " if self.compress else "", shlex.quote(reply)), "nix-store --serve")
        reply_local = os.path.join(local_dir, "reply")
        self.store.connection.fetch_file(reply, reply_local)
        self.store.run_shell("rm -f %s/request %s" % (shlex.quote(remote_dir), shlex.quote(reply)), "cleaning up")
        where = "on src_host %s" % self.store.name
        if self.compress:
            unzip = subprocess.Popen(["gzip", "-dc", reply_local], stdout=subprocess.PIPE)
            self.opened.append(unzip)
            reader = FdReader(unzip.stdout.fileno(), where)
        else:
            fd = os.open(reply_local, os.O_RDONLY)
            self.opened.append(fd)
            reader = FdReader(fd, where)
        reader.greeting()
        return reader

    def infos(self, paths):
        with tempfile.TemporaryDirectory(prefix="ansinix-infos-") as tmp:
            try:
                return self._serve(hello() + query_path_infos(paths), tmp).path_infos()
            finally:
                self.close()

    def nars(self, infos):
        with tempfile.TemporaryDirectory(prefix="ansinix-nars-") as tmp:
            reader = self._serve(hello() + b"".join(dump_store_path(info.path) for info in infos), tmp)
            for info in infos:
                yield info, reader
            self.close()

    def failure(self, exc=None):
        return NixError("copying from src_host %s failed: %s" % (self.store.name, exc))

    def close(self):
        for item in self.opened:
            if isinstance(item, int):
                os.close(item)
            else:
                item.kill()
                item.wait()
                item.stdout.close()
        self.opened = []


class ControllerStore:
    """The controller's own Nix store as the source of a copy."""

    name = "the controller"
    delegate_to = "localhost"

    def run(self, argv):
        return local(argv)

    def serve(self, compress):
        return LiveSource(["nix-store", "--serve"], "on the controller")

    def close(self):
        pass


class HostStore:
    """Another inventory host's store as the source: the controller relays, so the two hosts need no SSH trust."""

    def __init__(self, action, name, task_vars):
        self.name = self.delegate_to = name
        hostvars = task_vars.get("hostvars", {})
        if name not in hostvars:
            raise NixError("src_host %r is not a host of the inventory: give the inventory name of the host that has "
                           "the paths" % name)
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
        task_keys = action._task.dump_attrs()
        # The task's own `timeout` keyword is no connection timeout (the task executor does the same).
        task_keys["timeout"] = play_context.timeout
        self.connection.set_options(task_keys=task_keys, var_options=options)
        self.connection._shell.set_options(var_options={})
        self.remote_addr = play_context.remote_addr
        self._tmpdir = None
        try:
            self.connection._connect()
        except AnsibleError as exc:
            raise NixError("src_host %s is unreachable: %s" % (name, exc)) from None

    def _exec(self, cmd):
        # Not sudoable: reading a store needs no root, and no terminal keeps the output exactly what was printed.
        try:
            rc, out, err = self.connection.exec_command("/bin/sh -c %s" % shlex.quote(NIX_PATH_PREFIX + cmd), sudoable=False)
        except AnsibleError as exc:
            raise NixError("src_host %s is unreachable: %s" % (self.name, exc)) from None
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def run_shell(self, cmd, what):
        rc, out, err = self._exec(cmd)
        if rc == NO_NIX_RC:
            raise NixError("`nix-store` was not found on src_host %s: %s" % (self.name, INSTALL_HINT))
        if rc != 0:
            raise NixError("%s failed on src_host %s: %s" % (what, self.name, error_summary(err or out)))
        return out

    def run(self, argv):
        return self.run_shell(" ".join(shlex.quote(a) for a in argv), argv[0])

    def tmpdir(self):
        if self._tmpdir is None:
            self._tmpdir = self.run(["mktemp", "-d", "/tmp/ansinix-serve.XXXXXX"]).strip()
        return self._tmpdir

    def serve(self, compress):
        settings = connection_settings(self.connection, self.remote_addr)
        if settings is None:
            return FileSource(self, compress)
        argv = ssh_argv(settings, compress) + [settings["host"], "/bin/sh -c %s" % shlex.quote(serve_command(write=False))]
        # Unreachable here is a failure of the copy, not of the task's host.
        return LiveSource(argv, "on src_host %s" % self.name)

    def close(self):
        if self._tmpdir:
            self._exec("rm -rf %s" % shlex.quote(self._tmpdir))
        if self.connection._connected:
            self.connection.close()


# -- sinks: the task's host ------------------------------------------------------------------------------

class LiveSink:
    """The target's `nix-store --serve [--write]` at the end of an ssh command: each path is added as it arrives."""

    live = True

    def __init__(self, argv, where, hint):
        self.peer = ServeProcess(argv, where, ssh=True, hint=hint)
        self.sent = []
        self.acked = []
        self.ack_error = None
        self.acks = None
        self.cond = threading.Condition()
        self.done = False

    def start(self):
        try:
            self.peer.writer.write(hello())
            version = self.peer.reader.greeting()
        except (OSError, ProtocolError) as exc:
            raise self.peer.failure("starting nix-store --serve", exc) from None
        if server_minor(version) < MIN_SERVER_MINOR:
            self.peer.close(kill=True)
            raise NixError("%s, Nix is too old to receive paths this way (serve protocol 2.%d): update it, or use "
                           "method=ssh" % (self.peer.where, server_minor(version)))

    def valid(self, paths, lock=False, substitute=False):
        """The set of paths the target has (after substituting what it can, if asked)."""
        try:
            self.peer.writer.write(query_valid_paths(paths, lock, substitute))
            return set(self.peer.reader.strings())
        except (OSError, ProtocolError) as exc:
            raise self.peer.failure("asking which paths are missing", exc) from None

    def _read_acks(self):
        # The target answers 1 after adding each path; read as they come, so its output never fills up.
        try:
            for path in iter(self._next_sent, None):
                if self.peer.reader.u64() != 1:
                    raise ProtocolError("unexpected reply to adding %s" % path)
                self.acked.append(path)
        except (OSError, ProtocolError) as exc:
            self.ack_error = exc

    def _next_sent(self):
        with self.cond:
            self.cond.wait_for(lambda: len(self.sent) > len(self.acked) or self.done)
            return self.sent[len(self.acked)] if len(self.sent) > len(self.acked) else None

    def add(self, info, reader):
        if self.acks is None:
            self.acks = threading.Thread(target=self._read_acks, daemon=True)
            self.acks.start()
        self.peer.writer.write(add_to_store_nar(info))
        reader.copy_to(self.peer.writer, info.nar_size)
        with self.cond:
            self.sent.append(info.path)
            self.cond.notify()

    def end_batch(self):
        pass

    def wire_bytes(self):
        return self.peer.writer.count

    def added(self):
        return list(self.acked)

    def finish(self):
        """All sent: wait for the target to confirm each path. Returns the paths it added."""
        self._stop()
        self.peer.close()
        if self.ack_error is not None or self.peer.proc.returncode != 0 or len(self.acked) != len(self.sent):
            raise self.failure(self.ack_error)
        return self.acked

    def failure(self, exc=None):
        pending = self.sent[len(self.acked)] if len(self.acked) < len(self.sent) else None
        return self.peer.failure("adding %s to the store" % (pending or "paths"), exc)

    def _stop(self):
        with self.cond:
            self.done = True
            self.cond.notify()
        self.peer.finish_input()
        if self.acks is not None:
            self.acks.join()

    def abort(self):
        self.peer.close(kill=True)
        self._stop()


class FileSink:
    """Any connection plugin: batches of requests go to a file on the host, which nix-store --serve --write reads."""

    live = False

    def __init__(self, action, compress):
        self.action = action
        self.compress = compress
        self.tmp = tempfile.mkdtemp(prefix="ansinix-batch-")
        self.local = None
        self.stream = None
        self.writer = None
        self.batch = []
        self.completed = []
        self.sent_bytes = 0

    def start(self):
        pass

    def valid(self, paths, lock=False, substitute=False):
        del lock  # only a live session holds GC roots
        if substitute:
            self.action.remote_chunked("nix-store --realise --ignore-unknown %s >/dev/null", self.action.missing_of(paths),
                                       "fetching from the host's substituters")
        return set(paths) - set(self.action.missing_of(paths))

    def add(self, info, reader):
        if self.local is None:
            self.local = open(os.path.join(self.tmp, "batch"), "wb")
            if self.compress:
                self.stream = gzip.GzipFile(fileobj=self.local, mode="wb", compresslevel=1)
                self.writer = StreamWriter(self.stream)
            else:
                self.writer = FdWriter(self.local.fileno())
            self.writer.write(hello())
        self.writer.write(add_to_store_nar(info))
        reader.copy_to(self.writer, info.nar_size)
        self.batch.append(info.path)

    def end_batch(self):
        """Send the batch's file; the host adds its paths (it exits non-zero unless it added every one)."""
        if self.stream is not None:
            self.stream.close()
        self.local.close()
        action = self.action
        remote_tmp = action._connection._shell.tmpdir or action._make_tmp_path()
        remote = action._connection._shell.join_path(remote_tmp, "ansinix-batch" + (".gz" if self.compress else ""))
        action._transfer_file(self.local.name, remote)
        self.sent_bytes += os.path.getsize(self.local.name)
        os.unlink(self.local.name)
        self.local = self.stream = self.writer = None
        feed = "gzip -dc < %s | " % shlex.quote(remote) if self.compress else ""
        try:
            action.remote("%snix-store --serve --write %s>/dev/null" % (feed, "" if self.compress else "< %s " % shlex.quote(remote)),
                          "adding paths with nix-store --serve --write")
        finally:
            action._low_level_execute_command("rm -f %s" % shlex.quote(remote), sudoable=False)
        self.completed += self.batch
        self.batch = []

    def wire_bytes(self):
        return self.sent_bytes

    def added(self):
        return list(self.completed)

    def finish(self):
        return list(self.completed)

    def failure(self, exc=None):
        return NixError("copying to %s failed: %s" % (self.action.task_host(), exc))

    def abort(self):
        if self.local is not None and not self.local.closed:
            self.local.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


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
        if not hint and not self._becomes() and (self._get_remote_user() or "root") != "root" and (
                "Permission denied" in output or "Operation not permitted" in output):
            hint = (" (the SSH user %s may not write the host's Nix store: use become: true, which imports as root)"
                    % self._get_remote_user())
        return hint

    def remote_chunked(self, template, paths, what):
        """Run template % paths on the target, a chunk of paths at a time (stdin is not there on every plugin)."""
        out = ""
        for start in range(0, len(paths), QUERY_CHUNK):
            out += self.remote(NEEDS_NIX_STORE + template % " ".join(paths[start:start + QUERY_CHUNK]), what)
        return out

    def missing_of(self, paths):
        missing = set(self.remote_chunked(VALIDITY_QUERY, paths, "asking which paths are missing").split())
        return [p for p in paths if p in missing]

    def _missing_at_once(self, closure, paths):
        """What the target lacks of closure, asked by one command over the task's own connection; None: ask again.

        A rerun learns it has nothing to send from this one command; it also opens the connection (an SSH
        master, with ControlPersist) the next task reuses. A closure too long for one command is judged by its
        top paths: a valid store path has its whole closure in the store, so none missing means nothing is.
        None (an error, or top paths missing from a long closure): the copy asks in full.
        """
        asked = closure if len(closure) <= QUERY_CHUNK else paths
        if len(asked) > QUERY_CHUNK:
            return None
        try:
            res = self._execute(NEEDS_NIX_STORE + VALIDITY_QUERY % " ".join(shlex.quote(p) for p in asked))
        except AnsibleError:
            return None
        if res.get("rc") != 0:
            return None
        invalid = set((res.get("stdout") or "").split())
        if asked is closure:
            return [p for p in closure if p in invalid]
        return None if invalid else []

    def task_host(self):
        return self._play_context.remote_addr or "the target"

    def _becomes(self):
        """Whether a sudoable command of this task runs under become (the rule of _low_level_execute_command)."""
        ruser = self._get_remote_user()
        buser = self.get_become_option("become_user")
        return bool(self._connection.become) and (C.BECOME_ALLOW_SAME_USER or buser != ruser or not any((ruser, buser)))

    def _become_wrap(self, cmd):
        """cmd as _low_level_execute_command would run it (become, executable); None when become needs a password."""
        conn = self._connection
        if self._becomes():
            cmd = conn.become.build_become_command(cmd, conn._shell)
            if conn.become.expect_prompt():
                return None
        executable = self._play_context.executable
        if conn.allow_executable and executable:
            cmd = executable + " -c " + shlex.quote(cmd)
        return cmd

    def _sink(self, compress, write):
        """A live serve session over its own ssh connection where the connection allows; files otherwise."""
        settings = connection_settings(self._connection, self._play_context.remote_addr)
        command = self._become_wrap(serve_command(write)) if settings else None
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
                closure = source.run(["nix-store", "--query", "--requisites"] + paths).split()
            except NixError:
                invalid = source.run(["nix-store", "--check-validity", "--print-invalid"] + paths).split()
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
                sizes = dict(zip(missing, (int(n) for n in source.run(["nix-store", "--query", "--size"] + missing).split())))
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
        sizes = dict(zip(missing, (int(n) for n in source.run(["nix-store", "--query", "--size"] + missing).split()))) if missing else {}
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
        if self._becomes():
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
