# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Pieces of ansinix.nixos.nix_copy_closure that need no connection.

Arguments, the choice of method, ssh command lines, and the client side of Nix's serve protocol
(what `nix-store --serve`, and so `nix-copy-closure`, speaks): the controller asks the source's
`nix-store --serve` for path infos and NARs, and hands each NAR to the target's
`nix-store --serve --write` as an AddToStoreNar request, which the target adds to its store as it
arrives (whole or not at all, without holding it in memory).
"""

from __future__ import annotations

import errno
import os
import shlex
import struct
from collections import namedtuple

ARGUMENT_SPEC = dict(
    path=dict(type="list", elements="str", required=True),
    method=dict(type="str", default="auto", choices=["auto", "ssh", "stream"]),
    use_substitutes=dict(type="bool", default=False),
    compress=dict(type="bool", default=False),
    batch_size=dict(type="int", default=256),
    src_host=dict(type="str"),
)

# A missing nix-store on the target shows as "command not found" (127) from the shell.
NO_NIX_RC = 127
# Where Nix lives on NixOS and on multi-user installs, for shells that do not put it on PATH.
NIX_PATH_PREFIX = "PATH=$PATH:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin; "

SERVE_MAGIC_1 = 0x390C9DEB
SERVE_MAGIC_2 = 0x5452EECB
# 2.5: path infos carry the NAR hash (minor >= 4) and AddToStoreNar exists (minor >= 5). Nix 2.0 and
# later serve at least this.
CLIENT_VERSION = 0x205
MIN_SERVER_MINOR = 5
CMD_QUERY_VALID_PATHS = 1
CMD_QUERY_PATH_INFOS = 2
CMD_DUMP_STORE_PATH = 3
CMD_ADD_TO_STORE_NAR = 9
# What become plugins print before the command's own output (see ansible's BecomeBase.success_key).
BECOME_SUCCESS = b"BECOME-SUCCESS-"

CHUNK = 1024 * 1024

PathInfo = namedtuple("PathInfo", "path deriver references nar_size nar_hash ca sigs")


class ProtocolError(Exception):
    """The other side did not speak the serve protocol as expected."""


def choose_method(method, use_substitutes, ssh_possible=True):
    """auto: stream (any connection, become, no trust set-up), or ssh (nix copy) when the host should
    fetch from its own caches and the connection allows ssh."""
    if method != "auto":
        return method
    return "ssh" if use_substitutes and ssh_possible else "stream"


def batches(paths, sizes, limit_bytes):
    """Split paths (kept in order) into runs whose NAR sizes add up to at most limit_bytes each.

    A limit of None keeps all paths in one run.
    """
    batch, total = [], 0
    for path in paths:
        size = sizes.get(path, 0)
        if batch and limit_bytes is not None and total + size > limit_bytes:
            yield batch
            batch, total = [], 0
        batch.append(path)
        total += size
    if batch:
        yield batch


def topo_order(paths, references):
    """paths ordered so that each comes after the paths it refers to (an import needs that).

    references: {path: [referenced paths]}; references outside paths are ignored (already there).
    Keeps the given order wherever the references allow it.
    """
    wanted = set(paths)
    done, order = set(), []
    for root in paths:
        stack = [(root, iter(references.get(root, ())))]
        if root in done:
            continue
        done.add(root)
        while stack:
            node, refs = stack[-1]
            for ref in refs:
                if ref in wanted and ref not in done and ref != node:
                    done.add(ref)
                    stack.append((ref, iter(references.get(ref, ()))))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


# -- ssh command lines ----------------------------------------------------------------------------------

def ssh_options(port=None, private_key_file=None, common_args=None, extra_args=None, host_key_checking=True):
    """The ssh options of an Ansible connection, for NIX_SSHOPTS."""
    opts = []
    if port:
        opts += ["-p", str(port)]
    if private_key_file:
        opts += ["-i", private_key_file]
    for args in (common_args, extra_args):
        if args:
            opts += shlex.split(args)
    if not host_key_checking:
        opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    opts += ["-o", "BatchMode=yes"]
    return opts


def ssh_argv(settings, compress=False):
    """ssh and its options (no host) for a bulk transfer, from an Ansible ssh connection's settings.

    settings: ssh_executable, remote_user, port, private_key_file, ssh_args, ssh_common_args,
    ssh_extra_args, host_key_checking, timeout, control_path, master_compresses (missing keys mean unset).

    Multiplexed over Ansible's SSH master (control_path) when it compresses just as asked: that saves
    a handshake. Otherwise a connection of its own: a multiplexed one inherits the master's compression,
    and ansible-core's default ssh_args (-C) compress, which makes incompressible NARs crawl. In ssh the
    first value of an option wins, so ours come first; -C is dropped unless compress asks for it.
    """
    control_path = settings.get("control_path")
    shared = bool(control_path) and bool(settings.get("master_compresses")) == bool(compress)
    # ControlMaster=no: use a running master, never start one; with none running ssh connects by itself.
    argv = [settings.get("ssh_executable") or "ssh", "-o", "ControlMaster=no",
            "-o", 'ControlPath="%s"' % control_path if shared else "ControlPath=none"]
    if not compress:
        argv += ["-o", "Compression=no"]
    if settings.get("remote_user"):
        argv += ["-o", "User=%s" % settings["remote_user"]]
    if settings.get("timeout"):
        argv += ["-o", "ConnectTimeout=%s" % settings["timeout"]]
    if settings.get("ssh_args"):
        argv += shlex.split(settings["ssh_args"])
    key = settings.get("private_key_file")
    argv += ssh_options(settings.get("port"), os.path.expanduser(key) if key else None, settings.get("ssh_common_args"),
                        settings.get("ssh_extra_args"), settings.get("host_key_checking", True) is not False)
    argv = [argv[0]] + [arg for arg in argv[1:] if arg != "-C"]
    if compress:
        argv.append("-C")
    return argv


def ssh_wrapper_script(argv, path):
    """A shell script that runs ssh with argv's options and then its own arguments.

    Nix runs `ssh` from PATH and splits NIX_SSHOPTS at spaces, which breaks options such as
    -o ProxyCommand="ssh -W %h:%p bastion"; a wrapper first on PATH passes every option intact.
    argv[0] must be the real ssh by its full path, and ssh gets the PATH it would have had, so that
    neither it nor a ProxyCommand's own `ssh` runs the wrapper again.
    """
    if not os.path.isabs(argv[0]):
        raise ValueError("the ssh of a wrapper must be a full path, not %r" % argv[0])
    return "#!/bin/sh\nPATH=%s\nexport PATH\nexec %s \"$@\"\n" % (shlex.quote(path), " ".join(shlex.quote(a) for a in argv))


def nix_store_uri(user, host, compress=False, remote_program=None):
    """The ssh:// store URI of `nix copy --to` (legacy ssh store, the target's `nix-store --serve --write`)."""
    query = []
    if compress:
        query.append("compress=true")
    if remote_program:
        query.append("remote-program=" + percent_encode(remote_program))
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host  # IPv6
    return "ssh://%s%s%s" % (user + "@" if user else "", host, "?" + "&".join(query) if query else "")


