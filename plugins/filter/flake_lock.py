# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""flake_lock: a flake.lock a host computed, checked on the controller before it becomes the user's file."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.ansinix.nixos.plugins.module_utils.flake_lock import check_lock
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError


def flake_lock(text, source="the host"):
    try:
        return check_lock(text, "the lock %s sent" % source)
    except NixError as exc:
        raise AnsibleFilterError(exc.msg)


class FilterModule:
    def filters(self):
        return {"flake_lock": flake_lock}
