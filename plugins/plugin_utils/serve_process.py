# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""A serve protocol peer run by the controller (nix_copy_closure): a local `nix-store --serve`, or one at the end
of an ssh command; and local commands with one-line failures."""

from __future__ import annotations

import subprocess
import tempfile

from ansible.errors import AnsibleConnectionFailure

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import (
    NIX_PATH_PREFIX, NO_NIX_RC, FdReader, FdWriter, import_failure_hint,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import INSTALL_HINT, NixError, error_summary

SSH_FAILED_RC = 255


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
