# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The attributes every module of the collection documents the same way; each module adds how it
    # supports check and diff mode.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return the changed status it would have without making changes.
  diff_mode:
    description: Returns details on what has changed, or would change in check mode, with C(--diff).
  platform:
    description: Target operating systems and families this can run on.
    support: full
    platforms: posix
  action_group:
    description: Use C(group/ansinix.nixos.nixos) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - ansinix.nixos.nixos
"""

    # Modules with an action plugin: they run in the task's host loop, never asynchronously.
    ACTION = r"""
attributes:
  action:
    description: Has a corresponding action plugin that runs on the controller.
  async:
    description: Supports being run with C(async).
    support: none
  bypass_host_loop:
    description: Forces a run on a single host, bypassing the host loop.
    support: none
"""
