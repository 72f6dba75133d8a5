# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options of every module that evaluates Nix expressions.
    DOCUMENTATION = r"""
options:
  nix_path:
    description:
      - Entries of the Nix search path, such as V(nixpkgs=/path/to/nixpkgs) or a plain directory, that
        C(<nixpkgs>)-style lookups in the expression resolve through.
      - The C(NIX_PATH) of the environment the task runs in is B(ignored) unless
        O(use_environment_nix_path=true), so a deploy never depends on what a shell happened to export.
    type: list
    elements: str
    default: []
  use_environment_nix_path:
    description:
      - Also use the C(NIX_PATH) of the environment (after O(nix_path)).
    type: bool
    default: false
  options:
    description:
      - Nix configuration options for this call, each passed as C(--option NAME VALUE), for example
        C(builders), C(substituters), C(max-jobs). Lists are joined with spaces; booleans become
        C(true)/C(false).
    type: dict
    default: {}
"""
