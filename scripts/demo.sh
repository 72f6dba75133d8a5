#!/usr/bin/env bash
# The demo: starts three local test hosts (network + mount namespaces, each with its own sshd
# and Nix store) and deploys NixOS systems to them with the collection through ansible-playbook.
# Run as root on Debian 12; installs what it needs first. Run it again: nothing changes.
# `./scripts/demo.sh stop` removes the hosts.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
./scripts/setup.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
export ANSINIX_TESTHOSTS_PREFIX=demo
exec python -m ansinix_test.demo "$@"
