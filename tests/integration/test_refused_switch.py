"""A new system that refuses a live switch (its pre-switch checks, its switch inhibitors): nixos_switch fails
and changes nothing, or boots it once when allowed, and the deploy role reboots into it and confirms it.

The fixture systems run NixOS's pre-switch checks (`preSwitchChecks`, `switchInhibitors` knobs) and their
bootctl's `set-oneshot` sets the stand-in for systemd-boot's LoaderEntryOneShot, which the harness's reboot
honours. Every test asserts the host's profile, /run/current-system, boot entries and the next boot.
"""
import json
import os

import pytest

from ansinix_test import REPO_ROOT
from ansinix_test.hosts import REBOOT_COMMAND
from ansinix_test.systems import FIXTURES_DIR, build_system
from test_nixos_switch import HOST, PROFILE, adhoc, boot_entries, generations, show  # pylint: disable=import-error

SITE = os.path.join(REPO_ROOT, "playbooks", "site.yml")
FLEET = os.path.join(os.path.dirname(FIXTURES_DIR), "fleet.nix")


def system(version, **knobs):
    return build_system(name="base", version=str(version), **knobs)


# A running system with a critical component, and new ones that change it, or do not.
DBUS = {"dbus-implementation": "dbus", "systemd": "258.1"}
BROKER = {"dbus-implementation": "broker", "systemd": "258.1"}


def state(h):
    """Everything a refused switch must leave alone: profile links, running system, boot loader, one-shot entry."""
    return h.run(
        "readlink /run/current-system; readlink %s; ls %s; cat /boot/loader/loader.conf; ls /boot/loader/entries; "
        "md5sum /boot/loader/ansinix-bootloader.log; ls -A /boot/.fixture-efivars 2>&1; ls /run/ansinix-units"
        % (PROFILE, os.path.dirname(PROFILE))).stdout


@pytest.fixture
def host(fresh_hosts, run_ansible):
    """A host running a system with switch inhibitors (generation 2): the check passes, as the base had none."""
    (h,) = fresh_hosts(HOST)
    running = system(2, switchInhibitors=DBUS)
    h.import_closure(running)
    proc, result = adhoc(run_ansible, "path=%s" % running)
    assert proc.returncode == 0 and result["changed"], show(proc)
    assert h.readlink("/run/current-system") == running and h.generation() == 2
    return h


def test_a_failed_pre_switch_check_fails_with_its_reason_and_changes_nothing(host, run_ansible):
    refusing = system(3, switchInhibitors=DBUS, preSwitchChecks={"hostname": "echo 'this system is for web9, not this host'; false"})
    host.import_closure(refusing)
    before = state(host)
    proc, result = adhoc(run_ansible, "path=%s" % refusing)
    assert proc.returncode != 0, show(proc)
    assert result["msg"] == ("%s refuses a live switch: pre-switch check 'hostname' failed (this system is for web9, not this "
                             "host); nothing was changed. To reboot into it, set on_refused_switch=boot to boot it instead "
                             "(the deploy role: nixos_reboot: if_needed)" % refusing)
    assert "Traceback" not in proc.stdout + proc.stderr and "Pre-switch checks failed" in result["refused_switch"]["output"]
    assert state(host) == before

    # The check gets the new system and the action, as NixOS's do; one that passes lets the switch through.
    passing = system(4, switchInhibitors=DBUS, preSwitchChecks={"args": 'test "$1" = "$(readlink -f "$1")" && case "$2" in check|switch) ;; *) false ;; esac'})
    host.import_closure(passing)
    proc, result = adhoc(run_ansible, "path=%s" % passing)
    assert proc.returncode == 0 and result["changed"] and "refused_switch" not in result, show(proc)
    assert host.readlink("/run/current-system") == passing and host.generation() == 3


