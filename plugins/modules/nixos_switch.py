#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nixos_switch
short_description: Switch a NixOS host to a system closure, with automatic and magic rollback
version_added: 0.1.0
description:
  - Makes a system closure that is already in the host's store (see M(ansinix.nixos.nix_copy_closure)) a new
    generation of the system profile and activates it, like C(nixos-rebuild switch) does; or goes back to the
    previous generation (O(rollback)) or to any existing one (O(generation)).
  - Idempotent. When the system is already active (and already the profile's current generation, for the
    actions that set it) nothing is run and RV(ignore:changed) is false.
  - Everything that changes the host (setting the profile, the activation, the rollbacks, pruning) is done by a
    runner on the host, detached from the SSH session (a C(systemd-run) unit where systemd is PID 1, a double-forked
    process in a session of its own otherwise). The module waits for it. Its output is kept in
    C(/var/log/ansinix/switch-*.log), its state in C(/run/ansinix/switch-*/status.json).
  - Where systemd is PID 1, C(switch-to-configuration) runs in the transient unit C(nixos-rebuild-switch-to-configuration)
    with the options and environment C(nixos-rebuild) gives it.
  - A switch already running on the host (NixOS's lock C(/run/nixos/switch-to-configuration.lock) is held, by a
    C(nixos-rebuild) or another tool) is waited for, see O(lock_timeout).
  - If the connection drops mid-switch, the host is reported unreachable, with one line that says so, and the runner
    still finishes. The task is not retried over another connection. Run it again. It waits for that switch under
    the deploy lock and reports how it ended (RV(last_activation)).
  - When the activation fails, the host goes back to the previous generation by itself and the task fails
    with the failed units and the log (O(rollback_on_failure)).
  - Magic rollback. After a switch the host waits O(confirm_timeout) seconds for a confirmation that the
    controller sends over a B(new) connection. If the new configuration broke SSH or the network, none
    arrives, and the host rolls itself back.
  - One deploy at a time per host, confirmation window included. The lock (C(/run/ansinix/deploy.lock)) is an
    C(flock) that dies with its holder, so a crashed deploy never blocks the next.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.attributes.action
  - ansinix.nixos.nix
attributes:
  check_mode:
    support: full
    details: Runs C(switch-to-configuration dry-activate) and reports the units that would change. Nothing changes.
  diff_mode:
    support: full
    details: The closure diff between the running system and the new one, with the packages that are added,
      removed, or change version.
  action:
    support: full
    details: The action plugin sends the confirmation for the magic rollback over a new connection.
