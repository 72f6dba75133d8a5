#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nix_copy_closure
short_description: Copy Nix store closures to a host, sending only the paths it lacks
version_added: 0.1.0
description:
  - Copies the closure of one or more store paths (everything they need at run time) from the controller's Nix
    store, or from another inventory host's (O(src_host)), into the store of the task's host.
  - First asks the host which paths of the closure it lacks. When it lacks none, nothing is sent and
    RV(ignore:changed) is false.
  - The host needs Nix, but no Python; everything on it runs through C(nix-store).
  - "O(method=stream) speaks Nix's own copy protocol (the one of C(nix-copy-closure)): the source's
    C(nix-store --serve) hands over each missing path as a NAR, and the host's C(nix-store --serve --write) adds it
    to its store as it arrives. The controller only relays the bytes, so its memory does not grow with the closure,
    and neither does the host's."
  - With O(method=stream) and C(become), the host's side runs as root, so a non-root SSH user needs no
    C(trusted-users) entry and the paths no signatures.
  - With the C(ssh) connection plugin (and key authentication), O(method=stream) runs C(ssh) itself, with the
    host's connection settings (address, port, user, key, C(ssh_args), common and extra arguments, host key
    checking, timeout). Where Ansible keeps a master connection to the host (C(ControlPersist) in C(ssh_args)) that
    compresses as the copy should (no C(-C) there, and O(compress=false)), the copy goes over that master and
    saves an SSH handshake; otherwise it opens a connection of its own, without C(-C) unless O(compress=true).
    With any other connection plugin (paramiko, docker, local, ...), or when C(become) needs a
    password, the same requests go through the plugin's own file transfer, in batches of O(batch_size) MiB.
  - O(method=ssh) runs C(nix copy) on the controller to the host's C(ssh://) store, with the same SSH settings.
    As a non-root SSH user with C(become), it runs C(sudo -n nix-store) on the host (C(become_method=sudo) without
    a password only).
  - A copy that is killed half-way leaves the host's store valid (each path is added whole or not at all); the
    next run sends what is still missing.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.attributes.action
attributes:
  check_mode:
    support: full
    details: Reports what is missing and its NAR size; copies nothing.
  diff_mode:
    support: none
  action:
    support: full
    details: Runs on the controller and reaches the host with its own connection settings.
options:
  path:
    description:
      - The store paths whose closures to copy, such as RV(ansinix.nixos.nix_build#module:out_path).
    type: list
    elements: str
    required: true
  method:
    description:
      - V(stream) or V(ssh), see above.
      - V(auto) picks V(ssh) when O(use_substitutes=true) and the connection is C(ssh) with key authentication and
        no O(src_host); otherwise V(stream).
    type: str
    choices: [auto, ssh, stream]
    default: auto
  use_substitutes:
    description:
      - Let the host first download what it can from its own binary caches (its C(substituters)), and send only
        the rest.
    type: bool
    default: false
  compress:
    description:
      - Compress on the wire (SSH compression for live copies, gzip for file transfers). Helps on slow links;
        costs CPU on fast ones.
    type: bool
    default: false
  src_host:
    description:
      - Copy from the Nix store of this inventory host (a builder) instead of the controller's. The controller
        relays between its own connections to both hosts, so they need no SSH trust between them, and the
        controller needs no Nix.
      - Only with O(method=stream) (or V(auto)).
    type: str
  batch_size:
    description:
      - For copies through file transfers, the most MiB of NARs sent and added at once; bounds the temporary disk
        space used on the controller and the hosts. A single larger path is sent on its own.
    type: int
    default: 256
notes:
  - Needs Nix on the host, and on the controller unless O(src_host) is given (C(nix-store) for O(method=stream),
    C(nix) for O(method=ssh)).
  - Without C(become), the SSH user must be allowed to add paths to the host's store (root, or listed in
    C(nix.settings.trusted-users) on NixOS).
seealso:
  - module: ansinix.nixos.nix_build
  - module: ansinix.nixos.nixos_switch
  - name: nix-copy-closure
    description: The Nix tool whose protocol method=stream speaks.
    link: https://nix.dev/manual/nix/stable/command-ref/nix-copy-closure
"""

EXAMPLES = r"""
- name: Send the system built on the controller
  ansinix.nixos.nix_copy_closure:
    path: "{{ web1_system.out_path }}"

- name: As a non-root SSH user, adding the paths as root
  ansinix.nixos.nix_copy_closure:
    path: "{{ web1_system.out_path }}"
  become: true

- name: Copy from the builder host where the system was built
  ansinix.nixos.nix_copy_closure:
    path: "{{ hostvars['builder'].web1_system.out_path }}"
    src_host: builder
  become: true

- name: Let the host fetch from its binary caches what it can
  ansinix.nixos.nix_copy_closure:
    path: "{{ web1_system.out_path }}"
    use_substitutes: true

- name: Report what a deploy would send
  ansinix.nixos.nix_copy_closure:
    path: "{{ web1_system.out_path }}"
  check_mode: true
  register: would_send
"""

RETURN = r"""
missing:
  description: The store paths the host lacked, dependencies first (in check mode, those it lacks).
  returned: always
  type: list
  elements: str
copied:
  description: How many store paths were sent (paths the host fetched from its own caches are not counted).
  returned: always
  type: int
bytes:
  description: The NAR bytes sent, that is the summed NAR size (C(nix path-info -S)) of the paths sent; 0 when
    nothing was missing and in check mode.
  returned: always
  type: int
nar_bytes:
  description: The summed NAR size of the missing paths, sent or not (what would be sent, in check mode).
  returned: always
  type: int
wire_bytes:
  description:
    - What O(method=stream) wrote to the connection for the host, the NARs and the protocol's requests (a few
      hundred bytes a path), after gzip with O(compress=true) through file transfers, before any compression by
      SSH itself.
  returned: when O(method=stream) found paths missing
  type: int
method:
  description: The method used, V(stream) or V(ssh).
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