@pytest.mark.parametrize("action", ["switch", "test"])
def test_an_inhibited_switch_without_a_reboot_allowed_fails_and_changes_nothing(host, run_ansible, action):
    inhibited = system(3, switchInhibitors=BROKER)
    host.import_closure(inhibited)
    before = state(host)
    proc, result = adhoc(run_ansible, "path=%s action=%s on_refused_switch=boot" % (inhibited, action) if action == "test"
                         else "path=%s" % inhibited)
    assert proc.returncode != 0, show(proc)
    assert result["msg"].startswith("%s refuses a live switch: pre-switch check 'switchInhibitors' failed "
                                    "(dbus-implementation: dbus -> broker); nothing was changed. To reboot into it, " % inhibited)
    assert "\n" not in result["msg"] and "Traceback" not in proc.stdout + proc.stderr
    assert state(host) == before


def test_a_bad_on_refused_switch_is_one_clear_line(host, run_ansible):
    before = state(host)
    proc, result = adhoc(run_ansible, "path=%s on_refused_switch=reboot" % host.readlink("/run/current-system"))
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, show(proc)
    assert result["msg"] == "value of on_refused_switch must be one of: fail, boot, got: reboot"
    assert state(host) == before


def test_nixos_no_check_in_the_task_environment_switches_anyway(host, run_playbook, testhosts, tmp_path):
    inhibited = system(3, switchInhibitors=BROKER)
    host.import_closure(inhibited)
    play = tmp_path / "forced.yml"
    play.write_text("- hosts: %s\n  gather_facts: false\n  tasks:\n    - ansinix.nixos.nixos_switch:\n        path: %s\n"
                    "      environment:\n        NIXOS_NO_CHECK: \"1\"\n" % (HOST, inhibited))
    run = run_playbook(str(play), args=["-i", testhosts.inventory_path])
    assert run.rc == 0, str(run)
    assert host.readlink("/run/current-system") == inhibited and host.generation() == 3
    assert host.default_boot_system() == inhibited and host.oneshot_boot_entry() is None


def test_check_mode_shows_the_refusal_and_what_would_happen_instead(host, run_ansible):
    inhibited = system(3, switchInhibitors=BROKER)
    host.import_closure(inhibited)
    before = state(host)
    proc, result = adhoc(run_ansible, "path=%s" % inhibited, "--check", "--diff")
    assert proc.returncode != 0, show(proc)
    assert "refuses a live switch: pre-switch check 'switchInhibitors' failed (dbus-implementation: dbus -> broker); " \
           "the switch would fail. To reboot into it, set on_refused_switch=boot" in result["msg"]
    proc, result = adhoc(run_ansible, "path=%s on_refused_switch=boot" % inhibited, "--check", "--diff")
    assert proc.returncode == 0 and result["changed"] and result["boot_once"] and result["reboot_required"], show(proc)
    assert result["action"] == "boot" and result["units"]["restarted"] == []
    assert "live switch refused: pre-switch check 'switchInhibitors' failed (dbus-implementation: dbus -> broker)" in proc.stdout
    assert "would instead: boot it once, reboot, and make it the boot default" in proc.stdout  # the diff Ansible prints
    assert state(host) == before


def test_an_inhibited_switch_with_a_reboot_allowed_boots_it_once_and_unconfirmed_the_previous_one_boots_next(host, run_ansible):
    running, inhibited = host.readlink("/run/current-system"), system(3, switchInhibitors=BROKER)
    host.import_closure(inhibited)
    proc, result = adhoc(run_ansible, "path=%s on_refused_switch=boot" % inhibited)
    assert proc.returncode == 0 and result["changed"] and result["boot_once"] and result["reboot_required"], show(proc)
    assert result["action"] == "boot" and result["boot_once_entry"] == "nixos-generation-3.conf"
    assert result["boot_once_generation"] == 3 and result["msg"].endswith(
        "(pre-switch check 'switchInhibitors' failed (dbus-implementation: dbus -> broker)); it is the system of the next "
        "boot only, and the previous generation stays the boot default: reboot, then run with generation=3 action=boot to "
        "make it the default")
    # Nothing activated; the previous generation is still the profile's and the boot loader's default;
    # the new one is generation 3, booted at the next boot only.
    assert host.readlink("/run/current-system") == running and host.generation() == 2 and result["generation"] == 2
    assert host.readlink(PROFILE + "-3-link") == inhibited and host.default_boot_system() == running
    assert host.oneshot_boot_entry() == "nixos-generation-3.conf"

    host.reboot()  # the host boots the new system once ...
    assert host.readlink("/run/booted-system") == inhibited and host.oneshot_boot_entry() is None
    host.reboot()  # ... and, nobody having confirmed it, the previous one after that
    assert host.readlink("/run/booted-system") == running and host.readlink("/run/current-system") == running
    assert host.generation() == 2


