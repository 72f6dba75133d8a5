# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""The entry of the next boot only: how the activation runner boots a new generation once.

For a system that refuses a live switch, the runner makes the new generation boot once and keeps the
previous one the default, so that magic rollback covers the reboot. systemd-boot does it with
LoaderEntryOneShot (`bootctl set-oneshot`), GRUB with next_entry in its grubenv (what grub-reboot sets),
which the grub.cfg NixOS writes boots once and clears. Like the runner, this file uses the standard library
only: nixos_switch copies it beside the runner on the host.
"""

from __future__ import annotations

import os
import re
from xml.etree import ElementTree


def boot_entry_id(profile, generation):
    """The systemd-boot entry NixOS writes for a generation of a profile (systemd-boot-builder's names)."""
    directory, name = os.path.split(profile.rstrip("/"))
    if directory == "/nix/var/nix/profiles/system-profiles":
        return "nixos-%s-generation-%d.conf" % (name, generation)
    return "nixos-generation-%d.conf" % generation


# GRUB's install script and its settings, one grub-config.xml per mirroredBoots path (nixpkgs
# nixos/modules/system/boot/loader/grub/grub.nix: installBootLoader, grubConfig).
INSTALL_GRUB = re.compile(rb"/nix/store/[0-9a-z]{32}-install-grub\.sh")
GRUB_CONFIG = re.compile(rb"/nix/store/[0-9a-z]{32}-grub-config\.xml")
# GRUB's save_env cannot write on these; next_entry would then never be cleared and boot every time.
GRUBENV_UNWRITABLE_FS = ("btrfs", "zfs")
GRUBENV_UNWRITABLE_DEV = ("/dev/md", "/dev/mapper/", "/dev/dm-")


def read_bytes(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def grub_mirrors(system):
    """[(boot path, grub-editenv or None)] of a system whose boot loader is GRUB, else None.

    The boot loader is the script its switch-to-configuration runs (INSTALL_BOOTLOADER, in the wrapper or
    the Perl script); GRUB's lists one grub-config.xml per mirroredBoots path."""
    script = INSTALL_GRUB.search(read_bytes(os.path.join(system, "bin", "switch-to-configuration")))
    if not script:
        return None
    mirrors = []
    for config in dict.fromkeys(GRUB_CONFIG.findall(read_bytes(script.group(0).decode()))):
        try:
            attrs = dict((a.get("name"), a[0].get("value")) for a in ElementTree.parse(config.decode()).getroot().iter("attr")
                         if len(a) and a[0].tag == "string")
        except (OSError, ElementTree.ParseError):
            attrs = {}
        if not attrs.get("bootPath"):
            raise RuntimeError("could not read GRUB's settings %s" % config.decode())
        editenv = next((p for p in (os.path.join(attrs[k], "bin", "grub-editenv") for k in ("grub", "grubEfi") if attrs.get(k))
                        if os.path.exists(p)), None)
        mirrors.append((attrs["bootPath"], editenv))
    return mirrors or None


def grub_menu_entry(grub_cfg, system):
    """The `submenu>entry` title path of the entry of GRUB's menu (as install-grub.pl writes it) that boots
    system from a submenu, such as "NixOS - All configurations>NixOS - Configuration 3 (...)", or None."""
    submenu = entry = None
    for line in grub_cfg.splitlines():
        words = line.split()
        match = re.match(r'\s*(submenu|menuentry)\s+"([^"]*)"', line)
        if match and match.group(1) == "submenu":
            submenu = match.group(2)
        elif match:
            entry = match.group(2)
        elif words == ["}"]:
            if entry is None:
                submenu = None
            entry = None
        elif submenu and entry and "init=%s/init" % system in words:
            return "%s>%s" % (submenu, entry)
    return None


def grub_cfg_problem(grub_cfg):
    """Why this grub.cfg cannot boot an entry once and then the default again, or None."""
    if "save_env next_entry" not in grub_cfg:
        return "does not boot a one-time entry (next_entry) and clear it"
    # boot.loader.grub.default = "saved": each entry saves itself as the default, unless booted once (boot_once).
    if "save_env saved_entry" in grub_cfg and "boot_once" not in grub_cfg:
        return ("would make a one-time entry the saved default (boot.loader.grub.default = \"saved\" on a NixOS "
                "whose grub.cfg does not know boot_once)")
    return None


def mount_of(path):
    """(file system type, source) of the mount that holds path."""
    best, found = "", ("", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                rest = fields[fields.index("-") + 1:]
                best, found = point, (rest[0], rest[1] if len(rest) > 1 else "")
    return found


def set_next_boot(runner, system, new_system, profile, generation, previous_system):
    """Make generation (new_system) of profile the entry of the next boot only; returns the entry.

    runner runs and logs commands (run_logged, last_output). RuntimeError says why it could not be done."""
    mirrors = grub_mirrors(system)
    if mirrors:
        return grub_next_entry(runner, mirrors, new_system)
    entry = boot_entry_id(profile, generation)
    bootctl = next((p for p in (os.path.join(s, "sw", "bin", "bootctl") for s in (system, previous_system))
                    if os.path.exists(p)), None)
    if bootctl is None or runner.run_logged([bootctl, "set-oneshot", entry]) != 0:
        raise RuntimeError("could not make %s the entry of the next boot only (bootctl set-oneshot; the boot loader must "
                           "be systemd-boot)" % entry)
    return entry


def grub_next_entry(runner, mirrors, system):
    """GRUB's one-time entry (what grub-reboot sets): next_entry in the grubenv of every mirroredBoots path,
    which NixOS's grub.cfg boots once and clears. Fails closed: any path that cannot take it undoes the others."""
    entry = None
    for boot, editenv in mirrors:
        grub_dir = os.path.join(boot, "grub")
        cfg = read_bytes(os.path.join(grub_dir, "grub.cfg")).decode(errors="replace")
        problem = grub_cfg_problem(cfg)
        if problem:
            raise RuntimeError("%s/grub.cfg %s" % (grub_dir, problem))
        found = grub_menu_entry(cfg, system)
        if found is None or entry not in (None, found):
            raise RuntimeError("%s/grub.cfg has no menu entry of %s" % (grub_dir, system))
        entry = found
        fstype, source = mount_of(grub_dir)
        if fstype in GRUBENV_UNWRITABLE_FS or source.startswith(GRUBENV_UNWRITABLE_DEV):
            raise RuntimeError("GRUB cannot clear next_entry in %s/grubenv on %s (%s), so the new system would boot at "
                               "every boot; to switch to it anyway, set NIXOS_NO_CHECK=1 in the task's environment"
                               % (grub_dir, source, fstype))
        if editenv is None:
            raise RuntimeError("the system's GRUB has no grub-editenv to set next_entry with")
    done = []
    for boot, editenv in mirrors:
        grubenv = os.path.join(boot, "grub", "grubenv")
        ok = runner.run_logged([editenv, grubenv, "set", "next_entry=" + entry]) == 0
        ok = ok and runner.run_logged([editenv, grubenv, "list"]) == 0
        if ok:
            done.append((grubenv, editenv))
        if not ok or ("next_entry=%s" % entry).encode() not in runner.last_output.splitlines():
            for path, undo in done:
                runner.run_logged([undo, path, "unset", "next_entry"])
            raise RuntimeError("could not set GRUB's next_entry in %s" % grubenv)
    return entry