def percent_encode(text):
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")
    return "".join(c if c in safe else "".join("%%%02X" % b for b in c.encode()) for c in text)


# -- the serve protocol: requests -----------------------------------------------------------------------

def u64(value):
    return struct.pack("<Q", value)


def string(value):
    data = value.encode() if isinstance(value, str) else value
    return u64(len(data)) + data + b"\0" * (-len(data) % 8)


def strings(values):
    return u64(len(values)) + b"".join(string(v) for v in values)


def hello():
    """The client's greeting: magic, then its protocol version."""
    return u64(SERVE_MAGIC_1) + u64(CLIENT_VERSION)


def query_valid_paths(paths, lock=False, substitute=False):
    """Which of paths are valid; lock adds temporary GC roots for them (while the session lasts), substitute
    first fetches missing ones from the store's substituters (both only on a --write session)."""
    return u64(CMD_QUERY_VALID_PATHS) + u64(int(lock)) + u64(int(substitute)) + strings(sorted(paths))


def query_path_infos(paths):
    return u64(CMD_QUERY_PATH_INFOS) + strings(sorted(paths))


def dump_store_path(path):
    """Ask for path's NAR; the reply is the NAR itself (its length is the path info's nar_size)."""
    return u64(CMD_DUMP_STORE_PATH) + string(path)


def add_to_store_nar(info):
    """The request that adds info.path to the store; its NAR (info.nar_size bytes) follows it."""
    return (u64(CMD_ADD_TO_STORE_NAR) + string(info.path) + string(info.deriver) + string(info.nar_hash)
            + strings(sorted(info.references)) + u64(0) + u64(info.nar_size) + u64(0) + strings(sorted(info.sigs))
            + string(info.ca))


