"""GRUB's one-time boot for a system that refuses a live switch: nixos_switch with on_refused_switch=boot sets
next_entry in every grubenv the system's GRUB installs (mirroredBoots), which NixOS's grub.cfg boots once and
clears; unconfirmed, the previous generation boots after that; confirmed, the new one stays the default.

The fixture systems with bootLoader = "grub" write grub.cfg and grubenv under each boot path as install-grub.pl
and grub-install do; the harness's reboot honours next_entry once, as that grub.cfg does.
"""
import json

import pytest

from ansinix_test.hosts import REBOOT_COMMAND
from test_nixos_switch import HOST, PROFILE, adhoc, show  # pylint: disable=import-error
from test_refused_switch import BROKER, DBUS, FLEET, SITE, system  # pylint: disable=import-error

MIRRORS = ["/boot", "/boot/mirror"]  # the second inside the host's own /boot (its / is shared)


def grub(version, **knobs):
    return system(version, bootLoader="grub", bootPaths=MIRRORS, **knobs)


@pytest.fixture
def host(fresh_hosts, run_ansible):
    """A GRUB host with two mirrored boot paths, running a system with switch inhibitors (generation 2)."""
    (h,) = fresh_hosts(HOST)
    h.run("mkdir -p /boot/mirror")
    running = grub(2, switchInhibitors=DBUS)
    h.import_closure(running)
    proc, result = adhoc(run_ansible, "path=%s install_bootloader=true" % running)
    assert proc.returncode == 0 and result["changed"], show(proc)
    assert h.readlink("/run/current-system") == running and h.generation() == 2
    assert h.default_boot_system() == running and h.oneshot_boot_entry() is None
    return h


def boot_once(host, run_ansible):
    running, inhibited = host.readlink("/run/current-system"), grub(3, switchInhibitors=BROKER)
    host.import_closure(inhibited)
    proc, result = adhoc(run_ansible, "path=%s on_refused_switch=boot" % inhibited)
    assert proc.returncode == 0 and result["changed"] and result["boot_once"] and result["reboot_required"], show(proc)
    entry = result["boot_once_entry"]
    assert entry.startswith("NixOS - All configurations>NixOS - Configuration 3 (") and result["boot_once_generation"] == 3
    # Nothing activated; generation 2 stays the profile's and GRUB's default; every mirror's grubenv names
    # generation 3 for the next boot only, in GRUB's 1024-byte format.
    assert host.readlink("/run/current-system") == running and host.generation() == 2
    assert host.readlink(PROFILE + "-3-link") == inhibited and host.default_boot_system() == running
    for boot in MIRRORS:
        assert host.grubenv(boot + "/grub/grubenv") == {"next_entry": entry}
        assert host.run("wc -c < %s/grub/grubenv" % boot).stdout.strip() == "1024"
        assert host.run("head -n 1 %s/grub/grubenv" % boot).stdout == "# GRUB Environment Block\n"
    assert host.grub_menu()[entry] == inhibited
    host.reboot()  # GRUB boots next_entry and clears it
    assert host.readlink("/run/booted-system") == inhibited and host.oneshot_boot_entry() is None
    return running, inhibited


def test_unconfirmed_the_previous_generation_boots_after_the_one_time_boot(host, run_ansible):
    running, _inhibited = boot_once(host, run_ansible)
    host.reboot()
    assert host.readlink("/run/booted-system") == running and host.readlink("/run/current-system") == running
    assert host.generation() == 2


def test_confirmed_the_new_generation_stays_the_default(host, run_ansible):
    _running, inhibited = boot_once(host, run_ansible)
    proc, result = adhoc(run_ansible, "generation=3 action=boot")
    assert proc.returncode == 0 and result["changed"], show(proc)
    assert host.generation() == 3 and host.default_boot_system() == inhibited
    host.reboot()
    assert host.readlink("/run/booted-system") == inhibited and host.generation() == 3


def test_a_mirror_whose_grubenv_cannot_be_written_fails_and_leaves_no_one_time_entry(host, run_ansible):
    running = host.readlink("/run/current-system")
    inhibited = grub(3, switchInhibitors=BROKER)
    host.import_closure(inhibited)
    host.run("rm /boot/mirror/grub/grubenv && mkdir /boot/mirror/grub/grubenv")  # grub-editenv cannot write it
    proc, result = adhoc(run_ansible, "path=%s on_refused_switch=boot" % inhibited)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, show(proc)
    assert "could not set GRUB's next_entry in /boot/mirror/grub/grubenv" in result["msg"], result["msg"]
    assert result["rolled_back"] and not result["boot_once"]
    # Fail closed: the one mirror that took next_entry lost it again; generation 2 is what runs and boots.
    assert host.readlink("/run/current-system") == running and host.generation() == 2
    assert host.default_boot_system() == running and host.oneshot_boot_entry() is None
    assert "next_entry" not in host.grubenv("/boot/grub/grubenv")


def test_the_role_reboots_a_grub_host_into_the_refused_system_and_confirms_it(fresh_hosts, testhosts, run_playbook, tmp_path):
    (web,) = fresh_hosts("goweb")
    inventory = tmp_path / "web.yml"
    inventory.write_text("all:\n  hosts:\n    goweb: {nixos_configuration: web}\n")
    args = ["-i", testhosts.inventory_path, "-i", str(inventory), "-e", "nixos_file=" + FLEET, "-l", "goweb"]

    def deploy(inhibitors):
        knobs = {"switchInhibitors": inhibitors, "bootLoader": "grub", "bootPaths": MIRRORS}
        values = dict(nixos_args={"overrides": {"web": knobs}}, nixos_reboot_command=REBOOT_COMMAND, nixos_reboot="if_needed")
        return run_playbook(SITE, args=args + ["-e", json.dumps(values)])

    run = deploy(DBUS)
    assert run.rc == 0, str(run)
    running = web.readlink("/run/current-system")
    assert web.generation() == 2 and web.default_boot_system() == running

    boot_id = web.boot_id()
    with testhosts.serve_reboots():
        run = deploy(BROKER)
    assert run.rc == 0, str(run)
    inhibited = run.result("Switch to the new system", "goweb")["system"]
    assert inhibited != running and web.boot_id() != boot_id
    # GRUB booted the new system once; the role confirmed it: generation 3 is GRUB's default from now on.
    assert web.readlink("/run/booted-system") == inhibited and web.readlink("/run/current-system") == inhibited
    assert web.generation() == 3 and web.default_boot_system() == inhibited
    assert "next_entry" not in web.grubenv("/boot/grub/grubenv")
    web.reboot()
    assert web.readlink("/run/booted-system") == inhibited
