#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nix_copy_closure
short_description: Copy Nix store closures from the controller to a host, sending only what is missing
version_added: 0.1.0
description:
  - Copies the closure of one or more store paths (everything they need at run time) from the controller's Nix
    store into the store of the task's host.
  - First asks the host which paths of the closure it lacks. When it lacks none, nothing is sent and
    RV(ignore:changed) is false.
  - V(stream) sends the missing paths as NAR archives through Ansible's own connection, so any connection
    plugin works (ssh, paramiko). With C(become), they are imported as root, so a non-root SSH user needs no
    C(trusted-users) set-up and no signatures. The archives go through a temporary file on each side, in
    batches of O(batch_size) MiB, so the controller's memory does not grow with the closure.
  - V(ssh) runs C(nix-copy-closure) on the controller with the host's Ansible SSH settings (address, port,
    user, key, common and extra arguments, host key checking). Only this method can let the host fetch paths
    from its own binary caches (O(use_substitutes)).
  - A copy that is killed half-way leaves the host's store valid (each path is imported whole or not at
    all); the next run sends what is still missing.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.attributes.action
attributes:
  check_mode:
    support: full
    details: Reports what is missing; copies nothing.
  diff_mode:
    support: none
  action:
    support: full
    details: Runs on the controller and uses the task's connection.
options:
  path:
    description:
      - The store paths whose closures to copy, such as RV(ansinix.nixos.nix_build#module:out_path).
    type: list
    elements: str
    required: true
  method:
    description:
      - V(stream) or V(ssh), see above. V(auto) picks V(stream), or V(ssh) when O(use_substitutes=true).
    type: str
    choices: [auto, ssh, stream]
    default: auto
  use_substitutes:
    description:
      - Let the host download paths from its configured binary caches instead (C(nix-copy-closure --use-substitutes)).
        Needs O(method=ssh) or V(auto).
    type: bool
    default: false
  compress:
    description:
      - Compress the archives on the wire (gzip). Helps on slow links; costs CPU on fast ones.
    type: bool
    default: false
  src_host:
    description:
      - Copy from the Nix store of this inventory host (a builder) instead of the controller's. The controller
        relays the archives through its own connections to both hosts, so they need no SSH trust between them,
        and the controller needs no Nix.
      - Only with O(method=stream) (or V(auto)).
    type: str
  batch_size:
    description:
      - The most MiB of archives sent and imported at once by V(stream). Bounds the temporary disk space used
        on either side.
    type: int
    default: 256
notes:
  - Needs Nix on the controller and on the host.
  - With O(method=ssh) the SSH options are passed in C(NIX_SSHOPTS), which Nix splits at spaces; an argument
    containing a space cannot be passed that way.
seealso:
  - module: ansinix.nixos.nix_build
  - module: ansinix.nixos.nixos_switch
"""

EXAMPLES = r"""
- name: Send the system built on the controller
  ansinix.nixos.nix_copy_closure:
    path: "{{ web1_system.out_path }}"

- name: As a non-root SSH user, importing as root
  ansinix.nixos.nix_copy_closure:
    path: "{{ web1_system.out_path }}"
  become: true

- name: Copy from the builder host where the system was built
  ansinix.nixos.nix_copy_closure:
    path: "{{ hostvars['builder'].web1_system.out_path }}"
    src_host: builder
  become: true

- name: Let the host fetch from cache.nixos.org what it can
  ansinix.nixos.nix_copy_closure:
    path: "{{ web1_system.out_path }}"
    method: ssh
    use_substitutes: true
"""

RETURN = r"""
missing:
  description: The store paths the host lacked (in check mode, those it lacks).
  returned: always
  type: list
  elements: str
copied:
  description: How many store paths were sent.
  returned: always
  type: int
bytes:
  description: Bytes of archives sent over the connection (compressed size with O(compress)).
  returned: always
  type: int
nar_bytes:
  description: The NAR size of the missing paths.
  returned: when paths were missing
  type: int
method:
  description: The method used.
  returned: always
  type: str
closure_size:
  description: How many store paths the closure has in all.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import ARGUMENT_SPEC


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="ansinix.nixos.nix_copy_closure runs on the controller through its action plugin; "
                         "use it as a task or ad hoc (-m ansinix.nixos.nix_copy_closure), not as a raw module")


if __name__ == "__main__":
    main()
