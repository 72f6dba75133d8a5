"""The ansinix.nixos.deploy role through ansible-playbook and ansible-runner, on three test hosts."""
import json
import os
import subprocess
import textwrap

import pytest

from ansinix_test import REPO_ROOT
from ansinix_test.hosts import REBOOT_COMMAND
from ansinix_test.systems import FIXTURES_DIR

FLEET = os.path.join(os.path.dirname(FIXTURES_DIR), "fleet.nix")
SITE = os.path.join(REPO_ROOT, "playbooks", "site.yml")
HOWTO = os.path.join(REPO_ROOT, "examples", "howto")  # the variable files and playbooks docs/howto.md shows
BUILD = "Build the batch's configurations in one evaluation, on the controller or the builder host"


def howto(name):
    return ["-e", "@" + os.path.join(HOWTO, name)]


def serve_healthz(host):
    """An HTTP server on the host's port 80 answering /healthz, for the how-to's health checks."""
    host.run("mkdir -p /srv/www && echo ok > /srv/www/healthz && cd /srv/www && "
             "(nohup python3 -m http.server 80 >/dev/null 2>&1 &) && "
             "for i in $(seq 50); do curl -fsS http://localhost/healthz >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1")


@pytest.fixture
def fleet(fresh_hosts, testhosts, tmp_path):
    hosts = fresh_hosts("web1", "web2", "mon")
    extra = tmp_path / "fleet.yml"
    extra.write_text(textwrap.dedent("""
        all:
          hosts:
            web1: {nixos_configuration: web}
            web2: {nixos_configuration: web}
            mon: {nixos_configuration: mon}
        """))
    # Limited to the fleet: the session's inventory also lists the hosts of other tests.
    return {h.name: h for h in hosts}, ["-i", testhosts.inventory_path, "-i", str(extra), "-e", "nixos_file=" + FLEET,
                                        "-l", "web1,web2,mon"]


def extra_vars(**values):
    return ["-e", json.dumps(values)]


def task_results(run, name):
    return [e for e in run.events if e["task"] == name]


# The includes of tasks/main.yml that only some hosts run.
OPTIONAL_PHASES = ("Send the source and build on the host itself", "Keys before the switch",
                   "Keys for owners the new system created", "Health checks, and a rollback if one fails",
                   "Reboot when asked, or when the new kernel, initrd or modules need it")


def test_fleet_deploy_then_rerun_changes_nothing(fleet, run_playbook):
    hosts, args = fleet
    keys = {"nixos_keys": {"api-token": {"content": "role-secret", "permissions": "0400"}}}
    run = run_playbook(SITE, args=args + extra_vars(**keys))
    assert run.rc == 0, str(run)
    builds = task_results(run, BUILD)
    # One build task run, for the two distinct configurations, although three hosts deploy.
    assert len(builds) == 1 and sorted(builds[0]["result"]["out_paths"]) == ["mon", "web"]
    web_system = hosts["web1"].readlink("/run/current-system")
    assert web_system.endswith("-nixos-system-web-1") and hosts["web2"].readlink("/run/current-system") == web_system
    assert hosts["mon"].readlink("/run/current-system").endswith("-nixos-system-mon-1")
    # Cross-host data: the monitoring system lists both web servers, from their inventory addresses.
    targets = json.loads(hosts["mon"].read_file("/etc/static/prometheus/targets.json"))
    assert sorted(targets) == sorted("%s:9100" % hosts[h].address for h in ("web1", "web2"))
    for host in hosts.values():
        assert host.generation() == 2
        st = host.stat("/run/keys/api-token")
        assert (st["user"], st["mode"]) == ("root", 0o400) and host.read_file("/run/keys/api-token") == "role-secret"
    again = run_playbook(SITE, args=args + extra_vars(**keys))
    assert again.rc == 0, str(again)
    assert again.changed() == {"web1": 0, "web2": 0, "mon": 0}
    assert all(h.generation() == 2 for h in hosts.values())
    # A host with no keys, checks or reboot skips each of those phases in one step; the play goes on after the role.
    play = """
- name: The role, then a task of the play
  hosts: all
  gather_facts: false
  roles:
    - role: ansinix.nixos.deploy
  tasks:
    - name: After the role
      ansible.builtin.command: readlink /run/current-system
      changed_when: false
"""
    after = run_playbook(play, args=args)
    assert after.rc == 0, str(after)
    skipped = {e["task"] for e in after.events if e["status"] == "skipped"}
    assert skipped == set(OPTIONAL_PHASES), skipped
    assert all(len(task_results(after, phase)) == 3 for phase in OPTIONAL_PHASES)  # once per host, not per task
    assert all(r["changed"] is False for r in after.results("Switch to the new system").values())
    assert {e["host"]: e["result"]["stdout"] for e in task_results(after, "After the role")} == {
        name: h.readlink("/run/current-system") for name, h in hosts.items()}
    assert all(h.generation() == 2 for h in hosts.values())


