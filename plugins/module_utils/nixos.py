# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a NixOS host exposes: system profiles and generations, systems, unit changes, closure diffs."""

from __future__ import annotations

import os
import re

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, split_name_version, store_path_name

SYSTEM_PROFILE = "/nix/var/nix/profiles/system"
CURRENT_SYSTEM = "/run/current-system"
BOOTED_SYSTEM = "/run/booted-system"
BOOT_PARTS = ("kernel", "initrd", "kernel-modules")

UNIT_LINES = {
    "stopped": re.compile(r"^stopping the following units: (.*)$"),
    "reloaded": re.compile(r"^reloading the following units: (.*)$"),
    "restarted": re.compile(r"^restarting the following units: (.*)$"),
    "started": re.compile(r"^starting the following units: (.*)$"),
    "failed": re.compile(r"^warning: the following units failed: (.*)$"),
}
DRY_UNIT_LINES = {
    "stopped": re.compile(r"^would stop the following units: (.*)$"),
    "reloaded": re.compile(r"^would reload the following units: (.*)$"),
    "restarted": re.compile(r"^would restart the following units: (.*)$"),
    "started": re.compile(r"^would start the following units: (.*)$"),
}


def realpath_or_none(path):
    return os.path.realpath(path) if os.path.lexists(path) else None


class Profile:
    """A Nix profile such as /nix/var/nix/profiles/system, read from the file system."""

    def __init__(self, nix, path=SYSTEM_PROFILE):
        self.nix = nix
        self.path = path
        self.dir = os.path.dirname(path)
        self.base = os.path.basename(path)
        self._link_re = re.compile(r"^%s-(\d+)-link$" % re.escape(self.base))

    def generations(self):
        """{number: system store path} of every generation."""
        gens = {}
        if not os.path.isdir(self.dir):
            return gens
        for entry in os.listdir(self.dir):
            match = self._link_re.match(entry)
            if match:
                gens[int(match.group(1))] = os.path.realpath(os.path.join(self.dir, entry))
        return gens

    def current_generation(self):
        if not os.path.islink(self.path):
            return None
        match = self._link_re.match(os.readlink(self.path))
        return int(match.group(1)) if match else None

    def current_path(self):
        return realpath_or_none(self.path)

    def generation_of(self, path):
        """The newest generation whose system is path, or None."""
        matches = [n for n, p in self.generations().items() if p == path]
        return max(matches) if matches else None

    def previous_generation(self):
        current = self.current_generation()
        older = [n for n in self.generations() if current is not None and n < current]
        return max(older) if older else None

    def set(self, path):
        self.nix.run("nix-env", ["--profile", self.path, "--set", path], with_options=False)
        return self.current_generation()

    def switch_generation(self, number):
        self.nix.run("nix-env", ["--profile", self.path, "--switch-generation", str(number)], with_options=False)

    def delete(self, numbers):
        if numbers:
            self.nix.run("nix-env", ["--profile", self.path, "--delete-generations"] + [str(n) for n in sorted(numbers)], with_options=False)

    def prunable(self, keep, protect=()):
        """Generations beyond the newest `keep`, never the current one nor any in protect."""
        gens = sorted(self.generations(), reverse=True)
        keep_set = set(gens[:keep]) | {self.current_generation()} | set(n for n in protect if n is not None)
        return [n for n in gens if n not in keep_set]


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
        return spec
    return path


def parse_units(output, dry=False):
    """The unit lists switch-to-configuration printed."""
    patterns = DRY_UNIT_LINES if dry else UNIT_LINES
    units = dict((key, []) for key in patterns)
    for line in output.splitlines():
        for key, pattern in patterns.items():
            match = pattern.match(line.strip())
            if match:
                units[key].extend(u.strip() for u in match.group(1).split(",") if u.strip())
    if not dry:
        units.setdefault("failed", [])
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
