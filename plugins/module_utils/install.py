# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Installing a built NixOS system as what a root boots, as nixos-install does it: the system's closure in
that root's store, its system profile, /etc/NIXOS, and the boot loader installed by
`switch-to-configuration boot` with NIXOS_INSTALL_BOOTLOADER=1, in a chroot when the root is not /.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, check_store_path, error_summary

# Written after the boot loader was installed for a system; a rerun that finds it (and the profile on the
# system) has nothing to do. A failed boot loader install leaves no record, so the next run tries again.
RECORD = "var/lib/ansinix/installed-system"
CHROOT_MOUNTS = (("dev", ["--rbind", "/dev"]), ("proc", ["-t", "proc", "proc"]), ("sys", ["--rbind", "/sys"]),
                 ("run", ["-t", "tmpfs", "-o", "mode=0755", "tmpfs"]))


def boot_in_chroot_argv(chroot, root, system, profile):
    """The command that runs the profile's switch-to-configuration boot inside root, through the system's shell.

    The profile is one shell word whatever it holds (a space, a ';'): it is an option, not a command line.
    """
    script = "%s boot" % shlex.quote(profile.rstrip("/") + "/bin/switch-to-configuration")
    return [chroot, root, "%s/sw/bin/sh" % system, "-c", script]


class Installer:
    def __init__(self, module, nix, system, root, profile):
        self.module = module
        self.nix = nix
        self.system = check_store_path(system)
        self.root = os.path.abspath(root)
        self.profile = profile
        self.in_chroot = self.root != "/"

    def path(self, inner):
        return os.path.join(self.root, inner.lstrip("/"))

    def store_args(self):
        return ["--store", self.root] if self.in_chroot else []

    def state(self):
        """What is there now: whether the root's store has the closure, its profile's system, the record."""
        if not os.path.isdir(self.root):
            raise NixError("root %s does not exist: mount the installed system's root there first (ansinix.nixos.nixos_disks)" % self.root)
        if not self.nix.is_valid(self.system):
            raise NixError("%s is not in the store of this host: copy it first (ansinix.nixos.nix_copy_closure)" % self.system)
        closure = self.nix.closure([self.system])
        if self.in_chroot:
            _rc, out, _err = self.nix.run("nix-store", self.store_args() + ["--check-validity", "--print-invalid"] + closure)
            missing = out.split()
        else:
            missing = []
        profile = self.path(self.profile)
        current = os.path.realpath(profile) if os.path.lexists(profile) else None
        if current and self.in_chroot and current.startswith(self.root + "/"):
            current = current[len(self.root):]
        record = None
        if os.path.exists(self.path(RECORD)):
            with open(self.path(RECORD), encoding="utf-8") as f:
                record = f.read().strip()
        return {"missing": missing, "profile_system": current, "record": record,
                "marker": os.path.exists(self.path("/etc/NIXOS"))}

    def install(self, check_mode, install_bootloader):
        state = self.state()
        todo = []
        if state["missing"]:
            todo.append("copy %d store paths into the store under %s" % (len(state["missing"]), self.root))
        if state["profile_system"] != self.system:
            todo.append("set %s to %s" % (self.path(self.profile), self.system))
        if not state["marker"]:
            todo.append("create %s" % self.path("/etc/NIXOS"))
        if install_bootloader and (state["record"] != self.system or todo):
            todo.append("install the boot loader: NIXOS_INSTALL_BOOTLOADER=1 %s/bin/switch-to-configuration boot%s"
                        % (self.system, " in a chroot of %s" % self.root if self.in_chroot else ""))
        result = {"changed": bool(todo), "actions": todo, "system": self.system, "root": self.root, "output": ""}
        if check_mode or not todo:
            return result
        if state["missing"]:
            self.copy_into_root(state["missing"])
        if state["profile_system"] != self.system:
            self.nix.run("nix-env", self.store_args() + ["-p", self.path(self.profile), "--set", self.system], with_options=False,
                         what="setting the system profile")
        os.makedirs(self.path("/etc"), mode=0o755, exist_ok=True)
        if not state["marker"]:
            with open(self.path("/etc/NIXOS"), "a", encoding="utf-8"):
                pass
        if install_bootloader:
            result["output"] = self.install_bootloader()
            os.makedirs(os.path.dirname(self.path(RECORD)), mode=0o755, exist_ok=True)
            with open(self.path(RECORD), "w", encoding="utf-8") as f:
                f.write(self.system + "\n")
        return result

    def copy_into_root(self, paths):
        """nix-store --export | nix-store --store ROOT --import, of the paths the root's store lacks."""
        # run_command cannot pipe one process into another: the closure streams from export to import.
        # pylint: disable-next=consider-using-with,ansible-bad-function
        export = subprocess.Popen([self.nix.bin("nix-store"), "--export"] + paths, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # pylint: disable-next=ansible-bad-function
        imported = subprocess.run([self.nix.bin("nix-store")] + self.store_args() + ["--import"], stdin=export.stdout,
                                  capture_output=True, check=False)
        export.stdout.close()
        export_err = export.stderr.read().decode(errors="replace")
        export.wait()
        if export.returncode or imported.returncode:
            err = imported.stderr.decode(errors="replace") or export_err
            raise NixError("copying the system into the store under %s failed: %s" % (self.root, error_summary(err) or "exit %d" % (
                imported.returncode or export.returncode)))

    def install_bootloader(self):
        env = dict(os.environ, NIXOS_INSTALL_BOOTLOADER="1", LANG="C.UTF-8")
        if not self.in_chroot:
            argv = ["%s/bin/switch-to-configuration" % self.system, "boot"]
            return self.checked(argv, env, "installing the boot loader")
        mounted = []
        try:
            for name, args in CHROOT_MOUNTS:
                target = self.path(name)
                os.makedirs(target, exist_ok=True)
                rc, _out, err = self.module.run_command(["mount"] + args + [target])
                if rc != 0:
                    raise NixError("preparing the chroot: mounting %s failed: %s" % (target, err.strip()))
                mounted.append(target)
            tmp = self.path("/tmp")
            os.makedirs(tmp, exist_ok=True)
            os.chmod(tmp, 0o1777)
            chroot = self.module.get_bin_path("chroot", required=True)
            # Inside the chroot only the store has programs (the activation adds /run/current-system/sw/bin).
            env["PATH"] = "%s/sw/bin:/run/current-system/sw/bin" % self.system
            # As nixos-enter: the activation makes /etc, /bin/sh and the users; its failures do not stop the install.
            # TODO: run_command(environ_update=...) here and in checked(), with the bootstrap tests run on it.
            # pylint: disable-next=ansible-bad-function
            activation = subprocess.run([chroot, self.root, "%s/activate" % self.system], env=env, capture_output=True,
                                        text=True, check=False)
            output = activation.stdout + activation.stderr
            output += self.checked(boot_in_chroot_argv(chroot, self.root, self.system, self.profile), env,
                                   "installing the boot loader in a chroot of %s" % self.root)
            return output
        finally:
            for target in reversed(mounted):
                self.module.run_command(["umount", "--recursive", "--lazy", target])

    def checked(self, argv, env, what):
        # pylint: disable-next=ansible-bad-function
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise NixError("%s failed (exit %d): %s" % (what, proc.returncode, error_summary(output) or output.strip()[-300:]),
                           output=output)
        return output
