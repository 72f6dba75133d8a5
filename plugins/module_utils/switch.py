# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The steps of ansinix.nixos.nixos_switch, on the target host."""

from __future__ import annotations

import os

from ansible_collections.ansinix.nixos.plugins.module_utils.activation import (
    Activation, DeployLock, last_status, remove_old_status_dirs,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, check_store_path
from ansible_collections.ansinix.nixos.plugins.module_utils.nixos import (
    CURRENT_SYSTEM, Profile, check_system, closure_diff, format_closure_diff, parse_units,
    realpath_or_none, reboot_required,
)

# Actions that make the system the boot default, and those that activate it now.
SETS_PROFILE = ("switch", "boot")
ACTIVATES = ("switch", "test")
LOG_TAIL_LINES = 30


def tail(text, lines=LOG_TAIL_LINES):
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


class Switch:
    def __init__(self, module, nix, params):
        self.module = module
        self.nix = nix
        self.params = params
        self.profile = Profile(nix, params["profile"])
        self.action = params["action"]
        self.check_mode = module.check_mode

    # -- what to switch to -----------------------------------------------------------------------

    def target(self):
        """(system path, generation number to switch the profile to or None)."""
        params = self.params
        if params.get("rollback"):
            previous = self.profile.previous_generation()
            if previous is None:
                raise NixError("nothing to roll back to: profile %s has no generation before the current one (%s)"
                               % (self.profile.path, self.profile.current_generation()))
            return self.profile.generations()[previous], previous
        if params.get("generation") is not None:
            gens = self.profile.generations()
            number = params["generation"]
            if number not in gens:
                raise NixError("generation %d does not exist in profile %s; it has: %s"
                               % (number, self.profile.path, ", ".join(str(n) for n in sorted(gens)) or "none"))
            return gens[number], number
        path = check_store_path(params["path"])
        if not self.nix.is_valid(path):
            if self.check_mode:
                return path, None
            raise NixError("%s is not in this host's Nix store: copy it first with ansinix.nixos.nix_copy_closure" % path)
        return path, None

    def preflight(self, path):
        if self.params["require_nixos"] and not os.path.exists("/etc/NIXOS"):
            raise NixError("this host is not NixOS (/etc/NIXOS is missing). Install NixOS first (ansinix.nixos.rescue_install "
                           "or ansinix.nixos.infect), or set require_nixos=false if you know better")
        return check_system(path, self.params.get("specialisation"))

    def up_to_date(self, path, activate_path):
        current = realpath_or_none(CURRENT_SYSTEM)
        profile_ok = self.profile.current_path() == path
        if self.action == "switch":
            return current == activate_path and profile_ok
        if self.action == "boot":
            return profile_ok
        if self.action == "test":
            return current == activate_path
        return False

    # -- the run ---------------------------------------------------------------------------------

    def run(self, check_mode, diff_mode):
        path, generation = self.target()
        previous = realpath_or_none(CURRENT_SYSTEM)
        if check_mode and not os.path.exists(path):
            # A plan made without copying: all that can be said is that the system would change.
            return {"changed": previous != path, "action": self.action, "previous": previous, "current": previous,
                    "system": path, "generation": self.profile.current_generation(), "rolled_back": False,
                    "reboot_required": False, "units": {},
                    "msg": "%s is not in this host's store yet; a deploy copies it before switching" % path}
        activate_path = self.preflight(path)
        result = {
            "changed": False,
            "action": self.action,
            "previous": previous,
            "current": previous,
            "system": path,
            "generation": self.profile.current_generation(),
            "rolled_back": False,
            "reboot_required": reboot_required(path),
            "units": {},
        }
        if diff_mode and previous:
            diff = closure_diff(self.nix.closure([previous]), self.nix.closure([path]))
            result["diff"] = {"before_header": previous, "after_header": path,
                              "prepared": format_closure_diff(diff) or "(no package changes)\n"}
            result["closure_diff"] = diff

        if self.action == "dry-activate" or check_mode:
            if self.up_to_date(path, activate_path) and self.action != "dry-activate":
                return result
            rc, out, err = self.module.run_command([os.path.join(activate_path, "bin", "switch-to-configuration"), "dry-activate"])
            result["units"] = parse_units(out + "\n" + err, dry=True)
            result["changed"] = self.action != "dry-activate"
            result["log_tail"] = tail(out + err)
            if rc != 0:
                raise NixError("dry-activate of %s failed (exit %d): %s" % (path, rc, tail(err, 5)))
            return result

        lock = DeployLock(self.params["lock_timeout"])
        lock.acquire()
        try:
            # Read the host again under the lock: a deploy that held it may have changed it, and the
            # rollback target must be what is active now.
            previous = realpath_or_none(CURRENT_SYSTEM)
            result.update(previous=previous, current=previous, generation=self.profile.current_generation())
            if self.up_to_date(path, activate_path):
                result["last_activation"] = last_status()
                return result
            previous_generation = self.profile.current_generation()
            new_generation = previous_generation
            if self.action in SETS_PROFILE:
                if generation is not None:
                    self.profile.switch_generation(generation)
                    new_generation = generation
                else:
                    new_generation = self.profile.set(path)
            confirm_timeout = self.params["confirm_timeout"] if self.action in ACTIVATES else 0
            activation = Activation.start(lock, {
                "action": self.action,
                "activate": activate_path,
                "profile": self.profile.path,
                "previous_system": previous or "",
                "previous_generation": previous_generation if self.action in SETS_PROFILE and previous_generation != new_generation else "",
                "new_generation": new_generation if self.action in SETS_PROFILE else "",
                # Only a generation this run made is deleted on rollback; a rollback to an old one is not.
                "delete_new_generation": 1 if generation is None and self.action in SETS_PROFILE else 0,
                "rollback_action": "switch" if self.action == "switch" else "test",
                "rollback_on_failure": 1 if self.params["rollback_on_failure"] else 0,
                "confirm_timeout": confirm_timeout,
                "install_bootloader": 1 if self.params["install_bootloader"] else "",
            })
        finally:
            lock.release()

        rc = activation.wait_activation(self.params["activation_timeout"])
        output = activation.output()
        result.update(changed=True, log=activation.status_dir, log_tail=tail(output), units=parse_units(output))
        if rc is None:
            raise NixError("the activation of %s did not finish within %ss; it goes on on the host (see %s)"
                           % (path, self.params["activation_timeout"], activation.status_dir), **result)
        if rc != 0:
            if self.params["rollback_on_failure"]:
                outcome = activation.wait_for("outcome", 600)
                result.update(rolled_back=outcome == "failed", current=realpath_or_none(CURRENT_SYSTEM),
                              generation=self.profile.current_generation())
                failed = result["units"].get("failed") or []
                raise NixError("activating %s failed (exit %d%s); rolled back to %s"
                               % (path, rc, ", failed units: " + ", ".join(failed) if failed else "", previous or "the previous state"),
                               **result)
            raise NixError("activating %s failed (exit %d); the host is left on it (rollback_on_failure=false)" % (path, rc), **result)

        if confirm_timeout > 0:
            activation.wait_awaiting_confirmation_or_outcome(30)
            result["confirm"] = {"status_dir": activation.status_dir, "timeout": confirm_timeout}
        result.update(current=realpath_or_none(CURRENT_SYSTEM), generation=self.profile.current_generation(),
                      reboot_required=reboot_required(realpath_or_none(CURRENT_SYSTEM) or path) if self.action in ACTIVATES else reboot_required(path))
        result["deleted_generations"] = self.prune(previous_generation if confirm_timeout > 0 else None)
        remove_old_status_dirs()
        return result

    def prune(self, pending_rollback_generation):
        keep = self.params.get("keep_generations")
        if not keep:
            return []
        booted = realpath_or_none("/run/booted-system")
        protect = [self.profile.generation_of(booted) if booted else None, pending_rollback_generation]
        doomed = self.profile.prunable(keep, protect)
        self.profile.delete(doomed)
        return doomed
