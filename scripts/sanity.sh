#!/usr/bin/env bash
# ansible-test sanity on a copy of the tracked files placed where ansible-test wants a
# collection: .build/sanity/ansible_collections/ansinix/nixos.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$ANSINIX_ROOT"
# ansible-test's own --venv mode downloads pip from a host outside the package registries, so the
# sanity tools get a venv of their own (their pins clash with ansible-lint's) and run --local in it.
SANITY_VENV=$ANSINIX_ROOT/.venv-sanity
core=$(grep '^ansible-core==' tests/requirements.txt)
if [ "$(cat "$SANITY_VENV/.core" 2>/dev/null)" != "$core" ]; then
  rm -rf "$SANITY_VENV"
  /usr/bin/python3 -m venv "$SANITY_VENV"
  "$SANITY_VENV/bin/pip" install -q --disable-pip-version-check "$core" > "$SANITY_VENV.log" 2>&1 ||
    { cat "$SANITY_VENV.log" >&2; exit 1; }
  echo "$core" > "$SANITY_VENV/.core"
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
PATH="$SANITY_VENV/bin:$PATH" ansible-test sanity --local --python 3.11 --requirements --color no "$@"
