# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ssh_host_key: a host's or an API's SSH public key, checked, as the `<type> <base64>` of a known_hosts line."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.ansinix.nixos.plugins.module_utils.host_keys import HostKeyError, public_key_line


def ssh_host_key(text, source="the host"):
    try:
        return public_key_line(text, source)
    except HostKeyError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule:
    def filters(self):
        return {"ssh_host_key": ssh_host_key}
