#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hetzner_rescue
short_description: Boot a Hetzner Cloud or Robot server into the rescue system
version_added: 0.1.0
description:
  - Enables the rescue system of a Hetzner Cloud server or of a Hetzner Robot dedicated server for its next boot
    (or disables it), and resets the server so that it boots into it. That is the first step of installing NixOS on a
    fresh server from the rescue system.
  - Returns the root password of the rescue system as RV(root_password), for later tasks. The result of a task
    that returns a password is hidden from Ansible's output (as with C(no_log)), while the registered variable
    holds all of it.
  - Runs on the controller (its action plugin does all of it, no module runs on a host), and only talks to the
    Hetzner APIs. In a play on the servers themselves, C(delegate_to) is not needed, and changes nothing.
  - 'Idempotent where the APIs allow it. Robot: an active rescue system with the same O(rescue_type) and
    O(ssh_keys) is kept (and its password returned), another one is replaced. Cloud: enabling always makes a new
    password, so O(rescue=true) always reports a change. O(rescue=false) changes nothing when the rescue system
    is not enabled. A reset always is a change.'
  - 'The rescue system is one-shot: the boot into it disables it again, so the next run of the same task
    enables it again.'
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.attributes.action
  - ansinix.nixos.hetzner
  - ansinix.nixos.hetzner.cloud
  - ansinix.nixos.hetzner.robot
attributes:
  check_mode:
    support: full
    details: Finds the server and the keys and reports what would be done (RV(would_enable), RV(would_disable),
      RV(would_reset)); sends no request that changes anything.
  diff_mode:
    support: none
  action:
    support: full
    details: The action plugin does all of the work, on the controller, and hides the result from Ansible's output
      when it holds a password.
  action_group:
    description: Use C(group/ansinix.nixos.hetzner) in C(module_defaults) to set defaults for this module.
    membership:
      - ansinix.nixos.hetzner
options:
  api:
    description:
      - Which API the server belongs to. V(cloud) for a Hetzner Cloud server, V(robot) for a dedicated server
        (Robot). With the C(ansinix.nixos.hetzner) inventory, C(hetzner_kind) holds it.
    type: str
    required: true
    choices: [cloud, robot]
  server:
    description:
      - The server. Cloud, its id or its name; Robot, its server number or its name (a name several servers
        share is refused). With the C(ansinix.nixos.hetzner) inventory, C(hetzner_id) holds the id or number.
    type: str
    required: true
  rescue:
    description:
      - V(true) enables the rescue system for the next boot, V(false) disables it.
    type: bool
    default: true
  ssh_keys:
    description:
      - SSH keys that may log in to the rescue system as root, as they are stored at Hetzner.
      - Cloud, a key's name, id or fingerprint (Security > SSH keys of the project). Robot, a key's fingerprint or
        name (Key management).
      - A key that is not found fails the task before anything changes.
    type: list
    elements: str
    default: []
  rescue_type:
    description:
      - The rescue system. Defaults to V(linux64) for Cloud and V(linux) for Robot.
    type: str
    aliases: [os]
  reset:
    description:
      - Reset the server after enabling (or disabling) the rescue system, so that it boots into it (or out of it).
      - V(hardware) is a hard reset (Cloud C(reset), Robot type C(hw)). V(software) asks the operating system to
        reboot (Cloud C(reboot), Robot C(sw), which sends Ctrl+Alt+Del). V(power) is Cloud C(poweroff) then
        C(poweron), and Robot type C(power) (pressing the power button, which switches a server that is off on, and
        asks one that runs to shut down, so use V(hardware) to get a running Robot server into the rescue system).
      - A Cloud server that is off is switched on (C(poweron)), whatever the reset asked for.
    type: str
    choices: [none, hardware, software, power]
    default: none
  wait:
    description:
      - Wait for the Cloud actions (enabling, disabling, resets) to finish, polling them. Robot resets have no
        action to wait for; use M(ansible.builtin.wait_for_connection) after the task.
      - Without waiting, the task still waits for the rescue system to be set before it resets the server, and for
        a C(poweroff) before the C(poweron).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for each Cloud action. When one runs longer, the task fails; the action goes on.
    type: int
    default: 300
notes:
  - The rescue root password, and the credentials, never appear in messages. With O(ssh_keys), log in with a key;
    the password works too.
  - Neither the root password nor the credentials appear in output, not even with C(ANSIBLE_DEBUG=1), which prints
    every module's options and raw output. No module runs, so they never pass through one.
  - The environment variables (E(HCLOUD_TOKEN), E(HROBOT_API_USER), ...) are read from the controller's
    environment; the task keyword C(environment) does not set them.
