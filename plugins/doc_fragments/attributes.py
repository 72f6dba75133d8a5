# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The attributes every module of the collection shares: where it runs and its action group.
    DOCUMENTATION = r"""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
attributes:
  platform:
    platforms: posix
  action_group:
    support: full
    membership:
      - ansinix.nixos.nixos
"""

    # Modules with an action plugin: they run in the task's host loop, never asynchronously.
    ACTION = r"""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes.flow
attributes:
  async:
    support: none
  bypass_host_loop:
    support: none
"""
