"""A flake without flake.lock, built on the targets by a controller without Nix: one lock for every host."""
import json
import os
import subprocess

from ansinix_test import REPO_ROOT
from ansinix_test.ansible import path_without_nix
from ansinix_test.fleet import copy_stand_in

SITE = os.path.join(REPO_ROOT, "playbooks", "site.yml")
WRITE_LOCK = "Write flake.lock beside flake.nix on the controller (commit it)"
LOCK = "Lock the flake's inputs on the first host (missing ones only, unless nixos_update_inputs)"
STAND_IN = "/root/nixpkgs"  # each host's own copy of the stand-in nixpkgs, the flake's input

FLAKE = """\
{
  inputs.nixpkgs.url = "path:%s";%%s
  outputs = { self, nixpkgs, ... }:
    let
      host = name: nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [ {
          networking.hostName = name;
          # Which nixpkgs the system was built from: the input's NAR hash and store path, in /etc.
          environment.etc."nixpkgs-input".text = "${nixpkgs.narHash} ${nixpkgs}";
          boot.loader.grub.device = "/dev/sda";
          fileSystems."/" = { device = "/dev/sda1"; fsType = "ext4"; };
          system.nixos.label = "lock";
          system.stateVersion = "26.11";
        } ];
      };
    in
    { nixosConfigurations = { web1 = host "web1"; web2 = host "web2"; }; };
}
""" % STAND_IN


def send_stand_in(hosts, source):
    """The same stand-in, with its modes and times (so the same NAR hash and lastModified), on every host."""
    archive = subprocess.run(["tar", "-C", source, "-c", "."], capture_output=True, check=True).stdout
    for host in hosts:
        host.run("rm -rf {0} && mkdir -p {0} && tar -C {0} -x".format(STAND_IN), input=archive)


def input_of(host):
    """(NAR hash, store path) of the nixpkgs the host's running system was built from."""
    nar_hash, path = host.read_file("/run/current-system/etc/nixpkgs-input").split()
    return nar_hash, path


def test_a_controller_without_nix_pins_the_inputs_once_for_every_host(fresh_hosts, testhosts, run_playbook, tmp_path):
    hosts = fresh_hosts("web1", "web2")
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    send_stand_in(hosts, stand_in)
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "flake.nix").write_text(FLAKE % "")
    lock = fleet / "flake.lock"
    env = {"PATH": path_without_nix(tmp_path / "bin")}
    args = ["-i", testhosts.inventory_path, "-l", "web1,web2", "-e", json.dumps({
        "nixos_flake": str(fleet), "nixos_build_on": "target"})]

    def deploy(*more, rc=0):
        run = run_playbook(SITE, args=args + list(more), env=env)
        assert run.rc == rc, str(run)
        return run

    # No lock: the first host locks, the controller keeps the lock, both hosts build from it.
    first = deploy()
    assert lock.exists()
    locked = json.loads(lock.read_text())["nodes"]["nixpkgs"]["locked"]
    assert [r["changed"] for r in first.results(WRITE_LOCK).values()] == [True]
    assert locked["type"] == "path" and locked["path"] == STAND_IN and locked["narHash"].startswith("sha256-")
    systems = {h.name: h.readlink("/run/current-system") for h in hosts}
    assert systems["web1"].endswith("-nixos-system-web1-lock") and systems["web2"].endswith("-nixos-system-web2-lock")
    assert {h.name: input_of(h)[0] for h in hosts} == dict.fromkeys(systems, locked["narHash"])
    assert input_of(hosts[0])[1] == input_of(hosts[1])[1]
    for host in hosts:
        assert host.read_file("/var/lib/ansinix/source/flake.lock") == lock.read_text()

    # Again: nothing changes, and the lock is not written.
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    again = deploy()
    assert again.changed() == {"web1": 0, "web2": 0}, str(again)
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before

    # A newer nixpkgs on the hosts, and an input added to flake.nix: Nix locks the new input alone (as `nix flake
    # lock` does), and the pinned nixpkgs stays as it was.
    pkgs = os.path.join(stand_in, "pkgs.nix")
    with open(pkgs, encoding="utf-8") as f:
        text = f.read()
    with open(pkgs, "w", encoding="utf-8") as f:
        f.write(text.replace('version = "3.11.9"', 'version = "3.12.4"'))
    send_stand_in(hosts, stand_in)
    (fleet / "flake.nix").write_text(FLAKE % '\n  inputs.extra = { url = "path:%s"; flake = false; };' % STAND_IN)
    added = deploy()
    assert [r["changed"] for r in added.results(WRITE_LOCK).values()] == [True]
    nodes = json.loads(lock.read_text())["nodes"]
    assert nodes["nixpkgs"]["locked"] == locked and nodes["extra"]["locked"]["narHash"] != locked["narHash"]
    assert {h.name: h.readlink("/run/current-system") for h in hosts} == systems

    # The update, planned: the plan says the lock would change, and writes nothing on the controller.
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    plan = deploy("-e", "nixos_update_inputs=true", "--check", "--diff")
    assert [r["changed"] for r in plan.results(WRITE_LOCK).values()] == [True]
    diff = plan.result(WRITE_LOCK, "web1")["diff"]
    diff = diff[0] if isinstance(diff, list) else diff
    assert diff["before"] == before[0].decode()
    assert json.loads(diff["after"])["nodes"]["nixpkgs"]["locked"]["narHash"] not in (locked["narHash"], None)
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before
    assert {h.name: h.readlink("/run/current-system") for h in hosts} == systems

    # The update: the first host locks the newest nixpkgs, the controller gets it, both hosts build from it.
    updated = deploy("-e", "nixos_update_inputs=true")
    assert [r["changed"] for r in updated.results(WRITE_LOCK).values()] == [True]
    new = json.loads(lock.read_text())["nodes"]["nixpkgs"]["locked"]
    assert new["narHash"] != locked["narHash"]
    assert {h.name: input_of(h)[0] for h in hosts} == dict.fromkeys(systems, new["narHash"])
    assert input_of(hosts[0])[1] == input_of(hosts[1])[1]
    assert all(h.readlink("/run/current-system") != systems[h.name] for h in hosts)

    # An input no host can fetch: one line that says so, and nothing changed, on the controller or the hosts.
    systems = {h.name: h.readlink("/run/current-system") for h in hosts}
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    (fleet / "flake.nix").write_text(FLAKE % '\n  inputs.extra = { url = "path:/nonexistent/input"; flake = false; };')
    broken = deploy(rc=2)
    message = broken.result(LOCK, "web1")["msg"]
    assert message.startswith("locking the inputs of path:/var/lib/ansinix/source failed: ") and "\n" not in message
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before
    assert {h.name: h.readlink("/run/current-system") for h in hosts} == systems

    # An update asked of a build that locks nothing: refused in one line, before anything happens.
    refused = deploy("-e", "nixos_update_inputs=true", "-e", "nixos_build_on=controller", rc=2)
    assert refused.result("Check what to build", "web1")["msg"] == (
        "nixos_update_inputs updates a flake on the first host with nixos_build_on: target; for a build on the controller or a "
        "builder, run `nix flake update` where the flake is (classic files: change nixos_nix_path)")
    assert {h.name: h.readlink("/run/current-system") for h in hosts} == systems