def test_a_configuration_that_fails_to_evaluate_fails_only_its_hosts(fleet, run_playbook, tmp_path):
    hosts, args = fleet
    before = hosts["web2"].readlink("/run/current-system")
    # fleet.nix with one more configuration, which fails to evaluate; web2 uses it.
    broken = tmp_path / "broken-fleet.nix"
    broken.write_text("""{ args ? { } }:
let fleet = import %s { inherit args; }; in {
  nixosConfigurations = fleet.nixosConfigurations // {
    broken.config.system.build.toplevel = throw "the broken configuration fails on purpose";
  };
}
""" % FLEET)
    uses_it = tmp_path / "web2-broken.yml"
    uses_it.write_text("all:\n  hosts:\n    web2: {nixos_configuration: broken}\n")
    version = "partial-%d" % os.getpid()
    run = run_playbook(SITE, args=args + ["-i", str(uses_it), "-e", "nixos_file=%s" % broken] + extra_vars(nixos_args={"version": version}))
    assert run.rc != 0
    # The other hosts got their systems; web2 kept its own.
    assert hosts["web1"].readlink("/run/current-system").endswith("-nixos-system-web-" + version)
    assert hosts["mon"].readlink("/run/current-system").endswith("-nixos-system-mon-" + version)
    assert hosts["web2"].readlink("/run/current-system") == before and hosts["web2"].generation() == 1
    # One build for the batch; web2 stops on its own configuration's error, in one line.
    assert len(task_results(run, BUILD)) == 1
    stopped = task_results(run, "Stop the hosts whose configuration did not build")
    assert sorted((e["host"], e["status"]) for e in stopped) == [("mon", "ok"), ("web1", "ok"), ("web2", "failed")]
    message = next(e for e in stopped if e["host"] == "web2")["result"]["msg"]
    assert message.startswith("configuration broken: evaluating %s -A nixosConfigurations.broken.config.system.build.toplevel failed: "
                              "error: the broken configuration fails on purpose" % broken) and "\n" not in message


def test_build_on_target_uses_no_nix_on_the_controller(fleet, run_playbook, tmp_path):
    hosts, args = fleet
    # Every nix command on the controller's PATH records that it was called, and fails.
    trap = tmp_path / "nix-trap"
    trap.mkdir()
    calls = tmp_path / "nix-calls"
    for name in ("nix", "nix-build", "nix-store", "nix-instantiate", "nix-env", "nix-copy-closure"):
        (trap / name).write_text("#!/bin/sh\necho %s \"$@\" >> %s\nexit 1\n" % (name, calls))
        (trap / name).chmod(0o755)
    env = {"PATH": "%s:%s" % (trap, os.environ["PATH"])}
    version = "target-%d" % os.getpid()  # a system the controller has never seen
    # A source directory an earlier version left readable by everyone is made root-only.
    hosts["web1"].run("mkdir -p /var/lib/ansinix/source && chmod 0755 /var/lib/ansinix/source")
    run = run_playbook(SITE, args=args + howto("build-on-target.yml") + extra_vars(nixos_args={"version": version}), env=env)
    assert run.rc == 0, str(run)
    assert not calls.exists(), calls.read_text()
    for name, host in hosts.items():
        system = host.readlink("/run/current-system")
        assert system.endswith("-nixos-system-%s-%s" % ("mon" if name == "mon" else "web", version))
        assert host.exists("/var/lib/ansinix/source/fleet.nix")
        # The user's directory, sent whole: only root may read it.
        assert host.stat("/var/lib/ansinix/source")["mode"] == 0o700, name
        assert host.run("find /var/lib/ansinix/source -perm /077").stdout == "", name
        assert not os.path.exists(system)  # built on the host, never on the controller


