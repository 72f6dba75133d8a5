#!/usr/bin/env bash
# scripts/venv.sh [CORE]: makes the venv of one tested ansible-core (2.19, 2.20, 2.21, ...) when it is
# missing or its requirements changed, and prints its path. The default, tests/requirements.txt, is .venv
# on Debian's python3 with every tool; tests/requirements-CORE.txt is .venv-CORE on the Python its
# "# python: 3.x" line names, the newest build of it under ~/.pyenv/versions.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
core=${1:-$(ansinix_default_core)}
reqs=$(ansinix_requirements "$core")
venv=$(ansinix_venv "$core")
python=$(ansinix_python "$core")
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "venv: creating $venv (ansible-core $core, $python)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # pip's output goes to a log that is shown only when the install fails.
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs" > "$venv.log" 2>&1; then
    cat "$venv.log" >&2; echo "venv: pip install -r $reqs failed (log above)" >&2; exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "$PWD/$venv"
