#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nixos_install
short_description: Make a built NixOS system what a disk or a converted host boots, as nixos-install does
version_added: 0.1.0
description:
  - The last steps of C(nixos-install), for a system already built and copied to the host (see
    M(ansinix.nixos.nix_build) and M(ansinix.nixos.nix_copy_closure)).
  - Copies the system's closure from the host's store into the store under O(root) (when O(root) is not V(/)),
    sets O(root)'s system profile to the system, creates C(/etc/NIXOS), and installs the boot loader. That last
    step runs C(NIXOS_INSTALL_BOOTLOADER=1 switch-to-configuration boot), in a chroot of O(root) with C(/dev),
    C(/proc), C(/sys) and C(/run) mounted, after the system's activation, as C(nixos-enter) does.
  - With O(root=/) it converts the running host in place, the core of C(nixos-infect). The
    C(ansinix.nixos.infect) role adds C(/etc/NIXOS_LUSTRATE) and the old C(/boot).
  - Idempotent. After a successful boot loader install it records the system in C(/var/lib/ansinix/installed-system)
    under O(root); a root whose profile, C(/etc/NIXOS) and record are already this system is left alone. A failed
    boot loader install leaves no record, so the next run tries again.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.nix
attributes:
  check_mode:
    support: full
    details: Returns the steps it would take in RV(actions).
  diff_mode:
    support: none
options:
  system:
    description: The system's store path (the toplevel, C(/nix/store/...-nixos-system-NAME-VERSION)), in the host's store.
    type: path
    required: true
  root:
    description:
      - The root of the system to install, V(/mnt) from a rescue system (mounted by M(ansinix.nixos.nixos_disks)),
        or V(/) to convert the running host.
    type: path
    default: /mnt
  profile:
    description: The system profile, as seen from inside O(root).
    type: path
    default: /nix/var/nix/profiles/system
  install_bootloader:
    description: Install the boot loader. Without it, only the store, the profile and C(/etc/NIXOS) are set up.
    type: bool
    default: true
notes:
  - Runs as root. The host needs Nix (the roles install it when it is missing).
seealso:
  - module: ansinix.nixos.nixos_disks
  - module: ansinix.nixos.nixos_switch
  - name: nixos-install
    description: What NixOS's own installer does.
    link: https://nixos.org/manual/nixos/stable/#sec-installation-manual-installing
"""

EXAMPLES = r"""
- name: Install the system onto the disks mounted at /mnt (from a rescue system)
  ansinix.nixos.nixos_install:
    system: "{{ built.out_path }}"
    root: /mnt

- name: Convert the running host (Debian or Ubuntu) into NixOS at the next boot
  ansinix.nixos.nixos_install:
    system: "{{ built.out_path }}"
    root: /
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode), in words. Empty when the root already boots the system.
  returned: always
  type: list
  elements: str
system:
  description: The installed system.
  returned: always
  type: str
root:
  description: The root it was installed under.
  returned: always
  type: str
output:
  description: What the activation and the boot loader install printed.
  returned: when the boot loader was installed
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ansinix.nixos.plugins.module_utils.install import Installer
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NIX_ARGUMENT_SPEC, NixError, nix_for


def main():
    module = AnsibleModule(
        argument_spec=dict(
            system=dict(type="path", required=True),
            root=dict(type="path", default="/mnt"),
            profile=dict(type="path", default="/nix/var/nix/profiles/system"),
            install_bootloader=dict(type="bool", default=True),
            **NIX_ARGUMENT_SPEC
        ),
        supports_check_mode=True,
    )
    params = module.params
    nix = nix_for(module)
    try:
        installer = Installer(module, nix, params["system"], params["root"], params["profile"])
        result = installer.install(module.check_mode, params["install_bootloader"])
    except NixError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except OSError as exc:
        module.fail_json(msg="installing %s under %s failed: %s" % (params["system"], params["root"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
