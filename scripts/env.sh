# shellcheck shell=bash
# Sourced by the scripts: the venv, the collection where Ansible finds it, and Nix without
# a binary cache (none is reachable from the test machines; an empty list avoids waiting on one).
ANSINIX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ANSINIX_ROOT
export PATH="$ANSINIX_ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ANSINIX_ROOT/.build/collections"
export PYTHONPATH="$ANSINIX_ROOT/tests/lib${PYTHONPATH:+:$PYTHONPATH}"
export NIX_CONFIG="substituters =
sandbox = false"
export ANSIBLE_NOCOLOR=1
