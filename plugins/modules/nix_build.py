#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nix_build
short_description: Build a Nix expression, such as a NixOS system, where the task runs
version_added: 0.1.0
description:
  - Evaluates and builds a flake output or an attribute of a Nix file with the Nix of the host the task
    runs on, and keeps the result alive with a garbage collector root until it is deployed.
  - Runs wherever the task runs, so the build happens where there is room and CPU. That can be the
    controller (with C(delegate_to=localhost)), the target itself (a laptop with no Nix at all then
    only sends the source), or any builder host in the inventory.
  - Evaluation is pure and repeatable. O(args) reach the expression as data (JSON), not through
    C(--impure) or environment variables, and the caller's C(NIX_PATH) is ignored unless asked for.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.nix
attributes:
  check_mode:
    support: full
    details: Evaluates only and returns the O(out_link) and the would-be RV(out_path); builds nothing.
  diff_mode:
    support: none
options:
  flake:
    description:
      - A flake reference, optionally with C(#attribute), for example V(.#nixosConfigurations.web1.config.system.build.toplevel),
        V(/srv/fleet) or V(github:me/fleet).
      - A local directory is read as C(path:DIR), so it needs neither git nor a commit.
      - Mutually exclusive with O(file).
    type: str
  file:
    description:
      - A Nix file (or a directory with C(default.nix)) on the host the task runs on. Its value may be a
        function; it is called with C(args) (see O(args)).
      - Mutually exclusive with O(flake).
    type: path
  attr:
    description:
      - The attribute to build, for example V(nixosConfigurations.web1.config.system.build.toplevel).
      - With a flake, the same as C(FLAKE#ATTR).
    type: str
  nixos_configuration:
    description:
      - The name of a NixOS configuration; builds C(nixosConfigurations.NAME.config.system.build.toplevel)
        of the flake, or of the value of O(file), so one layout serves both.
      - Mutually exclusive with O(attr).
    type: str
  args:
    description:
      - Data for the expression, passed purely as parsed JSON.
      - With O(file), the file's function is called with the argument C(args) (declare it,
        C({ args ? {}, ... }:)).
      - With O(flake), an output that is a function is applied to the data; a NixOS configuration
        (O(nixos_configuration)) receives it as the module argument C(ansinixArgs) through C(extendModules),
        so modules read it as C({ ansinixArgs, ... }:).
    type: dict
    default: {}
  override_inputs:
    description:
      - Flake inputs to replace for this build, input name to flake reference, as C(--override-input) does. For
        example V({nixpkgs: /srv/nixpkgs}) to build against a local checkout. Only with O(flake).
      - The flake's lock file is never written by this module.
    type: dict
    default: {}
  out_link:
    description:
      - Path of the garbage collector root that keeps the result alive (a symlink to RV(out_path)).
      - Defaults to C(/nix/var/nix/gcroots/ansinix/NAME), where NAME is O(nixos_configuration) or the last
        part of the attribute, so rebuilding a configuration replaces its root and old results can be
        collected.
    type: path
notes:
  - Requires Nix on the host the task runs on. Flakes need Nix 2.4 or newer; experimental features are
    enabled for the call only.
seealso:
  - module: ansinix.nixos.nix_copy_closure
  - module: ansinix.nixos.nixos_switch
"""

EXAMPLES = r"""
- name: Build web1's system on the controller, from a flake
  ansinix.nixos.nix_build:
    flake: "{{ playbook_dir }}/fleet"
    nixos_configuration: web1
  delegate_to: localhost
  register: web1_system

- name: Build a classic configuration on the target, pinned nixpkgs, inventory data as args
  ansinix.nixos.nix_build:
    file: /etc/ansinix/fleet/default.nix
    nixos_configuration: "{{ inventory_hostname }}"
    nix_path:
      - nixpkgs=/etc/ansinix/nixpkgs
    args:
      monitoring_targets: "{{ groups['web'] | map('extract', hostvars, 'ansible_host') | list }}"

- name: Use a remote builder for this call
  ansinix.nixos.nix_build:
    flake: ".#nixosConfigurations.mon.config.system.build.toplevel"
    options:
      builders: ssh://builder x86_64-linux
      max-jobs: 0
  delegate_to: localhost
"""

RETURN = r"""
out_path:
  description: The store path of the result (in check mode, the one a build would produce).
  returned: success
  type: str
  sample: /nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-24.05
drv_path:
  description: The derivation that was built.
  returned: success
  type: str
  sample: /nix/store/phmg8z18dgk38a8alfgmmp1b7q5vj8ry-nixos-system-web1-24.05.drv
out_link:
  description: The garbage collector root that keeps RV(out_path) alive.
  returned: success
  type: str
  sample: /nix/var/nix/gcroots/ansinix/web1
nix_version:
  description: The version of Nix that evaluated and built.
  returned: success
  type: str
  sample: 2.8.0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ansinix.nixos.plugins.module_utils.build import Builder
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import Nix, NixError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            flake=dict(type="str"),
            file=dict(type="path"),
            attr=dict(type="str"),
            nixos_configuration=dict(type="str"),
            args=dict(type="dict", default={}),
            out_link=dict(type="path"),
            override_inputs=dict(type="dict", default={}),
            nix_path=dict(type="list", elements="str", default=[]),
            use_environment_nix_path=dict(type="bool", default=False),
            options=dict(type="dict", default={}),
        ),
        mutually_exclusive=[("flake", "file"), ("attr", "nixos_configuration")],
        required_one_of=[("flake", "file")],
        supports_check_mode=True,
    )
    nix = Nix(module, nix_path=module.params["nix_path"], options=module.params["options"],
              use_environment_nix_path=module.params["use_environment_nix_path"])
    builder = Builder(nix, module.params)
    try:
        result = builder.build(module.check_mode)
    except NixError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    finally:
        builder.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
