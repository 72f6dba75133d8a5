# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


# Each attribute is one string literal: ansible-test's yamllint reads them from the source without running it, and
# Ansible merges fragments' options shallowly, so the inventory's cloud: and robot: sections cannot add to the
# modules' ones. The credentials' text therefore stands in CLOUD/ROBOT and again in INVENTORY: keep them alike.


class ModuleDocFragment:
    # How the shared client (module_utils/hetzner.py, CLIENT_ARGUMENT_SPEC) talks to the Hetzner APIs.
    DOCUMENTATION = r"""
options:
  timeout:
    description:
      - Seconds to wait for one answer of a Hetzner API.
    type: int
    default: 30
  max_retries:
    description:
      - How often one request is sent again after a rate limit (Cloud C(429), Robot C(403 RATE_LIMIT_EXCEEDED)),
        a server error (C(5xx)), a timeout or a broken connection.
      - The waits double from 1 s (from 5 s for a Robot rate limit). A Cloud C(Retry-After) is waited as told; no
        wait goes past the moment the Cloud rate limit resets (C(RateLimit-Reset)) or past the C(interval) a Robot
        rate limit counts over.
      - A request that may change something (a reset, enabling a rescue system) is only sent again when the API
        refused it, never after a timeout.
    type: int
    default: 5
  max_wait:
    description:
      - The most seconds one request may spend waiting between its retries. When the next wait would go past it,
        the request fails at once with a message that says so, instead of sleeping in vain.
    type: int
    default: 120
"""

    # The Hetzner Cloud credentials of a module (module_utils/hetzner.py, CLOUD_ARGUMENT_SPEC).
    CLOUD = r"""
options:
  cloud:
    description:
      - How to reach the Hetzner Cloud API.
    type: dict
    suboptions:
      token:
        description:
          - An API token of the project, from the Hetzner Cloud Console under Security > API tokens.
          - Defaults to the environment variable C(HCLOUD_TOKEN).
        type: str
      endpoint:
        description:
          - The address of the API. Defaults to the environment variable C(HCLOUD_ENDPOINT), else
            V(https://api.hetzner.cloud/v1).
          - Only C(https) is accepted, except to a loopback address (V(http://127.0.0.1:8080/v1)) for tests.
        type: str
"""

    # The Hetzner Robot credentials of a module (module_utils/hetzner.py, ROBOT_ARGUMENT_SPEC).
    ROBOT = r"""
options:
  robot:
    description:
      - How to reach the Hetzner Robot webservice.
    type: dict
    suboptions:
      user:
        description:
          - The webservice user, from Robot under Settings > Webservice and app settings (not the Robot login).
          - Defaults to the environment variable C(HROBOT_API_USER).
        type: str
      password:
        description:
          - The password of the webservice user.
          - Defaults to the environment variable C(HROBOT_API_PASSWORD).
        type: str
      endpoint:
        description:
          - The address of the webservice. Defaults to the environment variable C(HROBOT_API_ENDPOINT), else
            V(https://robot-ws.your-server.de).
          - Only C(https) is accepted, except to a loopback address (V(http://127.0.0.1:8080/robot)) for tests.
        type: str
"""

    # The inventory plugin's cloud: and robot: sections: the same credentials, and what to list.
    INVENTORY = r"""
options:
  cloud:
    description:
      - List the servers of a Hetzner Cloud project. Leave it out to list no Cloud servers; O(cloud={}) lists
        them all with the token from C(HCLOUD_TOKEN). A read-only token is enough.
    type: dict
    suboptions:
      token:
        description:
          - An API token of the project, from the Hetzner Cloud Console under Security > API tokens.
          - Defaults to the environment variable C(HCLOUD_TOKEN).
        type: str
      endpoint:
        description:
          - The address of the API. Defaults to the environment variable C(HCLOUD_ENDPOINT), else
            V(https://api.hetzner.cloud/v1).
          - Only C(https) is accepted, except to a loopback address (V(http://127.0.0.1:8080/v1)) for tests.
        type: str

      label_selector:
        description:
          - Only servers matching this label selector, such as V(nixos) or V(env=prod,nixos). The API applies it.
        type: str
      status:
        description:
          - Only servers in one of these states, such as V([running]). The API applies it.
        type: list
        elements: str
        choices: [initializing, starting, running, stopping, 'off', deleting, migrating, rebuilding, unknown]
      locations:
        description:
          - Only servers in one of these locations, such as V([fsn1, nbg1]).
        type: list
        elements: str
      server_types:
        description:
          - Only servers of one of these types, such as V([cx22, cpx31]).
        type: list
        elements: str
      network:
        description:
          - Only servers attached to this private network (its name or id). Their address in it becomes
            C(hetzner_private_ipv4), and C(ansible_host) with O(connect_with=private_ipv4).
        type: str
  robot:
    description:
      - List the dedicated servers of a Hetzner Robot account. Leave it out to list none; O(robot={}) takes the
        credentials from C(HROBOT_API_USER) and C(HROBOT_API_PASSWORD).
    type: dict
    suboptions:
      user:
        description:
          - The webservice user, from Robot under Settings > Webservice and app settings (not the Robot login).
          - Defaults to the environment variable C(HROBOT_API_USER).
        type: str
      password:
        description:
          - The password of the webservice user.
          - Defaults to the environment variable C(HROBOT_API_PASSWORD).
        type: str
      endpoint:
        description:
          - The address of the webservice. Defaults to the environment variable C(HROBOT_API_ENDPOINT), else
            V(https://robot-ws.your-server.de).
          - Only C(https) is accepted, except to a loopback address (V(http://127.0.0.1:8080/robot)) for tests.
        type: str

      rescue_status:
        description:
          - Ask for each dedicated server whether its rescue system is enabled, and set C(hetzner_rescue). That is
            one more request per server, and Robot allows only so many an hour; use it with O(cache).
        type: bool
        default: false
"""
