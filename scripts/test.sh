#!/usr/bin/env bash
# The whole test suite: unit tests, ansible-test sanity, ansible-lint, changelog lint, the
# collection tarball, and the integration tests against local test hosts. Run as root on
# Debian 12; installs what it needs first. Every step runs; the exit code says if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
./scripts/setup.sh || exit 1
# shellcheck source=scripts/env.sh
source scripts/env.sh

failed=()
step() {
  local name=$1; shift
  echo
  echo "=== $name"
  local t0=$SECONDS
  if "$@"; then echo "=== $name: ok ($((SECONDS - t0)) s)"; else echo "=== $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}

lint_roles_and_playbooks() {
  local targets=()
  for d in roles playbooks examples; do
    [ -n "$(find "$d" -name '*.yml' 2>/dev/null | head -1)" ] && targets+=("$d")
  done
  if [ ${#targets[@]} = 0 ]; then echo "no roles or playbooks yet"; return 0; fi
  ansible-lint --profile production "${targets[@]}"
}

build_collection() {
  local out=.build/dist
  rm -rf "$out" && mkdir -p "$out"
  ansible-galaxy collection build --output-path "$out" . &&
    ansible-galaxy collection install -p "$out/installed" "$out"/ansinix-nixos-*.tar.gz &&
    ANSIBLE_COLLECTIONS_PATH="$out/installed" ansible-doc -l ansinix.nixos
}

step "unit tests" pytest -q tests/unit
step "sanity" ./scripts/sanity.sh
step "ansible-lint" lint_roles_and_playbooks
step "changelog lint" antsibull-changelog lint
step "collection build" build_collection
step "integration tests" pytest tests/integration

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
echo "all steps passed"
