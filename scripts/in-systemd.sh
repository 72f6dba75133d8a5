#!/usr/bin/env bash
# Run a command where systemd is PID 1, on a machine whose PID 1 is not systemd: systemd (and the D-Bus
# system bus that `systemd-run --pipe` needs) as PID 1 of new pid, mount, cgroup, network and UTS
# namespaces, with a private /run and /tmp and only the units a transient service needs. The command runs
# inside them, from this directory; then that systemd and everything under it end.
#   scripts/in-systemd.sh pytest -q tests/unit/plugins/module_utils/test_activation.py -k real_systemd
# Root only. Used for the tests that are skipped unless systemd is PID 1 (cgroup v1 with a name=systemd
# hierarchy, or cgroup v2).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "in-systemd.sh: run it as root" >&2; exit 1; }
[ $# -gt 0 ] || { echo "usage: scripts/in-systemd.sh COMMAND [ARG...]" >&2; exit 2; }

if [ -d /sys/fs/cgroup/systemd ]; then hierarchy=/sys/fs/cgroup/systemd; else hierarchy=/sys/fs/cgroup; fi
group=$hierarchy/ansinix-in-systemd-$$
work=$(mktemp -d)
cleanup() {
  if [ -n "${init:-}" ]; then kill -KILL "$init" 2>/dev/null || true; fi
  # systemd made groups of its own under it: the deepest first, once its processes are gone.
  for _ in $(seq 50); do
    find "$group" -depth -type d -exec rmdir {} + 2>/dev/null && break
    sleep 0.1
  done
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/init.sh" <<'EOF'
#!/bin/sh
set -e
mount --make-rprivate /
mount -t proc proc /proc
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir /tmp/units
for t in sysinit basic shutdown sockets; do printf '[Unit]\nDescription=%s\n' "$t" > "/tmp/units/$t.target"; done
printf '[Unit]\nDescription=in-systemd\nWants=dbus.socket dbus.service\n' > /tmp/units/in-systemd.target
cp /lib/systemd/system/dbus.socket /lib/systemd/system/dbus.service /tmp/units/
mount --bind /tmp/units /lib/systemd/system
mount -t tmpfs tmpfs /etc/systemd/system
if [ -d /sys/fs/cgroup/systemd ]; then
  mount -t tmpfs tmpfs /sys/fs/cgroup
  mkdir /sys/fs/cgroup/systemd
  mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
else
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
fi
export container=ansinix-test
exec /lib/systemd/systemd --system --unit=in-systemd.target --log-target=console --log-level=warning
EOF
chmod +x "$work/init.sh"

mkdir "$group"
# The subshell, not this script, moves into the group ($BASHPID: $$ would be this script's pid).
(echo "$BASHPID" > "$group/cgroup.procs"; exec unshare --pid --fork --mount --cgroup --net --uts "$work/init.sh") \
  > "$work/init.log" 2>&1 &
for _ in $(seq 100); do
  init=$(pgrep -f -P "$(pgrep -f -n "unshare --pid --fork --mount --cgroup --net --uts $work/init.sh" || echo 0)" \
         "systemd --system --unit=in-systemd.target" || true)
  if [ -n "$init" ] && nsenter -t "$init" -a test -S /run/dbus/system_bus_socket; then break; fi
  sleep 0.1
done
[ -n "$init" ] || { echo "in-systemd.sh: systemd did not start:" >&2; cat "$work/init.log" >&2; exit 1; }
nsenter -t "$init" -a --wd="$PWD" "$@"
