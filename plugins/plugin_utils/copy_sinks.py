# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Where nix_copy_closure's paths go: the task's host, through a live `nix-store --serve --write` over ssh, or
batches of requests through the connection plugin's file transfer."""

from __future__ import annotations

import gzip
import os
import shlex
import shutil
import tempfile
import threading

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import (
    MIN_SERVER_MINOR, FdWriter, ProtocolError, StreamWriter, add_to_store_nar, hello, query_valid_paths, server_minor,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError
from ansible_collections.ansinix.nixos.plugins.plugin_utils.serve_process import ServeProcess


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
