# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Ansible's files in a directory that Nix builds from, for nix_build's warning.

Nix copies a local (path:) flake's whole directory into the world-readable store, and a build on the
target receives the directory whole: a vault or an inventory there travels with the Nix files.
"""

from __future__ import annotations

import os
import re
import subprocess

# What marks Ansible's files: their directories, an inventory's names and contents (YAML or INI groups).
ANSIBLE_DIRS = ("group_vars", "host_vars")
INVENTORY_NAMES = ("inventory", "inventory.yml", "inventory.yaml", "inventory.ini", "hosts", "hosts.yml", "hosts.yaml",
                   "hosts.ini")
INVENTORY_RE = re.compile(rb"^(?:\[[^\]\s]+\]|\s*(?:hosts|children):)\s*$", re.M)
# Looked at within these bounds only, so that a huge directory does not slow the build.
SCAN_MAX_FILES, SCAN_MAX_DEPTH = 5000, 6


def _source_files(directory, git):
    """Relative names of the files Nix would take from directory (a git flake: the tracked ones), bounded."""
    if git:
        try:
            # run_command has no timeout, and a hung git must not hang the build.
            # pylint: disable-next=ansible-bad-function
            proc = subprocess.run(["git", "-C", directory, "ls-files", "-z"], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0:
            return [n for n in proc.stdout.decode(errors="replace").split("\0") if n][:SCAN_MAX_FILES]
    names = []
    for top, dirs, files in os.walk(directory):
        rel = os.path.relpath(top, directory)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = sorted(d for d in dirs if d != ".git") if depth < SCAN_MAX_DEPTH else []
        names += [n if rel == "." else os.path.join(rel, n) for n in sorted(files)]
        if len(names) >= SCAN_MAX_FILES:
            return names[:SCAN_MAX_FILES]
    return names


def _starts_with(path, pattern, size):
    try:
        with open(path, "rb") as f:
            head = f.read(size)
    except OSError:
        return False
    return bool(pattern.search(head)) if hasattr(pattern, "search") else head.startswith(pattern)


def ansible_files_in(directory, git=False):
    """What in a Nix source directory belongs to Ansible: vault files, inventories, group_vars/ and host_vars/."""
    found = []
    for name in _source_files(directory, git):
        parts = name.split("/")
        shown = next(("/".join(parts[:i + 1]) + "/" for i, p in enumerate(parts[:-1]) if p in ANSIBLE_DIRS), None)
        path = os.path.join(directory, name)
        if _starts_with(path, b"$ANSIBLE_VAULT;", 15):
            found.append(name + " (vault)")
        elif parts[-1] in INVENTORY_NAMES and _starts_with(path, INVENTORY_RE, 65536):
            found.append(name + " (inventory)")
        elif shown and shown not in found:
            found.append(shown)
    return sorted(found)


def source_warning(directory, what, git=False):
    """One warning naming the Ansible files in the directory Nix builds from, or None."""
    found = ansible_files_in(directory, git)
    if not found:
        return None
    return ("%s %s holds Ansible files: %s. Nix copies the directory into the Nix store, which every user can read, and a "
            "build on the target sends it to every host: move the Nix files into a directory of their own (say nix/) and "
            "point nixos_flake or nixos_file there" % (what, directory, ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")))
