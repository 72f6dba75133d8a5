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
    runs on, and keeps the result alive with a garbage collector root (O(out_link)) until it is deployed.
  - Runs wherever the task runs, so the build happens where there is room and CPU. That can be the
    controller (with C(delegate_to=localhost)), the target itself (a laptop with no Nix at all then
    only sends the source), or any builder host in the inventory.
  - Evaluation is pure and repeatable. O(args) reach the expression as data (JSON), never through
    C(--impure) or environment variables, and the caller's C(NIX_PATH) is ignored unless asked for.
  - Failures come back as one line. An evaluation error keeps Nix's own message with its file and line
    (the whole error block is in C(nix_error)); a failed build names the derivation that failed and its last log
    line (the log's tail is in C(log_tail)); no Nix on the host says how to install it.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.nix
attributes:
  check_mode:
    support: full
    details:
      - Evaluates only, in read-only mode (not even a C(.drv) is written), and returns the would-be RV(out_path),
        whether it is already in the store (RV(already_valid)) and the O(out_link). Builds nothing.
  diff_mode:
    support: none
  async:
    description: Supports being run with C(async).
    support: full
options:
  flake:
    description:
      - A flake reference, optionally with C(#ATTRIBUTE), for example V(/srv/fleet#nixosConfigurations.web1.config.system.build.toplevel),
        V(/srv/fleet) (with O(nixos_configuration) or O(attr)) or V(github:me/fleet).
      - A local directory (absolute, or starting with C(./) or C(~)) is read as C(path:DIR), so it needs neither git
        nor a commit, and every file in it counts, tracked or not. Write C(git+file:DIR) to get git's view instead.
      - Nix copies that directory into the store, which every user can read. The task warns when it holds Ansible's
        files (vault-encrypted files, an inventory, C(group_vars/) or C(host_vars/)); keep the Nix files in a
        directory of their own.
      - The flake's lock file is never written. To pin the inputs of a flake that has none, or to update them, see
        O(lock).
      - Mutually exclusive with O(file).
    type: str
  file:
    description:
      - A Nix file (or a directory with C(default.nix)) on the host the task runs on.
      - When its value is a function it is called like C(nix-build) does, with the defaults of its arguments; with
        O(args) it is called with C({ args = DATA; }), so declare it as C({ args ? { }, ... }:).
      - Mutually exclusive with O(flake).
    type: path
  attr:
    description:
      - The attribute to build, as C(nix-build -A) takes it, for example V(nixosConfigurations.web1.config.system.build.toplevel)
        or V(packages.x86_64-linux.hello). Quote a name holding dots, as in V(hosts."web1.example.org").
      - With a flake, the same as C(FLAKE#ATTRIBUTE) (give one of them).
      - Without O(attr) and O(nixos_configuration), a O(file) must evaluate to a derivation itself.
    type: str
  nixos_configuration:
    description:
      - The name of a NixOS configuration. Builds C(nixosConfigurations.NAME.config.system.build.toplevel), of the
        flake's outputs or of the value of O(file) alike, so one layout serves both (see the examples for a classic
        file of that shape).
      - Mutually exclusive with O(attr) and O(nixos_configurations).
    type: str
  nixos_configurations:
    description:
      - Several NixOS configurations to build at once, by name. One Nix evaluation evaluates them all, so what they
        share (nixpkgs, common modules) is evaluated once, and one build lets Nix build their systems in parallel
        (as many at a time as the C(max-jobs) of O(options)). Each gets the same O(args) and its default root (see
        O(out_link)).
      - The results are in RV(out_paths). A configuration that fails to evaluate or build is in RV(errors), with its
        own message; the others are built all the same, and the task fails naming the ones that failed.
      - Only after the evaluation of all has failed does the module evaluate them one by one, to tell which one broke it.
      - Mutually exclusive with O(attr), O(nixos_configuration) and O(out_link).
    type: list
    elements: str
  eval_chunk:
    description:
      - With O(nixos_configurations), how many configurations one Nix evaluation takes at most. V(0) evaluates them all in
        one process. Each NixOS configuration evaluated together adds to the memory of that one process (a few hundred
        MiB for a typical server on nixpkgs); set a chunk size when the host running the task has too little for the
        whole fleet.
    type: int
    default: 0
  args:
    description:
      - Data for the expression (inventory variables, lists of hosts...), passed purely as parsed JSON. There is no
        size limit. Keep secrets out (see M(ansinix.nixos.nixos_keys)), because what an expression uses ends up in the
        world-readable Nix store.
      - With O(file), the file's function is called with C({ args = DATA; }).
      - With O(flake), the output named up to the C(config) part of the attribute (for O(nixos_configuration) V(web1),
        C(nixosConfigurations.web1)) receives the data. A NixOS configuration (it has C(extendModules), as the result of
        C(nixpkgs.lib.nixosSystem) has) gets it as the module argument C(ansinixArgs), so every module can take
        C({ ansinixArgs, ... }:). An output that is a function is called with the data. Anything else with
        O(args) is an error.
      - For a flake the data goes through a temporary directory fetched with C(builtins.fetchTree), locked by its
        NAR hash, which pure evaluation accepts on every Nix with flakes; see the examples for both sides.
    type: dict
    default: {}
  override_inputs:
    description:
      - Flake inputs to replace for this build, input name to flake reference, as C(--override-input) does. For
        example input C(nixpkgs) to V(/srv/nixpkgs) to build against a local checkout. Only with O(flake).
    type: dict
    default: {}
  lock:
    description:
      - Resolve the flake's inputs instead of building, and return the C(flake.lock) Nix would write as RV(lock).
        Nothing is written, on this host or elsewhere; the caller writes the lock where it belongs (the deploy role
        with C(nixos_build_on=target) locks once on the first host and writes it beside the controller's C(flake.nix)).
      - V(missing) locks the inputs C(flake.lock) lacks (all of them when there is none) and keeps every other one,
        as C(nix flake lock) does. An input whose URL changed in C(flake.nix) is locked anew; one that was removed
        leaves the lock.
      - V(update) locks every input at its newest version, as C(nix flake update) does.
      - O(flake) must be a directory on this host. Mutually exclusive with O(file), O(attr), O(nixos_configuration),
        O(nixos_configurations), O(args), O(override_inputs) and O(out_link).
    type: str
    choices: [missing, update]
  out_link:
    description:
      - Path of the garbage collector root that keeps the result alive, a symlink to RV(out_path) registered
        with Nix (C(nix-store --add-root)). It survives reboots and C(nix-collect-garbage) until it is replaced.
      - Defaults to C(/nix/var/nix/gcroots/ansinix/SOURCE/NAME) where this user may write there (root, single-user
        installs), else to C(~/.local/state/ansinix/gcroots/SOURCE/NAME) (C($XDG_STATE_HOME) when set). SOURCE
        names the flake or the file's directory (its last two path components and a hash of the whole), so two
        projects with a configuration of the same name keep two roots. NAME is O(nixos_configuration) (or the NAME
        of an O(attr) of that form), else the attribute, else V(result). So rebuilding a configuration replaces its
        root, and the result it built before can be collected.
    type: path
notes:
  - Requires Nix on the host the task runs on. Flakes need Nix 2.4 or newer; the experimental features
    C(nix-command) and C(flakes) are enabled for the call only.
  - With O(use_environment_nix_path=false) (the default) the search path is exactly O(nix_path). Nix 2.19 and newer
    still look in the user's channels (C(~/.nix-defexpr/channels)) for names that are not in it; give every name
    the expression uses in O(nix_path) to be sure where it comes from.
  - The build runs for as long as it takes; use C(async) for builds longer than the SSH connection may stay idle.
seealso:
  - module: ansinix.nixos.nix_copy_closure
  - module: ansinix.nixos.nixos_switch
  - name: Nix manual, nix-build
    description: How C(-A), C(--arg) and garbage collector roots work.
    link: https://nix.dev/manual/nix/stable/command-ref/nix-build
"""

EXAMPLES = r"""
- name: Build web1's system on the controller, from a flake
  ansinix.nixos.nix_build:
    flake: "{{ playbook_dir }}/fleet"
    nixos_configuration: web1
  delegate_to: localhost
  register: web1_system

- name: Inventory data for the configuration, as the module argument ansinixArgs
  ansinix.nixos.nix_build:
    flake: "{{ playbook_dir }}/fleet"
    nixos_configuration: "{{ inventory_hostname }}"
    args:
      address: "{{ ansible_host }}"
      peers: "{{ groups['web'] | map('extract', hostvars, 'ansible_host') | list }}"
  delegate_to: localhost
# The flake's side: nothing to declare, any module of the configuration takes the data.
#   # flake.nix
#   outputs = { self, nixpkgs }: {
#     nixosConfigurations.web1 = nixpkgs.lib.nixosSystem {
#       system = "x86_64-linux";
#       modules = [
#         ./web.nix
#         # A default, so that `nixos-rebuild build --flake .#web1` works without ansible too.
#         { _module.args.ansinixArgs = nixpkgs.lib.mkDefault { address = "127.0.0.1"; peers = [ ]; }; }
#       ];
#     };
#   };
#   # web.nix
#   { ansinixArgs, lib, ... }: {
#     services.nginx.upstreams.peers.servers = lib.genAttrs (map (p: "${p}:80") ansinixArgs.peers) (_: { });
#   }

- name: A flake output that is a function of the data (for data needed in imports or specialArgs)
  ansinix.nixos.nix_build:
    flake: /srv/fleet
    attr: systemFor.config.system.build.toplevel
    args:
      monitoring: true
  delegate_to: localhost
# The flake's side:
#   outputs = { self, nixpkgs }: {
#     systemFor = args: nixpkgs.lib.nixosSystem {
#       system = "x86_64-linux";
#       specialArgs.ansinixArgs = args;
#       modules = [ ./common.nix ] ++ nixpkgs.lib.optional args.monitoring ./monitoring.nix;
#     };
#   };

- name: Build a classic configuration on the target, pinned nixpkgs, inventory data as args
  ansinix.nixos.nix_build:
    file: /etc/ansinix/fleet/default.nix
    nixos_configuration: "{{ inventory_hostname }}"
    nix_path:
      - nixpkgs=/etc/ansinix/nixpkgs
    args:
      monitoring_targets: "{{ groups['web'] | map('extract', hostvars, 'ansible_host') | list }}"
# The file's side:
#   # /etc/ansinix/fleet/default.nix
#   { args ? { } }:
#   {
#     nixosConfigurations.mon = import <nixpkgs/nixos/lib/eval-config.nix> {
#       system = "x86_64-linux";
#       specialArgs.ansinixArgs = args;
#       modules = [ ./mon.nix ];
#     };
#   }

- name: Build a whole fleet in one evaluation, each system in parallel
  ansinix.nixos.nix_build:
    flake: "{{ playbook_dir }}/fleet"
    nixos_configurations: [web1, web2, mon]
    options:
      max-jobs: auto
  delegate_to: localhost
  run_once: true
  register: fleet
  # The hosts of the configurations that built go on: each fails on its own configuration's error below.
  failed_when: false

- name: Fail the hosts whose configuration did not build, with its error
  ansible.builtin.fail:
    msg: "{{ fleet.errors[inventory_hostname] | default(fleet.msg) }}"
  when: inventory_hostname not in fleet.out_paths | default({})

- name: Only tell what would be built
  ansinix.nixos.nix_build:
    flake: "{{ playbook_dir }}/fleet"
    nixos_configuration: web1
  delegate_to: localhost
  check_mode: true

- name: Pin the inputs of a flake on the host that has Nix, and bring the lock to the controller
  ansinix.nixos.nix_build:
    flake: /srv/fleet
    lock: missing
  register: locked

- name: Write flake.lock beside flake.nix on the controller, after checking what the host sent
  ansible.builtin.copy:
    content: "{{ locked.lock | ansinix.nixos.flake_lock }}"
    dest: "{{ playbook_dir }}/fleet/flake.lock"
    mode: "0644"
  delegate_to: localhost

- name: Use a remote builder for this call, and keep the root where the deploy expects it
  ansinix.nixos.nix_build:
    flake: "{{ playbook_dir }}/fleet#nixosConfigurations.mon.config.system.build.toplevel"
    out_link: /var/lib/deploy/roots/mon
    options:
      builders: ssh://builder x86_64-linux
      max-jobs: 0
  delegate_to: localhost
"""

RETURN = r"""
out_path:
  description: The store path of the result (in check mode, the one a build would produce).
  returned: success, with one configuration or attribute
  type: str
  sample: /nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-26.11
drv_path:
  description: The derivation of RV(out_path). In check mode it is computed but not written to the store.
  returned: success, with one configuration or attribute
  type: str
  sample: /nix/store/phmg8z18dgk38a8alfgmmp1b7q5vj8ry-nixos-system-web1-26.11.drv
already_valid:
  description:
    - Whether RV(out_path) was in this host's store before the task, so that nothing had to be built.
    - With O(nixos_configurations), a dict of that for each configuration in RV(out_paths).
    - RV(ignore:changed) is false when it was and O(out_link) already pointed to it.
  returned: success, with one configuration or attribute
  type: raw
  sample: false
out_link:
  description: The garbage collector root that keeps RV(out_path) alive (in check mode, the one it would be).
  returned: success, with one configuration or attribute
  type: str
  sample: /nix/var/nix/gcroots/ansinix/fleet-nix-3f2a9c1e/web1
out_paths:
  description: With O(nixos_configurations), the out path of each configuration that built (or would build, in check mode).
  returned: success and failure, with O(nixos_configurations)
  type: dict
  sample: {"mon": "/nix/store/jd2q4x0v1w3ccyy9a9x3gkz4y8bl6m7y-nixos-system-mon-26.11"}
drv_paths:
  description: With O(nixos_configurations), the derivation of each configuration in RV(out_paths).
  returned: success and failure, with O(nixos_configurations)
  type: dict
out_links:
  description: With O(nixos_configurations), the garbage collector root of each configuration in RV(out_paths).
  returned: success and failure, with O(nixos_configurations)
  type: dict
  sample: {"mon": "/nix/var/nix/gcroots/ansinix/fleet-nix-3f2a9c1e/mon"}
errors:
  description: With O(nixos_configurations), the one-line error of each configuration that failed to evaluate or build.
  returned: success and failure, with O(nixos_configurations)
  type: dict
  sample:
    web1: "evaluating /srv/fleet/default.nix -A nixosConfigurations.web1.config.system.build.toplevel failed: undefined variable 'pkgs' at
      /srv/fleet/web1.nix:3:5"
lock:
  description:
    - With O(lock), the text of the C(flake.lock) that pins the flake's inputs. When the flake's own C(flake.lock)
      holds the same lock, its text as it is.
  returned: success, with O(lock)
  type: str
lock_changed:
  description: With O(lock), whether RV(lock) differs from the flake's C(flake.lock) (true when it has none).
  returned: success, with O(lock)
  type: bool
  sample: true
nix_version:
  description: The version of Nix that evaluated and built.
  returned: success
  type: str
  sample: 2.8.0
nix_error:
  description: Nix's error block, line by line, without the stack trace (evaluation and build failures).
  returned: failure
  type: list
  elements: str
log_tail:
  description: The last lines of the log of the derivation whose build failed.
  returned: failure
  type: list
  elements: str
  sample: ["gcc: error: missing.c: No such file or directory"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ansinix.nixos.plugins.module_utils.build import SPEC
from ansible_collections.ansinix.nixos.plugins.module_utils.build_fleet import run


def main():
    module = AnsibleModule(supports_check_mode=True, **SPEC)
    result = run(module)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