def server_minor(version):
    return version & 0xFF


# -- the serve protocol: replies, over a file descriptor ------------------------------------------------

class FdReader:
    """Reads a serve protocol stream from a file descriptor, and forwards NARs without holding them."""

    def __init__(self, fd, what="the other side"):
        self.fd = fd
        self.what = what
        self.buffer = b""
        self.count = 0  # bytes taken from fd

    def _fill(self, want):
        data = os.read(self.fd, max(want, 65536))
        if not data:
            raise ProtocolError("%s closed the connection" % self.what)
        self.count += len(data)
        self.buffer += data

    def read_exact(self, size):
        while len(self.buffer) < size:
            self._fill(size - len(self.buffer))
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def u64(self):
        return struct.unpack("<Q", self.read_exact(8))[0]

    def string(self):
        size = self.u64()
        if size > 1 << 20:
            raise ProtocolError("%s sent a string of %d bytes, which the serve protocol does not do" % (self.what, size))
        data = self.read_exact(size + (-size % 8))[:size]
        return data.decode("utf-8", "replace")

    def strings(self):
        return [self.string() for _i in range(self.u64())]

    def greeting(self):
        """The server's greeting; returns its protocol version. Skips the line a become plugin prints first."""
        head = self.read_exact(8)
        if head.startswith(BECOME_SUCCESS[:8]):
            line = head
            while not line.endswith(b"\n"):
                line += self.read_exact(1)
                if len(line) > 200:
                    break
            head = self.read_exact(8)
        magic = struct.unpack("<Q", head)[0]
        if magic != SERVE_MAGIC_2:
            raise ProtocolError("%s did not answer like `nix-store --serve` (it printed %r first: does a login script "
                                "print to stdout?)" % (self.what, (head + self.buffer[:40]).decode("utf-8", "replace")))
        return self.u64()

    def path_infos(self):
        """The reply to query_path_infos: {path: PathInfo}."""
        infos = {}
        while True:
            path = self.string()
            if not path:
                return infos
            deriver = self.string()
            references = self.strings()
            self.u64()  # download size
            nar_size = self.u64()
            nar_hash = self.string()
            ca = self.string()
            sigs = self.strings()
            infos[path] = PathInfo(path, deriver, references, nar_size, nar_hash, ca, sigs)

    def copy_to(self, writer, size):
        """Forward exactly size bytes to writer, at most CHUNK at a time (splice(2) where it can)."""
        if self.buffer:
            head, self.buffer = self.buffer[:size], self.buffer[size:]
            writer.write(head)
            size -= len(head)
        splice = getattr(os, "splice", None) if writer.fileno() is not None else None
        while size > 0:
            if splice is not None:
                try:
                    moved = splice(self.fd, writer.fileno(), min(size, CHUNK))
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    splice = None  # neither end is a pipe, or no splice here: copy through memory
                    continue
                if moved == 0:
                    raise ProtocolError("%s closed the connection in the middle of a NAR" % self.what)
                self.count += moved
                writer.count += moved
                size -= moved
                continue
            data = os.read(self.fd, min(size, CHUNK))
            if not data:
                raise ProtocolError("%s closed the connection in the middle of a NAR" % self.what)
            self.count += len(data)
            writer.write(data)
            size -= len(data)


class FdWriter:
    """Writes to a file descriptor (a pipe to ssh, or a file), counting the bytes."""

    def __init__(self, fd):
        self.fd = fd
        self.count = 0

    def fileno(self):
        return self.fd

    def write(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            self.count += written
            view = view[written:]


class StreamWriter:
    """Writes to a Python file object (e.g. a gzip file), counting the bytes given to it."""

    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def fileno(self):
        return None

    def write(self, data):
        self.stream.write(data)
        self.count += len(data)


# -- messages ---------------------------------------------------------------------------------------------

def import_failure_hint(stderr):
    """A hint for the ways a target's import commonly fails, or ''."""
    text = stderr or ""
    if "lacks a valid signature" in text:
        return (" (the user that imports is not trusted by the host's Nix: use become: true so the import runs as "
                "root, or add that user to nix.settings.trusted-users)")
    if "No space left on device" in text:
        return " (the host's /nix is full: free space, e.g. nix-collect-garbage on the host)"
    if "a password is required" in text or "a terminal is required" in text:
        return " (become needs a password here: give it with --ask-become-pass or ansible_become_password)"
    return ""
