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

# The tested ansible-core versions (scripts/venv.sh, scripts/sanity.sh, scripts/test.sh): the default is
# the one tests/requirements.txt pins, in .venv on Debian's python3; every other one has
# tests/requirements-CORE.txt and .venv-CORE on the Python its "# python: 3.x" line names.
ansinix_default_core() {
  grep -oP '^ansible-core==\K[0-9]+\.[0-9]+' "$ANSINIX_ROOT/tests/requirements.txt"
}
ansinix_requirements() {
  if [ "$1" = "$(ansinix_default_core)" ]; then echo tests/requirements.txt; else echo "tests/requirements-$1.txt"; fi
}
ansinix_venv() {
  if [ "$1" = "$(ansinix_default_core)" ]; then echo .venv; else echo ".venv-$1"; fi
}
# The interpreter: a pyenv build (~/.pyenv/versions/3.13.*), never a shim, so a missing one is an error.
ansinix_python() {
  local reqs want py
  reqs=$ANSINIX_ROOT/$(ansinix_requirements "$1")
  [ -f "$reqs" ] || { echo "ansible-core $1 is not tested here: there is no ${reqs#"$ANSINIX_ROOT"/}" >&2; return 1; }
  want=$(sed -n 's/^# python: //p' "$reqs")
  if [ -z "$want" ]; then echo /usr/bin/python3; return; fi
  py=$(printf '%s\n' "$HOME"/.pyenv/versions/"$want".*/bin/python3 | sort -V | tail -1)
  [ -x "$py" ] || { echo "ansible-core $1 runs on Python $want, and there is none in ~/.pyenv/versions/$want.* (install one: pyenv install $want)" >&2; return 1; }
  echo "$py"
}
