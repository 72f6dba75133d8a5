#!/usr/bin/env bash
# scripts/sanity.sh [CORE] [ansible-test options]: ansible-test sanity of ansible-core CORE (default: the
# one tests/requirements.txt pins; 2.20, 2.21: tests/requirements-CORE.txt) on a copy of the tracked
# files placed where ansible-test wants a collection: .build/sanity/ansible_collections/ansinix/nixos.
# Run one at a time (flock): every version shares ~/.ansible/test.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$ANSINIX_ROOT"
core=$(ansinix_default_core)
if [[ ${1:-} =~ ^[0-9]+\.[0-9]+$ ]]; then core=$1; shift; fi
python=$(ansinix_python "$core")
# ansible-test's own --venv mode downloads pip from a host outside the package registries, so the
# sanity tools get a venv of their own per version (their pins clash with ansible-lint's) and run --local in it.
SANITY_VENV=$ANSINIX_ROOT/.venv-sanity
[ "$core" = "$(ansinix_default_core)" ] || SANITY_VENV+="-$core"
# ansible-core and the cryptography it imports, pinned as the tests pin them (no deprecation warnings).
mapfile -t pins < <(grep -E '^(ansible-core|cryptography)==' "$(ansinix_requirements "$core")")
pin="${pins[*]}"
if [ ! -x "$SANITY_VENV/bin/python" ] || [ "$(cat "$SANITY_VENV/.core" 2>/dev/null)" != "$pin" ]; then
  rm -rf "$SANITY_VENV"
  "$python" -m venv "$SANITY_VENV"
  "$SANITY_VENV/bin/pip" install -q --disable-pip-version-check "${pins[@]}" > "$SANITY_VENV.log" 2>&1 ||
    { cat "$SANITY_VENV.log" >&2; exit 1; }
  echo "$pin" > "$SANITY_VENV/.core"
fi
dest=.build/sanity/ansible_collections/ansinix/nixos
rm -rf .build/sanity
mkdir -p "$dest"
# Tracked and new (not ignored) files, as they are in the work tree.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | rsync -a --from0 --files-from=- ./ "$dest/"
# Each sanity test gets a venv that ansible-test seeds with pip from a bootstrap script it
# downloads; give it ours (scripts/pip-bootstrap.py) under the cache name it looks for.
pip_version=$(grep -oP "^\s*pip='\K[0-9.]+" "$SANITY_VENV"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
mkdir -p ~/.ansible/test/cache
cp scripts/pip-bootstrap.py ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
cd "$dest"
git init -q && git add -A && git -c user.name=sanity -c user.email=sanity@localhost commit -qm sanity
pyver=$("$SANITY_VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PATH="$SANITY_VENV/bin:$PATH" ansible-test sanity --local --python "$pyver" --requirements --color no "$@"
