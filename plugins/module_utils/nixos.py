# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""What a NixOS host exposes: system profiles and generations, systems, unit changes, closure diffs."""

from __future__ import annotations

import os
import re

from ansible_collections.ansinix.nixos.plugins.module_utils.activation_runner import (
    current_generation as runner_current_generation, generations as runner_generations, realpath_or_none,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, split_name_version, store_path_name

SYSTEM_PROFILE = "/nix/var/nix/profiles/system"
CURRENT_SYSTEM = "/run/current-system"
BOOTED_SYSTEM = "/run/booted-system"
BOOT_PARTS = ("kernel", "initrd", "kernel-modules")

# What switch-to-configuration prints about units (NixOS's Perl and Rust versions alike), by list.
UNIT_LINES = (
    ("stopped", re.compile(r"^stopping the following units: (.*)$")),
    ("reloaded", re.compile(r"^reloading the following units: (.*)$")),
    ("restarted", re.compile(r"^restarting the following units: (.*)$")),
    ("started", re.compile(r"^starting the following units: (.*)$")),
    ("started", re.compile(r"^the following new units were started: (.*)$")),
    ("failed", re.compile(r"^warning: the following units failed: (.*)$")),
)
DRY_UNIT_LINES = (
    ("stopped", re.compile(r"^would stop the following units: (.*)$")),
    ("reloaded", re.compile(r"^would reload the following units: (.*)$")),
    ("restarted", re.compile(r"^would restart the following units: (.*)$")),
    ("started", re.compile(r"^would start the following units: (.*)$")),
)
UNIT_LISTS = ("stopped", "reloaded", "restarted", "started", "failed")


class Profile:
    """A Nix profile such as /nix/var/nix/profiles/system, read from the file system.

    Only the activation runner changes a profile (it must finish what it starts even when the
    connection goes away); the module reads it to decide.
    """

    def __init__(self, path=SYSTEM_PROFILE):
        self.path = path

    def generations(self):
        """{number: system store path} of every generation."""
        return runner_generations(self.path)

    def current_generation(self):
        return runner_current_generation(self.path)

    def current_path(self):
        return realpath_or_none(self.path)

    def previous_generation(self):
        """The newest generation older than the current one (what `nix-env --rollback` goes to)."""
        current = self.current_generation()
        older = [n for n in self.generations() if current is not None and n < current]
        return max(older) if older else None


def check_system(path, specialisation=None):
    """Raise NixError unless path is a NixOS system (with the specialisation asked for)."""
    if not os.path.exists(os.path.join(path, "bin", "switch-to-configuration")):
        raise NixError(
            "%s is not a NixOS system: it has no bin/switch-to-configuration. Build "
            "nixosConfigurations.NAME.config.system.build.toplevel (nix_build's nixos_configuration)" % path
        )
    if specialisation:
        spec = os.path.join(path, "specialisation", specialisation)
        if not os.path.exists(os.path.join(spec, "bin", "switch-to-configuration")):
            have = sorted(os.listdir(os.path.join(path, "specialisation"))) if os.path.isdir(os.path.join(path, "specialisation")) else []
            raise NixError("system %s has no specialisation %r (it has: %s)" % (path, specialisation, ", ".join(have) or "none"))
        # What /run/current-system will point at: the specialisation's own store path.
        return os.path.realpath(spec)
    return path


def parse_units(output, dry=False):
    """{stopped, reloaded, restarted, started, failed: [unit, ...]} as switch-to-configuration printed them."""
    units = dict((key, []) for key in UNIT_LISTS)
    for line in (output or "").splitlines():
        for key, pattern in DRY_UNIT_LINES if dry else UNIT_LINES:
            match = pattern.match(line.strip())
            if match:
                units[key].extend(u.strip() for u in match.group(1).split(",") if u.strip() and u.strip() not in units[key])
    return units


def reboot_required(new_path, booted=BOOTED_SYSTEM):
    """True when the new system's kernel, initrd or kernel modules differ from the booted ones."""
    if not os.path.exists(booted):
        return False
    return any(realpath_or_none(os.path.join(booted, part)) != realpath_or_none(os.path.join(new_path, part)) for part in BOOT_PARTS)


def packages_of(closure):
    """{pname: set of versions} of a closure's store paths (as nvd and nix store diff-closures do)."""
    packages = {}
    for path in closure:
        name = store_path_name(path)
        if name.endswith(".drv"):
            continue
        pname, version = split_name_version(name)
        packages.setdefault(pname, set()).add(version)
    return packages


def closure_diff(old_closure, new_closure):
    """{'added': {pname: versions}, 'removed': {...}, 'changed': {pname: [old, new]}}."""
    old, new = packages_of(old_closure), packages_of(new_closure)
    diff = {"added": {}, "removed": {}, "changed": {}}
    for pname in sorted(set(old) | set(new)):
        if pname not in old:
            diff["added"][pname] = sorted(v for v in new[pname])
        elif pname not in new:
            diff["removed"][pname] = sorted(v for v in old[pname])
        elif old[pname] != new[pname]:
            diff["changed"][pname] = [", ".join(sorted(v or "-" for v in old[pname])), ", ".join(sorted(v or "-" for v in new[pname]))]
    return diff


def format_closure_diff(diff):
    lines = []
    for pname, (old, new) in sorted(diff["changed"].items()):
        lines.append("~ %s: %s -> %s" % (pname, old, new))
    for pname, versions in sorted(diff["added"].items()):
        lines.append("+ %s %s" % (pname, ", ".join(v for v in versions if v)))
    for pname, versions in sorted(diff["removed"].items()):
        lines.append("- %s %s" % (pname, ", ".join(v for v in versions if v)))
    return "\n".join(line.rstrip() for line in lines) + ("\n" if lines else "")
