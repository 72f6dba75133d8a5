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
  # The tarball must install and document every plugin, with examples, on its own.
  local out=.build/dist
  rm -rf "$out" && mkdir -p "$out"
  ansible-galaxy collection build --output-path "$out" . &&
    ansible-galaxy collection install --force -p "$out/installed" "$out"/ansinix-nixos-*.tar.gz || return 1
  local plugins
  plugins=$(ANSIBLE_COLLECTIONS_PATH="$out/installed" ansible-doc -l ansinix.nixos -j | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)))')
  [ -n "$plugins" ] || { echo "ansible-doc lists no modules of the built collection"; return 1; }
  local p
  for p in $plugins; do
    ANSIBLE_COLLECTIONS_PATH="$out/installed" ansible-doc "$p" | grep -q '^EXAMPLES:' || { echo "$p: no examples in ansible-doc"; return 1; }
  done
  ANSIBLE_COLLECTIONS_PATH="$out/installed" ansible-doc -t inventory ansinix.nixos.hetzner | grep -q '^EXAMPLES:' ||
    { echo "ansinix.nixos.hetzner: no examples in ansible-doc"; return 1; }
  echo "built, installed and documented: $plugins ansinix.nixos.hetzner"
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