def test_failing_health_check_rolls_back(fleet, run_playbook):
    hosts, args = fleet
    assert run_playbook(SITE, args=args).rc == 0
    before = hosts["web1"].readlink("/run/current-system")
    version = {"nixos_args": {"version": "2"}}
    # Nothing answers on web1's port 80 yet: the command check fails after its retries.
    run = run_playbook(SITE, args=args + ["-l", "web1"] + howto("health-checks.yml") + extra_vars(**version))
    assert run.rc != 0
    failure = run.result("Fail the unhealthy host", "web1")
    assert "a health check failed on web1" in failure["msg"] and "rolled back to %s" % before in failure["msg"]
    assert run.result("Run the command checks on the host", "web1")["results"][0]["attempts"] == 5  # as ansible-core counts retries: 5
    assert hosts["web1"].readlink("/run/current-system") == before
    assert hosts["web1"].default_boot_system() == before
    # With the service up, both checks pass, and the new system stays. A key whose owner does not exist (the new
    # system would create it) is written root-owned before the copy, and offered to its owner after the switch.
    serve_healthz(hosts["web1"])
    keys = {"nixos_keys": {"grafana-token": {"content": "role-secret", "user": "grafana", "permissions": "0440"}}}
    run = run_playbook(SITE, args=args + ["-l", "web1"] + howto("health-checks.yml") + extra_vars(**dict(version, **keys)))
    assert run.rc == 0, str(run)
    assert hosts["web1"].readlink("/run/current-system").endswith("-nixos-system-web-2")
    st = hosts["web1"].stat("/run/keys/grafana-token")
    assert (st["user"], st["group"], st["mode"]) == ("root", "root", 0o440)
    assert hosts["web1"].read_file("/run/keys/grafana-token") == "role-secret"
    # The phases ran in the order of the deploy, each once.
    phases = [BUILD, "Put the keys in place",
              "Copy the store paths the host lacks", "Switch to the new system",
              "Hand the keys to owners the new system created", "Run the command checks on the host",
              "Request the HTTP checks from the controller"]
    assert [e["task"] for e in run.events if e["task"] in phases and e["status"] == "ok"] == phases
    assert run.result("Switch to the new system", "web1")["changed"]
    assert not task_results(run, "Roll the unhealthy host back to its previous generation")
    assert [e["status"] for e in task_results(run, "Reboot when asked, or when the new kernel, initrd or modules need it")] == ["skipped"]
    urls = [r["url"] for r in run.result("Request the HTTP checks from the controller", "web1")["results"]]
    assert urls == ["http://%s/healthz" % hosts["web1"].address]


def test_rolling_deploy_stops_at_the_first_failing_host(fleet, run_playbook):
    hosts, args = fleet
    assert run_playbook(SITE, args=args).rc == 0
    before = {n: h.readlink("/run/current-system") for n, h in hosts.items()}
    run = run_playbook(os.path.join(HOWTO, "rolling.yml"), args=args + howto("health-checks.yml") + extra_vars(nixos_args={"version": "2"}))
    assert run.rc != 0
    switched = [e["host"] for e in run.events if e["task"] == "Switch to the new system"]
    assert len(switched) == 1, str(run)  # serial: 1, and the first host failed its checks: no other host was touched
    assert {n: h.readlink("/run/current-system") for n, h in hosts.items()} == before
    assert [(e["host"], e["status"]) for e in task_results(run, "Fail the unhealthy host")] == [(switched[0], "failed")]


def test_reboot_only_when_the_kernel_changed(fleet, run_playbook, testhosts):
    hosts, args = fleet
    reboot = {"nixos_reboot_command": REBOOT_COMMAND}  # the test hosts are rebooted by the harness
    args = args + howto("reboot.yml")
    with testhosts.serve_reboots():
        boot_ids = {name: h.boot_id() for name, h in hosts.items()}
        run = run_playbook(SITE, args=args + extra_vars(**reboot))
        assert run.rc == 0, str(run)
        assert {name: h.boot_id() for name, h in hosts.items()} == boot_ids  # same kernel as booted: no reboot
        new_kernel = dict(reboot, nixos_args={"overrides": {"web": {"kernelVersion": "6.7.0"}}})
        run = run_playbook(SITE, args=args + ["-l", "web1"] + extra_vars(**new_kernel))
        assert run.rc == 0, str(run)
    web1 = hosts["web1"]
    assert web1.boot_id() != boot_ids["web1"]
    assert web1.readlink("/run/booted-system") == web1.readlink("/run/current-system")
    assert web1.readlink("/run/booted-system/kernel").endswith("linux-6.7.0/bzImage")
    assert hosts["web2"].boot_id() == boot_ids["web2"]