options:
  path:
    description:
      - The store path of the system, such as RV(ansinix.nixos.nix_build#module:out_path).
      - Exactly one of O(path), O(rollback) and O(generation) is required.
    type: str
  rollback:
    description:
      - Go back to the generation before the current one of O(profile), like C(nixos-rebuild switch --rollback).
    type: bool
    default: false
  generation:
    description:
      - Switch to this existing generation of O(profile).
    type: int
  action:
    description:
      - V(switch) makes the system the boot default and activates it. V(boot) makes it the boot default only,
        for the next reboot. V(test) activates it and leaves the boot default as it was. V(dry-activate)
        only says what would happen.
    type: str
    choices: [switch, boot, test, dry-activate]
    default: switch
  install_bootloader:
    description:
      - Install the boot loader itself, not only its entries (C(NIXOS_INSTALL_BOOTLOADER=1)).
      - Like everything else, only when something is switched; a host already on the system is left alone.
    type: bool
    default: false
  profile:
    description:
      - The system profile.
    type: path
    default: /nix/var/nix/profiles/system
  specialisation:
    description:
      - Activate this specialisation of the system (the profile gets the system itself).
    type: str
  require_nixos:
    description:
      - Refuse to switch a host that is not NixOS (has no C(/etc/NIXOS)).
    type: bool
    default: true
  rollback_on_failure:
    description:
      - When the activation fails (for example, units fail to start), go back to the previous generation,
        activate it again, delete the failed generation, and fail the task with RV(rolled_back=true).
    type: bool
    default: true
  confirm_timeout:
    description:
      - Seconds the host waits after a V(switch) or V(test) for the controller to confirm, over a new
        connection, that it can still log in. Without a confirmation the host rolls itself back.
      - The action plugin resets the task's connection first (an SSH ControlPersist master is stopped, a
        paramiko transport reconnected), and the host refuses a confirmation that arrives through the sshd
        process the switch ran under.
      - The full check needs the host to tell the two SSH logins apart. That takes the C(ssh) or C(paramiko) connection,
        with no C(become) or a become method that runs the command under the login (C(sudo), C(su), C(doas)). With the
        C(local) connection, or a become method that starts commands outside the login (C(machinectl), C(run0)),
        the host takes any confirmation on trust; the task then warns and returns RV(confirmed_by=unverified).
      - V(0) turns the magic rollback off.
    type: int
    default: 30
  keep_generations:
    description:
      - After a successful (and confirmed) switch, delete system generations beyond the newest N, and update the
        boot loader so that it no longer lists them. Never the current one or the booted one.
    type: int
  on_refused_switch:
    description:
      - What to do when the new system refuses a live switch. A NixOS system refuses it when one of its pre-switch
        checks (C(system.preSwitchChecks)) fails, for example because a critical component it lists in
        C(system.switch.inhibitors) (such as the D-Bus implementation) differs from the running system's. The module
        asks the system with C(switch-to-configuration check) before it changes anything.
      - V(fail) fails the task with the checks' reason and changes nothing.
      - V(boot), with O(action=switch), makes the system the one the host starts at its B(next boot only) and returns
        RV(boot_once=true) and
        RV(reboot_required=true). The previous generation stays the profile's current one and the boot default, so if
        the new system does not come up, the boot after that starts the previous one. After the reboot, run the task
        again with O(generation) set to RV(boot_once_generation) and O(action=boot) to make the new system the boot
        default. The C(ansinix.nixos.deploy) role does both when C(nixos_reboot) is V(if_needed) or V(always).
      - With GRUB, the module sets GRUB's one-time entry C(next_entry) (as C(grub-reboot) does) in the C(grubenv) of
        every path GRUB installs into (C(boot.loader.grub.mirroredBoots)), with the system's own C(grub-editenv).
        NixOS's C(grub.cfg) boots it once and clears it. This fails closed where GRUB cannot clear it at boot (a
        C(/boot) on btrfs, ZFS, software RAID, LVM or LUKS).
      - With systemd-boot, it sets C(LoaderEntryOneShot) with C(bootctl set-oneshot).
      - With another boot loader, or when the one-time entry cannot be set, the task fails and the previous generation
        stays the default.
      - To switch anyway, set C(NIXOS_NO_CHECK=1) in the task's C(environment), as with C(nixos-rebuild). The checks are
        then skipped, for the question and for the switch.
    type: str
    choices: [fail, boot]
    default: fail
  lock_timeout:
    description:
      - Seconds to wait, in all, for another deploy on the same host to finish, and for a switch that runs there already
        (one that holds NixOS's lock C(/run/nixos/switch-to-configuration.lock), such as a C(nixos-rebuild)).
      - After that the task fails, changes nothing, and names the process that holds the lock.
      - When that lock is held by a stopped process, or by a process that inherited it from a switch that has exited,
        the task fails at once and says so. The module never ends that process.
    type: int
    default: 300
  activation_timeout:
    description:
      - Seconds to wait for the activation to finish. It goes on on the host after that; the task fails.
    type: int
    default: 1800
notes:
  - Run with C(become) when the SSH user is not root.
seealso:
  - module: ansinix.nixos.nix_build
  - module: ansinix.nixos.nix_copy_closure
  - name: nixos-rebuild
    description: What NixOS's own tool does with a system, step by step.
    link: https://nixos.org/manual/nixos/stable/#sec-changing-config
"""

EXAMPLES = r"""
- name: Switch to the system built earlier, rolling back if it breaks SSH
  ansinix.nixos.nixos_switch:
    path: "{{ web1_system.out_path }}"
    keep_generations: 10

- name: Only make it the boot default (activate on the next reboot)
  ansinix.nixos.nixos_switch:
    path: "{{ web1_system.out_path }}"
    action: boot

- name: Switch, or when the new system refuses a live switch, boot it once and reboot
  ansinix.nixos.nixos_switch:
    path: "{{ web1_system.out_path }}"
    on_refused_switch: boot
  register: web1_switch

- name: Reboot into the system booted once
  ansible.builtin.reboot:
  when: web1_switch.boot_once | default(false)

- name: Make it the boot default now that it came back
  ansinix.nixos.nixos_switch:
    generation: "{{ web1_switch.boot_once_generation }}"
    action: boot
  when: web1_switch.boot_once | default(false)

- name: Go back to the previous generation
  ansinix.nixos.nixos_switch:
    rollback: true

- name: Go to generation 42
  ansinix.nixos.nixos_switch:
    generation: 42

# Ad hoc, with become for a non-root SSH user:
#   ansible web -b -m ansinix.nixos.nixos_switch -a "path=/nix/store/...-nixos-system-web1 action=test"
"""

RETURN = r"""
system:
  description: The system the task switched to (O(path), or the system of the generation chosen).
  returned: always
  type: str
  sample: /nix/store/25hvkkbz4ary5jnyxvis6jiz96553yx5-nixos-system-web1-2
previous:
  description: The system that was active before (C(/run/current-system)).
  returned: always
  type: str
  sample: /nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-1
current:
  description: The system that is active now.
  returned: always
  type: str
  sample: /nix/store/25hvkkbz4ary5jnyxvis6jiz96553yx5-nixos-system-web1-2
generation:
  description: The current generation number of O(profile) afterwards.
  returned: always
  type: int
  sample: 7
action:
  description: The action that was run.
  returned: always
  type: str
  sample: switch
units:
  description: The units switch-to-configuration stopped, reloaded, restarted, started, or saw fail. In
    check mode, those it would change.
  returned: always
  type: dict
  sample: {"stopped": [], "reloaded": ["dbus.service"], "restarted": ["nginx.service"], "started": [], "failed": []}
reboot_required:
  description: The new system's kernel, initrd or kernel modules differ from the booted system's.
  returned: always
  type: bool
refused_switch:
  description: Why the new system refused a live switch (see O(on_refused_switch)), with the last lines its
    pre-switch checks printed.
  returned: when the new system refused a live switch
  type: dict
  sample: {"reason": "pre-switch check 'switchInhibitors' failed (dbus-implementation: dbus -> broker)", "output": "..."}
boot_once:
  description: The system refused a live switch and is the system of the next boot only (O(on_refused_switch=boot)).
    Reboot the host, then run the task with O(generation) set to RV(boot_once_generation) and O(action=boot) to make it
    the boot default.
  returned: when the new system refused a live switch and O(on_refused_switch=boot)
  type: bool
boot_once_entry:
  description: The boot loader entry the host starts at its next boot only. With GRUB, the menu entry's title
    path, such as C(NixOS - All configurations>NixOS - Configuration 8 (2026-12-06 - 26.05\)).
  returned: when the system was booted once
  type: str
  sample: nixos-generation-8.conf
boot_once_generation:
  description: The generation of the system booted once. After the reboot, O(generation) with O(action=boot) makes it
    the boot default.
  returned: when the system was booted once
  type: int
  sample: 8
rolled_back:
  description: The host went back to its previous generation (failed activation, or no confirmation).
  returned: always
  type: bool
log_tail:
  description: The last lines switch-to-configuration printed (and, after a rollback, what the rollback printed).
  returned: when something ran
  type: str
log:
  description: The log of this switch on the host, with everything the runner ran and printed.
  returned: when something ran
  type: str
  sample: /var/log/ansinix/switch-20250101T120000Z-1a2b3c4d.log
confirmed:
  description: Whether the new system was confirmed over a new connection; V(null) when no confirmation was asked
    for (O(confirm_timeout=0), V(boot), nothing to do).
  returned: always
  type: bool
confirm_connection:
  description: The host's sshd process (C(pid:starttime)) of the connection the confirmation came over.
  returned: when a confirmation was sent over SSH
  type: str
confirmed_by:
  description:
    - How the confirmation was checked. V(new_connection) when the host saw it come over an SSH login other than the
      one the switch ran over. V(unverified) when the host could not identify the logins (see O(confirm_timeout)), so
      the confirmation only proves the host still runs commands.
  returned: when the switch was confirmed
  type: str
  sample: new_connection
last_activation:
  description: What the switch before this one on this host did, as its runner recorded it (since the last reboot).
    After a run whose connection dropped, this says how that switch ended; V(null) when there was none.
  returned: unless in check mode
  type: dict
  sample: {"outcome": "done", "rc": 0, "system": "/nix/store/...-nixos-system-web1-2", "log": "/var/log/ansinix/switch-...log"}
deleted_generations:
  description: Generations deleted because of O(keep_generations).
  returned: when something ran
  type: list
  elements: int
closure_diff:
  description: Packages added, removed, and changed between the previous and the new system (diff mode).
  returned: in diff mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ansinix.nixos.plugins.module_utils.switch import ARGUMENT_SPEC, run


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run(module)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
