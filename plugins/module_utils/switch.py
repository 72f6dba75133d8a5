# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""The steps of ansinix.nixos.nixos_switch on the target host: check, decide, start the runner, report."""

from __future__ import annotations

import getpass
import os
import re
import time

from ansible_collections.ansinix.nixos.plugins.module_utils.activation import (
    LOCK_FILE, Activation, DeployLock, describe_holder, last_run, remove_old_runs,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.activation_runner import connection_id
from ansible_collections.ansinix.nixos.plugins.module_utils.switch_lock import wait_for_other_switch
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NIX_ARGUMENT_SPEC, NixError, check_store_path, nix_for
from ansible_collections.ansinix.nixos.plugins.module_utils.nixos import (
    BOOTED_SYSTEM, CURRENT_SYSTEM, Profile, check_system, closure_diff, format_closure_diff, parse_units,
    realpath_or_none, reboot_required,
)

ACTIONS = ("switch", "boot", "test", "dry-activate")
# Actions that make the system the profile's current generation (the boot default), and those
# that activate it now.
SETS_PROFILE = ("switch", "boot")
ACTIVATES = ("switch", "test")
LOG_TAIL_LINES = 30

ARGUMENT_SPEC = dict(
    path=dict(type="str"),
    rollback=dict(type="bool", default=False),
    generation=dict(type="int"),
    action=dict(type="str", default="switch", choices=list(ACTIONS)),
    install_bootloader=dict(type="bool", default=False),
    profile=dict(type="path", default="/nix/var/nix/profiles/system"),
    specialisation=dict(type="str"),
    require_nixos=dict(type="bool", default=True),
    rollback_on_failure=dict(type="bool", default=True),
    confirm_timeout=dict(type="int", default=30),
    keep_generations=dict(type="int"),
    lock_timeout=dict(type="int", default=300),
    activation_timeout=dict(type="int", default=1800),
    on_refused_switch=dict(type="str", default="fail", choices=["fail", "boot"]),
    **NIX_ARGUMENT_SPEC
)


def tail(text, lines=LOG_TAIL_LINES):
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def command_path_for_later(path):
    """A path to a command that still works after a switch.

    /run/current-system/sw/bin/nix-env changes with the system; the store path behind it does not.
    Symlinks are followed only while they keep the command's name: nix-env is a symlink to `nix`,
    which picks its personality from the name it is called by.
    """
    for _hop in range(40):
        if not os.path.islink(path):
            break
        target = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
        if os.path.basename(target) != os.path.basename(path):
            break
        path = target
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


# What switch-to-configuration prints when the new system's pre-switch checks refuse (stc-ng's
# do_pre_switch_check), whatever its exit code (stc-ng's die() exits with errno).
REFUSED_MARK = "Pre-switch checks failed"


def classify_pre_switch_check(rc, output):
    """What `switch-to-configuration check` said: passed, refused, unsupported (a system older than the
    `check` action, whose usage lists no check) or error (it could not run the checks at all)."""
    if REFUSED_MARK in output:
        return "refused"
    if rc == 0:
        return "passed"
    usage = re.search(r"^Usage: \S+ \[([a-z|-]+)\]", output, re.M)
    if usage and "check" not in usage.group(1).split("|"):
        return "unsupported"
    return "error"


def refusal_reason(output):
    """One line: the checks that refused, each with its last words (for switchInhibitors: what changed)."""
    lines = [line.rstrip() for line in output.splitlines()]
    reasons = []
    for i, line in enumerate(lines):
        failed = re.match(r"^Pre-switch check '(.+)' failed$", line)
        if not failed:
            continue
        before = lines[:i]
        if failed.group(1) == "switchInhibitors":
            # NixOS's inhibitor check lists `name : old -> new` for each critical component that changed.
            detail = ", ".join(re.sub(r" : ", ": ", l) for l in before if re.match(r"^\S+ : .* -> .*$", l))
        else:
            detail = next((l.strip() for l in reversed(before) if l.strip()), "")[:200]
        reasons.append("pre-switch check '%s' failed%s" % (failed.group(1), " (%s)" % detail if detail else ""))
    return "; ".join(reasons) or "its pre-switch checks failed"


def boot_once_message(result, check_mode=False):
    """What a system booted once instead of switched to means for the user, in one line."""
    return ("%s refuses a live switch (%s); it %s the system of the next boot only, and the previous generation stays the "
            "boot default: reboot, then run with generation=%s action=boot to make it the default"
            % (result["system"], result["refused_switch"]["reason"], "would become" if check_mode else "is",
               result.get("boot_once_generation") or "<boot_once_generation>"))


def validate_params(params):
    """Raise NixError for option values no run could make sense of."""
    # Not `in (None, False)`: generation 0 equals False.
    chosen = [name for name, given in (("path", params.get("path") is not None), ("rollback", params.get("rollback") is True),
                                       ("generation", params.get("generation") is not None)) if given]
    if len(chosen) != 1:
        raise NixError("give exactly one of path, rollback=true or generation (got: %s)" % (", ".join(chosen) or "none"))
    for name in ("confirm_timeout", "lock_timeout", "activation_timeout"):
        if params[name] < 0:
            raise NixError("%s must be 0 or more seconds, not %d" % (name, params[name]))
    if params.get("keep_generations") is not None and params["keep_generations"] < 1:
        raise NixError("keep_generations must be 1 or more (the current generation is always kept), not %d" % params["keep_generations"])
    if params.get("generation") is not None and params["generation"] < 1:
        raise NixError("generation must be a generation number (1 or more), not %d" % params["generation"])
    if params.get("specialisation") is not None and ("/" in params["specialisation"] or params["specialisation"] in ("", ".", "..")):
        raise NixError("specialisation must be the name of one, as under <system>/specialisation/, not %r" % params["specialisation"])


def up_to_date(action, profile_path, current, path, activate_path):
    """Nothing to do: the system is what runs and (for the actions that set it) the profile's current one."""
    if action == "switch":
        return current == activate_path and profile_path == path
    if action == "boot":
        return profile_path == path
    if action == "test":
        return current == activate_path
    return False


class Switch:
    def __init__(self, module, nix, params):
        self.module = module
        self.nix = nix
        self.params = params
        self.profile = Profile(params["profile"])
        self.action = params["action"]

    # -- checks before anything is done ---------------------------------------------------------

    def require_root(self):
        if os.geteuid() != 0:
            raise NixError("nixos_switch changes the system profile and activates systems, which needs root; it runs as %s "
                           "here: add become: true (or -b ad hoc)" % getpass.getuser())

    def require_nixos(self):
        if self.params["require_nixos"] and not os.path.exists("/etc/NIXOS"):
            raise NixError("this host is not NixOS (/etc/NIXOS is missing): install NixOS first (ansinix.nixos.rescue_install "
                           "or ansinix.nixos.infect), or set require_nixos=false if it runs NixOS systems without that file")

    def target(self):
        """(system store path, generation to switch the profile to or None), checked."""
        params = self.params
        if params.get("path") is not None:
            path = check_store_path(params["path"])
            self.nix.bin("nix-env")
            self.require_nixos()
            if not self.nix.is_valid(path):
                if self.module.check_mode:
                    return path, None
                raise NixError("%s is not in this host's Nix store: copy it first with ansinix.nixos.nix_copy_closure" % path)
            return path, None
        self.nix.bin("nix-env")
        self.require_nixos()
        gens = self.profile.generations()
        if params.get("rollback"):
            number = self.profile.previous_generation()
            if number is None:
                raise NixError("nothing to roll back to: profile %s has no generation before the current one (%s)"
                               % (self.profile.path, self.profile.current_generation()))
        else:
            number = params["generation"]
            if number not in gens:
                raise NixError("generation %d does not exist in profile %s; it has: %s"
                               % (number, self.profile.path, ", ".join(str(n) for n in sorted(gens)) or "none"))
        path = gens[number]
        if not self.nix.is_valid(path):
            raise NixError("generation %d of %s points at %s, which is no longer in the store (garbage collected?)"
                           % (number, self.profile.path, path))
        return path, number

    # -- the run ---------------------------------------------------------------------------------

    def run(self, check_mode, diff_mode):
        validate_params(self.params)
        self.require_root()
        path, generation = self.target()
        previous = realpath_or_none(CURRENT_SYSTEM)
        result = {
            "changed": False, "action": self.action, "previous": previous, "current": previous, "system": path,
            "generation": self.profile.current_generation(), "rolled_back": False, "confirmed": None,
            "reboot_required": False, "units": parse_units(""),
        }
        if check_mode and not os.path.exists(path):
            # A plan made without copying: all that can be said is whether the system would change.
            result.update(changed=previous != path or self.profile.current_path() != path,
                          msg="%s is not in this host's store yet; a deploy copies it before switching" % path)
            return result
        activate_path = check_system(path, self.params.get("specialisation"))
        result["reboot_required"] = reboot_required(path)
        if diff_mode and previous:
            diff = closure_diff(self.nix.closure([previous]), self.nix.closure([path]))
            result["diff"] = {"before_header": previous, "after_header": path,
                              "prepared": format_closure_diff(diff) or "(no package changes)\n"}
            result["closure_diff"] = diff
        if check_mode or self.action == "dry-activate":
            return self.dry_run(result, path, activate_path, check_mode)

        deadline = time.monotonic() + self.params["lock_timeout"]
        lock = DeployLock(self.params["lock_timeout"]).acquire()
        try:
            self.report_left_over(lock)
            # Read the host again under the lock: a deploy that held it may have changed it.
            previous = realpath_or_none(CURRENT_SYSTEM)
            result.update(previous=previous, current=previous, generation=self.profile.current_generation(),
                          last_activation=last_run())
            if up_to_date(self.action, self.profile.current_path(), previous, path, activate_path):
                return result
            # A switch not started by this collection (nixos-rebuild, ...) has NixOS's lock, not ours.
            wait_for_other_switch(deadline, self.params["lock_timeout"])
            boot_once = self.refused_switch(result, activate_path)
            activation = Activation.start(lock, {
                "action": self.action,
                "boot_once": boot_once,
                "system": path,
                "activate": activate_path,
                "profile": self.profile.path,
                "generation": generation,
                "nix_env": command_path_for_later(self.nix.bin("nix-env")),
                "install_bootloader": bool(self.params["install_bootloader"]),
                "rollback_on_failure": bool(self.params["rollback_on_failure"]),
                "confirm_timeout": self.params["confirm_timeout"] if self.action in ACTIVATES else 0,
                "keep_generations": self.params.get("keep_generations"),
                "connection_id": connection_id(),
                "switch_lock_timeout": self.params["lock_timeout"],
            })
        finally:
            lock.release()
        status = activation.wait(self.params["activation_timeout"])
        self.report(result, activation, status)
        remove_old_runs()
        return result

    # -- a live switch the new system refuses ----------------------------------------------------------

    def live_switch_refusal(self, activate_path):
        """None when the new system takes a live switch, else why not (its pre-switch checks, run by its own
        `switch-to-configuration check`, which changes nothing). Systems without the check action have none."""
        if self.action not in ACTIVATES:
            return None  # a boot runs the checks itself, with action boot, and a failure is rolled back
        rc, out, err = self.module.run_command([os.path.join(activate_path, "bin", "switch-to-configuration"), "check"])
        output = (out or "") + (err or "")
        verdict = classify_pre_switch_check(rc, output)
        if verdict == "error":
            raise NixError("the pre-switch checks of %s could not run (switch-to-configuration check exited %d): %s"
                           % (activate_path, rc, tail(output, 3).replace("\n", " | ") or "no output"))
        if verdict != "refused":
            return None
        return {"reason": refusal_reason(output), "output": tail(output)}

    def refused_switch(self, result, activate_path, check_mode=False):
        """Whether the system is to be booted once instead of switched to (True), raising NixError when
        it refuses a live switch and the user did not allow that; fills result either way."""
        refusal = self.live_switch_refusal(activate_path)
        if refusal is None:
            return False
        result["refused_switch"] = refusal
        if self.action != "switch" or self.params["on_refused_switch"] != "boot":
            fix = ("set on_refused_switch=boot to boot it instead (the deploy role: nixos_reboot: if_needed)"
                   if self.action == "switch" else "action=test cannot boot it instead; use action=switch with on_refused_switch=boot")
            outcome = "the switch would fail" if check_mode else "nothing was changed"
            raise NixError("%s refuses a live switch: %s; %s. To reboot into it, %s"
                           % (activate_path, refusal["reason"], outcome, fix), **result)
        # Booted once: the previous generation stays the boot default until the deploy confirms the new one.
        self.action = "boot"
        result.update(action="boot", boot_once=True, reboot_required=True)
        if check_mode:
            result["msg"] = boot_once_message(result, check_mode)  # the run's own comes with the runner's result
        return True

    def report_left_over(self, lock):
        """A deploy lock its holder never let go of: that holder was killed mid-run. Say so, once."""
        if lock.left_over:
            where = ("and the host may be between two systems. This run goes on from the host as it is now; last_activation "
                     "says how far that one got" if lock.left_over.get("status_dir") else "before it changed anything")
            self.module.warn("a deploy before this one on this host ended without finishing (%s): it was killed, %s"
                             % (describe_holder(lock.left_over), where))

    def dry_run(self, result, path, activate_path, check_mode):
        """Check mode and action=dry-activate: say what would happen, change nothing."""
        current = realpath_or_none(CURRENT_SYSTEM)
        if check_mode and up_to_date(self.action, self.profile.current_path(), current, path, activate_path):
            return result
        result["changed"] = self.action != "dry-activate"
        if self.action == "boot":
            return result  # nothing is activated now: no units change
        # switch-to-configuration has a lock of its own and fails at once when a deploy holds it.
        deadline = time.monotonic() + self.params["lock_timeout"]
        lock = DeployLock(self.params["lock_timeout"]).acquire() if os.path.exists(LOCK_FILE) else None
        try:
            if lock:
                self.report_left_over(lock)
            wait_for_other_switch(deadline, self.params["lock_timeout"])
            if check_mode and self.refused_switch(result, activate_path, check_mode=True):
                self.note_boot_once_in_diff(result)
                return result
            rc, out, err = self.module.run_command([os.path.join(activate_path, "bin", "switch-to-configuration"), "dry-activate"])
        finally:
            if lock:
                lock.release()
        result["units"] = parse_units(out + "\n" + err, dry=True)
        result["log_tail"] = tail(out + err)
        if rc != 0:
            raise NixError("dry-activate of %s failed (exit %d): %s" % (activate_path, rc, tail(err or out, 3).replace("\n", " | ")),
                           **result)
        return result

    @staticmethod
    def note_boot_once_in_diff(result):
        """The plan in the diff: what refused the live switch, and what happens instead."""
        note = ("live switch refused: %s\nwould instead: boot it once, reboot, and make it the boot default when the "
                "host comes back (the previous generation stays the default until then)\n" % result["refused_switch"]["reason"])
        if "diff" in result:
            result["diff"]["prepared"] = note + result["diff"]["prepared"]
        else:
            result["diff"] = {"prepared": note}

    def report(self, result, activation, status):
        """Fill result from the runner's status; raise NixError when the switch did not stick."""
        output = activation.output()
        current = realpath_or_none(CURRENT_SYSTEM)
        new_generation = status.get("current_generation", status.get("new_generation"))
        result.update(
            changed=True, log=status.get("log"), log_tail=tail(output), units=parse_units(output),
            current=current, generation=self.profile.current_generation() if new_generation is None else new_generation,
            rolled_back=bool(status.get("rolled_back")), deleted_generations=status.get("deleted_generations") or [],
        )
        booted = realpath_or_none(BOOTED_SYSTEM)
        result["reboot_required"] = bool(booted) and reboot_required(current if self.action in ACTIVATES else result["system"])
        if "boot_once" in result:
            result["boot_once"] = bool(status.get("boot_once_entry"))
        if status.get("boot_once_entry"):
            result.update(reboot_required=True, boot_once_entry=status["boot_once_entry"],
                          boot_once_generation=status.get("new_generation"))
            result["msg"] = boot_once_message(result)
        if status.get("state") == "awaiting-confirmation":
            result["confirm"] = activation.confirm_request()
            return
        outcome = status.get("outcome")
        if outcome == "done":
            return
        if status.get("rolled_back"):
            result["log_tail"] = tail(output + (activation.read("rollback.out") or ""))
        failed = result["units"].get("failed") or []
        what = "activating %s failed (exit %s%s)" % (
            activation.params().get("activate"), status.get("rc"), ", failed units: " + ", ".join(failed) if failed else "")
        if outcome == "rolled-back":
            errors = status.get("rollback_errors") or []
            cause = {"activation-failed": what, "switch-lock-held": status.get("error")}.get(
                status.get("rollback_reason"), "the runner failed: %s" % status.get("error"))
            raise NixError("%s; rolled back to %s (generation %s)%s; log on the host: %s"
                           % (cause, status.get("previous_system") or "the previous state", status.get("previous_generation"),
                              ", but the rollback had errors: " + "; ".join(errors) if errors else "", status.get("log")), **result)
        if outcome == "failed":
            raise NixError("%s; the host is left on it (rollback_on_failure=false); log on the host: %s" % (what, status.get("log")),
                           **result)
        raise NixError("the switch to %s did not complete: %s; log on the host: %s"
                       % (result["system"], status.get("error") or outcome, status.get("log")), **result)


def run(module):
    """The module's result: a dict, with failed and msg when the switch did not happen or did not stick."""
    try:
        return Switch(module, nix_for(module), module.params).run(module.check_mode, module._diff)
    except NixError as exc:
        return dict(exc.details, failed=True, msg=exc.msg)