seealso:
  - name: Hetzner Cloud API, server actions
    description: enable_rescue, disable_rescue, reset, reboot, poweroff and poweron.
    link: https://docs.hetzner.cloud/reference/cloud#server-actions
  - name: Hetzner Robot webservice, boot configuration and reset
    description: The rescue system (C(/boot/{server-number}/rescue)) and resets (C(/reset/{server-number})).
    link: https://robot.hetzner.com/doc/webservice/en.html#boot-configuration
"""

EXAMPLES = r"""
# A dedicated server (Robot): boot into the rescue system with our key, then work in it.
- name: Rescue system for dedi1
  hosts: dedi1
  gather_facts: false
  tasks:
    - name: Enable the rescue system and reset the server
      ansinix.nixos.hetzner_rescue:
        api: robot
        server: "{{ hetzner_id }}"
        ssh_keys: ["ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"]
        reset: hardware
        robot:
          user: "{{ vault_hrobot_user }}"
          password: "{{ vault_hrobot_password }}"
      register: rescue

    - name: Wait for the rescue system to answer
      ansible.builtin.wait_for_connection:
        delay: 20
        timeout: 600
      vars:
        ansible_user: root
        # The rescue system has SSH host keys of its own, new at every boot.
        ansible_ssh_extra_args: -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no

    - name: The password, for tools that want one (never printed by the task above)
      ansible.builtin.set_fact:
        rescue_root_password: "{{ rescue.root_password }}"
      no_log: true

# A Cloud server by name, with the keys named as in the project; HCLOUD_TOKEN holds the token.
- name: Cloud server into rescue
  ansinix.nixos.hetzner_rescue:
    api: cloud
    server: web1
    ssh_keys: [admin, deploy]
    reset: hardware

# Leave the rescue system: disable it and reboot into the installed system.
- name: Boot the installed system again
  ansinix.nixos.hetzner_rescue:
    api: cloud
    server: web1
    rescue: false
    reset: software

# Settings for every Hetzner module of the collection at once.
- name: Robot credentials once
  module_defaults:
    group/ansinix.nixos.hetzner:
      robot:
        user: "{{ vault_hrobot_user }}"
        password: "{{ vault_hrobot_password }}"
  block:
    - name: Rescue system without a reset
      ansinix.nixos.hetzner_rescue:
        api: robot
        server: 321
"""

RETURN = r"""
root_password:
  description:
    - The root password of the rescue system. Cloud, when it was enabled; Robot, when it is active (enabled now or
      already). V(null) otherwise, and in check mode for Cloud.
    - The task's output is hidden when this is set; use the registered variable.
  returned: always
  type: str
  sample: null
host_keys:
  description:
    - The rescue system's public SSH host keys, when the API tells them (Robot's C(host_key), for a rescue system
      enabled now or already active), each checked as one line C(<type> <base64>). The Cloud API tells none.
    - Pin them (a known_hosts file of their own, C(StrictHostKeyChecking=yes)) instead of accepting the first key
      the rescue system shows; the role C(ansinix.nixos.rescue_install) does.
  returned: always
  type: list
  elements: str
  sample: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrPiyhepeYiBhaQi8w+vJ98R8lpiG63dnDifhQtaCOn"]
rescue_active:
  description: Whether the rescue system is enabled for the server's next boot, as the task leaves it (before a reset
    boots into it and so disables it).
  returned: always
  type: bool
  sample: true
server:
  description: The server.
  returned: always
  type: dict
  contains:
    id:
      description: The Cloud server's id, or the Robot server number.
      type: int
      sample: 321
    name:
      description: The server's name.
      type: str
      sample: dedi1
    ipv4:
      description: The public IPv4 address, or V(null).
      type: str
      sample: 198.51.100.72
    ipv6_network:
      description: The public IPv6 network.
      type: str
      sample: 2001:db8:ff41::/64
    status:
      description: The server's status as the API told it, before the task.
      type: str
      sample: running
api:
  description: The API the server belongs to, V(cloud) or V(robot).
  returned: always
  type: str
  sample: robot
reset:
  description: The reset that was done (V(hardware), V(software), V(power)), or V(null).
  returned: always
  type: str
  sample: hardware
actions:
  description:
    - What was done, in order. Cloud, the actions with their id and final status (V(running) when not waited for).
      Robot, the requests, with no id.
  returned: always
  type: list
  elements: dict
  sample: [{"id": 13, "command": "enable_rescue", "status": "success"}, {"id": 14, "command": "reset_server", "status": "success"}]
would_enable:
  description: In check mode, whether the rescue system would be enabled.
  returned: in check mode
  type: bool
would_disable:
  description: In check mode, whether the rescue system would be disabled.
  returned: in check mode
  type: bool
would_reset:
  description: In check mode, the reset that would be done, or V(null).
  returned: in check mode
  type: str
"""