def test_a_one_shot_entry_the_host_cannot_set_fails_and_leaves_the_previous_generation_the_default(host, run_ansible):
    running, inhibited = host.readlink("/run/current-system"), system(3, switchInhibitors=BROKER)
    host.import_closure(inhibited)
    host.run("rm -rf /boot/.fixture-efivars && touch /boot/.fixture-efivars")  # firmware variables read-only
    entries = boot_entries(host)
    proc, result = adhoc(run_ansible, "path=%s on_refused_switch=boot" % inhibited)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, show(proc)
    assert result["msg"].startswith("the runner failed: could not make nixos-generation-3.conf the entry of the next boot "
                                    "only (bootctl set-oneshot; the boot loader must be systemd-boot); rolled back to "), result["msg"]
    assert result["rolled_back"] and not result["boot_once"] and not result["reboot_required"]
    assert "Read-only file system" in host.read_file(result["log"])
    # Fail closed: the new generation is gone, the previous one is the profile's, the default and what runs.
    assert host.readlink("/run/current-system") == running and host.generation() == 2 and generations(host) == [1, 2]
    assert host.default_boot_system() == running and boot_entries(host) == entries and host.oneshot_boot_entry() is None


def test_the_role_refuses_without_a_reboot_allowed_and_with_one_reboots_into_the_system_and_confirms_it(
        fresh_hosts, testhosts, run_playbook, tmp_path):
    (web,) = fresh_hosts("sbweb")
    inventory = tmp_path / "web.yml"
    inventory.write_text("all:\n  hosts:\n    sbweb: {nixos_configuration: web}\n")
    args = ["-i", testhosts.inventory_path, "-i", str(inventory), "-e", "nixos_file=" + FLEET, "-l", "sbweb"]

    def deploy(inhibitors, extra=(), **more):
        values = dict(nixos_args={"overrides": {"web": {"switchInhibitors": inhibitors}}}, nixos_reboot_command=REBOOT_COMMAND)
        return run_playbook(SITE, args=args + ["-e", json.dumps(dict(values, **more))] + list(extra))

    run = deploy(DBUS)
    assert run.rc == 0, str(run)
    running = web.readlink("/run/current-system")
    assert web.generation() == 2 and running.endswith("-nixos-system-web-1")

    before = state(web)
    run = deploy(BROKER)  # nixos_reboot: never, the default
    assert run.rc != 0, str(run)
    msg = run.result("Switch to the new system", "sbweb")["msg"]
    assert "refuses a live switch: pre-switch check 'switchInhibitors' failed (dbus-implementation: dbus -> broker)" in msg
    assert state(web) == before

    # --check --diff: the plan says the host refuses, and what happens instead.
    run = deploy(BROKER, nixos_reboot="if_needed", extra=["--check", "--diff"])
    assert run.rc == 0 and "live switch refused: pre-switch check 'switchInhibitors' failed" in run.stdout, str(run)
    assert "would instead: boot it once, reboot, and make it the boot default" in run.stdout
    assert state(web) == before

    boot_id = web.boot_id()
    with testhosts.serve_reboots():
        run = deploy(BROKER, nixos_reboot="if_needed")
    assert run.rc == 0, str(run)
    inhibited = run.result("Switch to the new system", "sbweb")["system"]
    assert inhibited != running and web.boot_id() != boot_id
    assert web.readlink("/run/booted-system") == inhibited and web.readlink("/run/current-system") == inhibited
    # Confirmed: generation 3 is the profile's and the boot loader's default for every boot to come.
    assert web.generation() == 3 and web.default_boot_system() == inhibited and web.oneshot_boot_entry() is None
    web.reboot()
    assert web.readlink("/run/booted-system") == inhibited
