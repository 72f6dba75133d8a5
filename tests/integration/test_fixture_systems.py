"""The fixture systems behave like NixOS's interface, checked from outside the test hosts."""
import json
import subprocess

import pytest

from ansinix_test.systems import FLAKE_DIR, NIX_ENV, build_system, closure, nar_size

SYSTEM_PROFILE = "/nix/var/nix/profiles/system"


def stc(host, system, action, env="", check=False):
    return host.run("%s %s/bin/switch-to-configuration %s" % (env, system, action), check=check)


def set_profile(host, system):
    host.import_closure(system)
    host.run("nix-env -p %s --set %s" % (SYSTEM_PROFILE, system))


@pytest.fixture
def host(fresh_hosts):
    (web,) = fresh_hosts("fx1")
    return web


def test_booted_host_runs_its_system(host):
    base = build_system(name="base")
    assert host.readlink("/run/current-system") == base
    assert host.readlink("/run/booted-system") == base
    assert host.generation() == 1
    assert host.default_boot_system() == base
    assert "install_bootloader=1" in host.read_file("/boot/loader/ansinix-bootloader.log")
    assert sorted(host.run("ls /run/ansinix-units").stdout.split()) == ["dbus.service", "nginx.service", "sshd.service"]
    assert host.readlink("/etc/static") == base + "/etc"


def test_switch_activates_and_makes_boot_default(host):
    new = build_system(name="base", version="2", units={
        "sshd.service": "openssh 9.6", "nginx.service": "nginx 1.25", "dbus.service": "dbus 1.15", "redis.service": "redis 7"})
    set_profile(host, new)
    proc = stc(host, new, "switch")
    assert proc.returncode == 0, proc.stderr
    assert "reloading the following units: dbus.service" in proc.stderr
    assert "restarting the following units: nginx.service" in proc.stderr
    assert "starting the following units: redis.service" in proc.stderr
    assert host.readlink("/run/current-system") == new
    assert host.default_boot_system() == new
    assert sorted(host.run("ls /boot/loader/entries").stdout.split()) == ["nixos-generation-1.conf", "nixos-generation-2.conf"]
    assert host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()[-1].endswith("switch %s install_bootloader=0" % new)
    # switch-to-configuration never touches the profile itself.
    assert host.generation() == 2


def test_boot_changes_only_the_boot_default(host):
    base = build_system(name="base")
    new = build_system(name="base", version="boot")
    set_profile(host, new)
    proc = stc(host, new, "boot", env="NIXOS_INSTALL_BOOTLOADER=1")
    assert proc.returncode == 0 and proc.stderr == ""
    assert host.readlink("/run/current-system") == base
    assert host.default_boot_system() == new
    assert host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()[-1].endswith("boot %s install_bootloader=1" % new)


def test_test_activates_without_boot_entry(host):
    base = build_system(name="base")
    new = build_system(name="base", version="test")
    host.import_closure(new)
    log_before = host.read_file("/boot/loader/ansinix-bootloader.log")
    proc = stc(host, new, "test")
    assert proc.returncode == 0, proc.stderr
    assert host.readlink("/run/current-system") == new
    assert host.default_boot_system() == base
    assert host.read_file("/boot/loader/ansinix-bootloader.log") == log_before


def test_dry_activate_changes_nothing(host):
    base = build_system(name="base")
    new = build_system(name="base", version="dry", units={"sshd.service": "openssh 9.6", "nginx.service": "nginx 1.26"})
    host.import_closure(new)
    state = host.run("ls -l /run/ansinix-units /boot/loader; readlink /run/current-system").stdout
    proc = stc(host, new, "dry-activate")
    assert proc.returncode == 0
    assert "would stop the following units: dbus.service" in proc.stderr
    assert "would restart the following units: nginx.service" in proc.stderr
    assert host.run("ls -l /run/ansinix-units /boot/loader; readlink /run/current-system").stdout == state
    assert host.readlink("/run/current-system") == base


def test_usage_error_and_not_nixos(host, fresh_hosts):
    base = build_system(name="base")
    proc = stc(host, base, "reboot")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Usage: ") and "dry-activate" in proc.stderr
    (debian,) = fresh_hosts("fx2", fx2={"nixos": False, "system": None})
    debian.import_closure(base)
    proc = stc(debian, base, "switch")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "This is not a NixOS installation!"
    assert not debian.exists("/run/current-system")


def test_failing_units_exit_4(host):
    failing = build_system(name="base", version="fail", failUnits=["nginx.service"],
                           units={"sshd.service": "openssh 9.6", "nginx.service": "nginx 1.99", "dbus.service": "dbus 1.14"})
    host.import_closure(failing)
    proc = stc(host, failing, "switch")
    assert proc.returncode == 4
    assert "warning: the following units failed: nginx.service" in proc.stderr
    assert host.readlink("/run/current-system") == failing
    assert not host.exists("/run/ansinix-units/nginx.service")


def test_failing_activation_exits_2(host):
    broken = build_system(name="base", version="badact", failActivation=True)
    host.import_closure(broken)
    proc = stc(host, broken, "test")
    assert proc.returncode == 2
    assert "failActivation" in proc.stderr
    assert host.readlink("/run/current-system") == build_system(name="base")


def test_broken_ssh_knob_locks_out_new_logins_until_old_system_returns(host):
    base = build_system(name="base")
    broken = build_system(name="base", version="nossh", breakSsh=True)
    host.import_closure(broken)
    assert host.ssh(["true"]).returncode == 0
    assert stc(host, broken, "test").returncode == 0
    proc = host.ssh(["true"])
    assert proc.returncode == 255 and "Permission denied" in proc.stderr
    assert host.ssh(["true"], user="deploy").returncode == 255
    assert stc(host, base, "test").returncode == 0
    assert host.ssh(["hostname"]).stdout.strip() == "fx1"


def test_kernel_knob_needs_a_reboot(host):
    base = build_system(name="base")
    newer = build_system(name="base", kernelVersion="6.7.0")
    set_profile(host, newer)
    assert stc(host, newer, "switch").returncode == 0
    for part in ("kernel", "initrd", "kernel-modules"):
        assert host.readlink("/run/current-system/" + part) != host.readlink("/run/booted-system/" + part)
    assert host.readlink("/run/booted-system") == base
    host.reboot()
    assert host.readlink("/run/booted-system") == newer
    assert host.readlink("/run/current-system") == newer


def test_payload_and_shared_closure():
    small = build_system(name="pl", payloadMiB=3, payloadSeed="a")
    relabelled = build_system(name="pl", version="2", payloadMiB=3, payloadSeed="a")
    assert nar_size([small]) < 64 * 1024
    assert nar_size(closure(small)) >= 3 * 1048576
    shared = set(closure(small)) & set(closure(relabelled))
    assert nar_size(shared) >= 3 * 1048576
    # A new version label makes only a new toplevel and /etc (os-release names the version).
    new_paths = set(closure(relabelled)) - set(closure(small))
    assert sorted(p.split("-", 1)[1] for p in new_paths) == ["etc", "nixos-system-pl-2"]


def test_flake_exposes_nixos_configurations():
    proc = subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command flakes", "build", "--no-link", "--json",
         "path:%s#nixosConfigurations.failing.config.system.build.toplevel" % FLAKE_DIR],
        capture_output=True, text=True, env=NIX_ENV, check=True)
    out = json.loads(proc.stdout)[0]["outputs"]["out"]
    assert out.endswith("-nixos-system-failing-1")
    with open(out + "/etc/systemd/system/nginx.service", encoding="utf-8") as f:
        assert "X-Fixture-Fails=true" in f.read()
