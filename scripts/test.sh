#!/usr/bin/env bash
# The whole test suite: unit tests and ansible-test sanity on every supported ansible-core,
# ansible-lint, changelog lint, the collection tarball, and the integration tests against local
# test hosts. Run as root on Debian 12; installs what it needs first. Every step runs; the exit
# code says if any failed.
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

# The ansible-core versions meta/runtime.yml claims, each tested (scripts/venv.sh makes their venvs):
# the oldest runs every step; the newest also runs the integration tests of the modules, whose
# action plugins lean most on ansible-core (connections, become, file transfers), and of the deploy
# role (includes, rolling batches, health-check rollback, reboots).
CORES=(2.19 2.20 2.21)
NEWEST=${CORES[-1]}
MODULE_TESTS=(tests/integration/test_nix_copy_closure.py tests/integration/test_nixos_switch.py
              tests/integration/test_nixos_keys.py tests/integration/test_deploy_modules.py
              tests/integration/test_refused_switch.py tests/integration/test_switch_lock.py
              tests/integration/test_deploy_role.py tests/integration/test_deploy_flake_lock.py)

with_core() {  # CORE COMMAND...: run COMMAND with that ansible-core's venv first on PATH
  local venv
  venv=$(./scripts/venv.sh "$1") || return 1
  shift
  PATH="$venv/bin:$PATH" "$@"
}

module_tests_on() {  # CORE: the test hosts driven by that ansible-core, from this pytest
  ./scripts/venv.sh "$1" > /dev/null && ANSINIX_ANSIBLE_CORE=$1 pytest "${MODULE_TESTS[@]}"
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

for core in "${CORES[@]}"; do
  step "unit tests (ansible-core $core)" with_core "$core" pytest -q tests/unit
done
for core in "${CORES[@]}"; do
  step "sanity (ansible-core $core)" ./scripts/sanity.sh "$core"
done
step "ansible-lint" lint_roles_and_playbooks
step "changelog lint" antsibull-changelog lint
step "collection build" build_collection
# The test hosts' PID 1 is no systemd; this runs the switch's transient units under a real one.
step "the switch under systemd as PID 1" ./scripts/in-systemd.sh env ANSINIX_REQUIRE_SYSTEMD=1 \
  pytest -q tests/unit/plugins/module_utils/test_activation.py -k real_systemd
step "integration tests (ansible-core ${CORES[0]})" pytest tests/integration
step "integration tests of the modules and the deploy role (ansible-core $NEWEST)" module_tests_on "$NEWEST"

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
echo "all steps passed"