def test_check_diff_is_a_plan_that_changes_nothing(fleet, run_playbook):
    hosts, args = fleet
    assert run_playbook(SITE, args=args).rc == 0
    state = {n: (h.readlink("/run/current-system"), h.generation()) for n, h in hosts.items()}
    units = {"sshd.service": "openssh 9.6", "nginx.service": "nginx 1.25", "dbus.service": "dbus 1.14"}
    plan = dict(nixos_args={"version": "2", "overrides": {"web": {"packages": {"nginx": "1.25.0", "openssl": "3.0.13"}, "units": units}}})
    run = run_playbook(SITE, args=args + ["--check", "--diff"] + extra_vars(**plan))
    assert run.rc == 0, str(run)
    assert "~ nginx: 1.24.0 -> 1.25.0" in run.stdout and "- coreutils 9.4" in run.stdout
    switch = run.result("Switch to the new system", "web1")
    assert switch["changed"] and switch["units"]["restarted"] == ["nginx.service"]
    assert {n: (h.readlink("/run/current-system"), h.generation()) for n, h in hosts.items()} == state


def test_collection_playbooks_by_name(fleet, run_playbook):
    """`ansible-playbook ansinix.nixos.site` and `ansinix.nixos.rollback`, as the docs show them."""
    hosts, args = fleet
    first = run_playbook("ansinix.nixos.site", args=args)
    assert first.rc == 0, str(first)
    second = run_playbook("ansinix.nixos.site", args=args + extra_vars(nixos_args={"version": "2"}))
    assert second.rc == 0, str(second)
    assert hosts["web1"].generation() == 3
    back = run_playbook("ansinix.nixos.rollback", args=args + ["-l", "web1"])
    assert back.rc == 0, str(back)
    assert hosts["web1"].generation() == 2 and hosts["web1"].readlink("/run/current-system").endswith("-nixos-system-web-1")
    assert hosts["web2"].generation() == 3
    to_three = run_playbook("ansinix.nixos.rollback", args=args + ["-l", "web1", "-e", "nixos_generation=3"])
    assert to_three.rc == 0, str(to_three)
    assert hosts["web1"].readlink("/run/current-system").endswith("-nixos-system-web-2")


def test_builder_host(fleet, fresh_hosts, run_playbook, tmp_path):
    hosts, args = fleet
    (builder,) = fresh_hosts("builder")
    # The builder needs the fleet's files; the controller relays its builds to the targets.
    archive = subprocess.run(["tar", "-C", FIXTURES_DIR + "/..", "-c", "fleet.nix", "nixos"], capture_output=True, check=True).stdout
    builder.run("mkdir -p /srv/fleet && tar -C /srv/fleet -x", input=archive)
    version = "builder-%d" % os.getpid()
    run = run_playbook(SITE, args=args + ["-e", "nixos_file=/srv/fleet/fleet.nix"] + extra_vars(
        nixos_build_on="builder", nixos_args={"version": version}))
    assert run.rc == 0, str(run)
    builds = run.results(BUILD)
    assert len(builds) == 1 and sorted(list(builds.values())[0]["out_paths"]) == ["mon", "web"]
    system = hosts["web1"].readlink("/run/current-system")
    assert system.endswith("-nixos-system-web-" + version)
    assert builder.store_has(system) and not os.path.exists(system)  # built on the builder only
    copy = run.result("Copy the store paths the host lacks", "web1")
    assert copy["copied"] > 0
    assert builder.generation() == 1  # the builder builds; it is not deployed


def test_phases_have_tags(fleet, run_playbook):
    hosts, args = fleet
    version = "tags-%d" % os.getpid()
    run = run_playbook(SITE, args=args + ["--tags", "build,copy"] + extra_vars(nixos_args={"version": version}))
    assert run.rc == 0, str(run)
    built = run.result(BUILD, "web1")["out_paths"]["web"]
    assert hosts["web1"].store_has(built)  # copied
    assert hosts["web1"].generation() == 1 and hosts["web1"].readlink("/run/current-system") != built  # not switched
    assert not [e for e in run.events if e["task"] == "Switch to the new system"]
