#!/usr/bin/env bash
# ansible-test sanity on a copy of the tracked files placed where ansible-test wants a
# collection: .build/sanity/ansible_collections/ansinix/nixos.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ANSINIX_ROOT"
dest=.build/sanity/ansible_collections/ansinix/nixos
rm -rf .build/sanity
mkdir -p "$dest"
# Tracked and new (not ignored) files, as they are in the work tree.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | rsync -a --from0 --files-from=- ./ "$dest/"
cd "$dest"
git init -q && git add -A && git -c user.name=sanity -c user.email=sanity@localhost commit -qm sanity
ansible-test sanity --venv --python 3.11 --color no "$@"
