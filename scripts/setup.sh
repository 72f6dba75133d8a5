#!/usr/bin/env bash
# Installs everything the demo and the test suite need on a Debian 12 machine, as root:
# Debian packages (Nix, OpenSSH, the tools the test hosts are made of) and a Python venv
# in .venv with the pinned tools of tests/requirements.txt (scripts/venv.sh). Safe to run
# again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run this as root (the test hosts are made of network and mount namespaces)." >&2
  exit 1
fi

APT_PACKAGES=(
  nix-bin openssh-server openssh-client sudo iproute2 procps psmisc util-linux kmod
  python3 python3-venv python3-dev git rsync curl ca-certificates
  shellcheck gdisk fdisk dosfstools e2fsprogs xfsprogs btrfs-progs mdadm busybox-static
  lvm2 cryptsetup-bin
  fusefat  # the test machines' ESPs: this kernel has no vfat, so FAT is mounted through FUSE
  systemd dbus  # a systemd as PID 1 of namespaces of its own (scripts/in-systemd.sh): the switch's transient units
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  # Keep package scripts from starting services (sshd, mdadm monitor) on the machine itself:
  # the test hosts run their own.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  if [ $had_policy = 0 ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ $had_policy = 0 ]; then rm -f "$policy"; fi
fi

./scripts/venv.sh > /dev/null

# The collection as Ansible finds it: .build/collections/ansible_collections/ansinix/nixos -> here.
mkdir -p .build/collections/ansible_collections/ansinix
ln -sfn "$PWD" .build/collections/ansible_collections/ansinix/nixos
