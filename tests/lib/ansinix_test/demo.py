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
FLEET = os.path.join(REPO_ROOT, "examples", "fleet", "default.nix")
# The demo machine has no nixpkgs: <nixpkgs> is the stand-in that builds NixOS-like systems.
NIXPKGS = os.path.join(REPO_ROOT, "tests", "fixtures", "mini-nixpkgs")
CONFIGURATIONS = {"web1": "web", "web2": "web", "mon": "mon"}


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
    extra = os.path.join(hosts.state_dir, "fleet.yml")
    with open(extra, "w", encoding="utf-8") as f:
        f.write("nixos:\n  hosts:\n" + "".join("    %s: {nixos_configuration: %s}\n" % kv for kv in CONFIGURATIONS.items()))
    command = ["ansible-playbook", "-i", hosts.inventory_path, "-i", extra, "ansinix.nixos.site",
               "-e", "nixos_file=" + FLEET, "-e", '{"nixos_nix_path": ["nixpkgs=%s"]}' % NIXPKGS]
    say("== Deploying examples/fleet with the collection's site playbook (the ansinix.nixos.deploy role):")
    say("   ansible-playbook -i <test hosts> ansinix.nixos.site -e nixos_file=examples/fleet/default.nix \\")
    say("     -e '{\"nixos_nix_path\": [\"nixpkgs=tests/fixtures/mini-nixpkgs\"]}'")
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
    say("Run ./scripts/demo.sh again: nothing changes (changed=0). Edit examples/fleet/web.nix (add pkgs.git to")
    say("environment.systemPackages, say) and run it again: the web servers get a new generation, mon does not.")
    say("./scripts/demo.sh stop removes the hosts.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except HostError as exc:
        print("demo: %s" % exc, file=sys.stderr)
        sys.exit(1)
