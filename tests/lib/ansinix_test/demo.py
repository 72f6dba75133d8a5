"""The README's demo: three local test hosts deployed with the collection through ansible-playbook.

    ./scripts/demo.sh        deploy examples/fleet (again: nothing changes)
    ./scripts/demo.sh stop   remove the demo hosts
"""
import os
import subprocess
import sys

from ansinix_test import REPO_ROOT
from ansinix_test.ansible import ansible_env
from ansinix_test.hosts import HostError, TestHosts
from ansinix_test.systems import build_system

HOSTS = ["web1", "web2", "mon"]
# What each host deploys (examples/fleet, <nixpkgs> the stand-in); the hosts' inventory adds how to reach them.
INVENTORY = os.path.join(REPO_ROOT, "inventory", "demo.yml")


def say(text=""):
    print(text, flush=True)


def main(argv):
    hosts = TestHosts(prefix=os.environ.get("ANSINIX_DEMO_PREFIX") or "demo")
    if argv[:1] == ["stop"]:
        hosts.stop()
        say("The demo hosts are gone.")
        return 0
    say("== Starting three test hosts (network + mount namespaces, each with its own sshd and Nix store)")
    base = build_system(name="installer")
    hosts.start(HOSTS, options={name: {"system": base} for name in HOSTS})
    for host in hosts:
        say("   %-5s %-14s %s" % (host.name, host.address, host.readlink("/run/current-system")))
    say()
    command = ["ansible-playbook", "-i", INVENTORY, "-i", hosts.inventory_path, "ansinix.nixos.site"]
    say("== Deploying examples/fleet with the collection's site playbook (the ansinix.nixos.deploy role):")
    say("   ansible-playbook -i inventory/demo.yml -i %s ansinix.nixos.site" % hosts.inventory_path)
    proc = subprocess.run(command, env=ansible_env(hosts), check=False)
    if proc.returncode != 0:
        say("The deploy failed (exit %d); the output above says why." % proc.returncode)
        return proc.returncode
    say()
    say("== What the hosts run now")
    for host in hosts:
        say("   %-5s generation %s  %s" % (host.name, host.generation(), host.readlink("/run/current-system")))
    say("   mon's Prometheus configuration, made from the web servers' inventory addresses:")
    say("   " + hosts["mon"].read_file("/etc/static/prometheus/prometheus.yml"))
    say()
    say("Look around:")
    say("   ssh -i %s -o UserKnownHostsFile=%s root@%s readlink /run/current-system"
        % (hosts.ssh_key_path, hosts.known_hosts_path, hosts["web1"].address))
    say("   source scripts/env.sh && python -m ansinix_test.hosts --prefix demo exec mon -- ls -l /nix/var/nix/profiles")
    say("Run ./scripts/demo.sh again: nothing changes (changed=0). Edit examples/fleet/nix/web.nix (add pkgs.git to")
    say("environment.systemPackages, say) and run it again: the web servers get a new generation, mon does not.")
    say("./scripts/demo.sh stop removes the hosts.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except HostError as exc:
        print("demo: %s" % exc, file=sys.stderr)
        sys.exit(1)
