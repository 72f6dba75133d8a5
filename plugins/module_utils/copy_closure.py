# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pieces of ansinix.nixos.nix_copy_closure that need no connection: arguments, batching, ssh options."""

from __future__ import annotations

import shlex

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


def choose_method(method, use_substitutes):
    """auto: stream (any connection, become, no trust set-up), unless only ssh can do what was asked."""
    if method != "auto":
        return method
    return "ssh" if use_substitutes else "stream"


def batches(paths, sizes, limit_bytes):
    """Split paths (kept in order) into runs whose NAR sizes add up to at most limit_bytes each."""
    batch, total = [], 0
    for path in paths:
        size = sizes.get(path, 0)
        if batch and total + size > limit_bytes:
            yield batch
            batch, total = [], 0
        batch.append(path)
        total += size
    if batch:
        yield batch


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
