# shellcheck shell=bash
# Sourced by the scripts: the venv, the collection where Ansible finds it, and Nix without
# a binary cache (none is reachable from the test machines; an empty list avoids waiting on one).
ANSINIX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ANSINIX_ROOT
export PATH="$ANSINIX_ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ANSINIX_ROOT/.build/collections"
export PYTHONPATH="$ANSINIX_ROOT/tests/lib${PYTHONPATH:+:$PYTHONPATH}"
# No build users either: test hosts share the machine's uids, and Nix kills every process of a build
# user before a build, so concurrent builds here and on a host would kill each other.
export NIX_CONFIG="substituters =
sandbox = false
build-users-group ="
export ANSIBLE_NOCOLOR=1
export NO_COLOR=1
