# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Where nix_copy_closure's paths come from: the controller's store, or another inventory host's (src_host), which
the controller reads with Nix's serve protocol."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile

from ansible.errors import AnsibleError

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import (
    NIX_PATH_PREFIX, NO_NIX_RC, FdReader, ProtocolError, dump_store_path, hello, query_path_infos, ssh_argv,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import INSTALL_HINT, NixError, error_summary
from ansible_collections.ansinix.nixos.plugins.plugin_utils.second_connection import connect_to_inventory_host
from ansible_collections.ansinix.nixos.plugins.plugin_utils.serve_process import ServeProcess, local, serve_command
from ansible_collections.ansinix.nixos.plugins.plugin_utils.ssh_settings import connection_settings


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
        self._tmpdir = None
        self.connection, self.remote_addr = connect_to_inventory_host(action, name, task_vars)

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
