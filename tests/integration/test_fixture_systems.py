"""The fixture systems behave like NixOS's interface, checked from outside the test hosts.

Each test starts from a fresh host booted into the base system (generation 1) and drives
switch-to-configuration through the harness (as root in the host, not over SSH), then reads the
host's state: /run/current-system, the profile, /boot, the fake systemd's /run/ansinix-units.
"""
import gzip
import hashlib
import json
import os
import re
import subprocess

import pytest

from ansinix_test.systems import (
    FIXTURES_DIR, FLAKE_DIR, FLAKE_FEATURES, NIX_ENV, FixtureBuildError, build_flake_system, build_system,
    closure, nar_size,
)

PROFILE = "/nix/var/nix/profiles/system"
BASE_UNITS = ["dbus.service", "nginx.service", "sshd.service"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (switch|boot) (/nix/store/\S+) install_bootloader=([01])$")


def stc(host, system, action, env=""):
    return host.run("%s %s/bin/switch-to-configuration %s" % (env, system, action), check=False)


def set_profile(host, system):
    """What a deploy does before switch-to-configuration: the system becomes the profile's next generation."""
    host.import_closure(system)
    host.run("nix-env -p %s --set %s" % (PROFILE, system))


def profile_links(host):
    return host.run("ls -l /nix/var/nix/profiles | grep system || true").stdout


def unit_states(host):
    """The fake systemd's active units: name -> hash of the unit file it runs."""
    names = host.run("ls /run/ansinix-units 2>/dev/null || true").stdout.split()
    return {name: host.read_file("/run/ansinix-units/" + name).strip() for name in names}


def unit_hashes(system, names):
    """What unit_states must say once these units of system run."""
    hashes = {}
    for name in names:
        with open(os.path.join(system, "etc/systemd/system", name), "rb") as f:
            hashes[name] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def boot_entries(host):
    return sorted(host.run("ls /boot/loader/entries").stdout.split())


def loader_default(host):
    return re.search(r"^default (\S+)$", host.read_file("/boot/loader/loader.conf"), re.M).group(1)


def last_bootloader_run(host):
    match = LOG_LINE.match(host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()[-1])
    assert match, host.read_file("/boot/loader/ansinix-bootloader.log")
    return match.groups()


def expected_entry(system, generation):
    return ("title NixOS\nversion Generation %d %s\nlinux %s\ninitrd %s\noptions init=%s/init loglevel=4\nsort-key nixos\n"
            % (generation, open(system + "/nixos-version", encoding="utf-8").read(),
               os.path.realpath(system + "/kernel"), os.path.realpath(system + "/initrd"), system))


def in_order(text, lines):
    """True if every line is a whole line of text, in this order."""
    all_lines = text.splitlines()
    positions = [all_lines.index(line) if line in all_lines else -1 for line in lines]
    return -1 not in positions and positions == sorted(positions)


@pytest.fixture
def host(fresh_hosts):
    (fx,) = fresh_hosts("fx1")
    return fx


# -- booting ----------------------------------------------------------------------------------------

def test_booted_host_runs_its_system(host):
    base = build_system(name="base")
    assert host.readlink("/run/current-system") == base
    assert host.readlink("/run/booted-system") == base
    assert host.generation() == 1 and host.readlink(PROFILE + "-1-link") == base
    assert boot_entries(host) == ["nixos-generation-1.conf"]
    assert host.read_file("/boot/loader/entries/nixos-generation-1.conf") == expected_entry(base, 1)
    assert loader_default(host) == "nixos-generation-1.conf"
    assert last_bootloader_run(host) == ("boot", base, "1")
    assert host.exists("/boot/EFI/systemd/systemd-bootx64.efi")
    assert unit_states(host) == unit_hashes(base, BASE_UNITS)
    assert host.readlink("/etc/static") == base + "/etc"
    assert host.readlink("/nix/var/nix/gcroots/current-system") == "/run/current-system"
    assert host.read_file("/etc/ssh/authorized_keys.d/root") == host.read_file("/etc/ssh/authorized_keys.harness/root")


# -- the four actions -------------------------------------------------------------------------------

def test_switch_stops_reloads_restarts_starts_and_makes_the_boot_default(host):
    base = build_system(name="base")
    with_cron = build_system(name="base", version="cron", units={
        "sshd.service": "openssh 9.6", "nginx.service": "nginx 1.24", "dbus.service": "dbus 1.14", "cron.service": "cron 3"})
    host.import_closure(with_cron)
    proc = stc(host, with_cron, "test")
    assert proc.returncode == 0, proc.stderr
    assert in_order(proc.stderr, ["activating the configuration...", "starting the following units: cron.service",
                                  "the following new units were started: cron.service"]), proc.stderr
    assert "restarting" not in proc.stderr and "reloading" not in proc.stderr

    new = build_system(name="base", version="2", units={
        "sshd.service": "openssh 9.6", "nginx.service": "nginx 1.25", "dbus.service": "dbus 1.15", "redis.service": "redis 7"})
    set_profile(host, new)
    profile_before = profile_links(host)
    proc = stc(host, new, "switch")
    assert proc.returncode == 0, proc.stderr
    assert in_order(proc.stderr, [
        "stopping the following units: cron.service",
        "activating the configuration...",
        "reloading the following units: dbus.service",
        "restarting the following units: nginx.service",
        "starting the following units: redis.service",
        "the following new units were started: redis.service",
    ]), proc.stderr
    assert "setting up /etc..." in proc.stdout.splitlines()
    assert host.readlink("/run/current-system") == new
    assert host.readlink("/run/booted-system") == base
    assert host.readlink("/etc/static") == new + "/etc"
    assert unit_states(host) == unit_hashes(new, ["dbus.service", "nginx.service", "redis.service", "sshd.service"])
    # The boot loader: an entry per generation, the new one the default.
    assert boot_entries(host) == ["nixos-generation-1.conf", "nixos-generation-2.conf"]
    assert host.read_file("/boot/loader/entries/nixos-generation-2.conf") == expected_entry(new, 2)
    assert host.read_file("/boot/loader/entries/nixos-generation-1.conf") == expected_entry(base, 1)
    assert loader_default(host) == "nixos-generation-2.conf"
    assert host.default_boot_system() == new
    assert last_bootloader_run(host) == ("switch", new, "0")
    # switch-to-configuration never touches the profile itself.
    assert profile_links(host) == profile_before and host.generation() == 2


def test_boot_changes_only_the_boot_default(host):
    base = build_system(name="base")
    new = build_system(name="base", version="boot")
    set_profile(host, new)
    units_before = unit_states(host)
    proc = stc(host, new, "boot", env="NIXOS_INSTALL_BOOTLOADER=1")
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""
    assert host.readlink("/run/current-system") == base
    assert host.readlink("/etc/static") == base + "/etc"
    assert unit_states(host) == units_before
    assert loader_default(host) == "nixos-generation-2.conf" and host.default_boot_system() == new
    assert last_bootloader_run(host) == ("boot", new, "1")
    # Entries follow the profile: a deleted generation loses its entry at the next run.
    host.run("nix-env -p %s --delete-generations 1" % PROFILE)
    assert stc(host, new, "boot").returncode == 0
    assert boot_entries(host) == ["nixos-generation-2.conf"]
    assert last_bootloader_run(host) == ("boot", new, "0")


def test_mirrored_boot_paths_each_get_the_loader_and_every_entry(host):
    """bootPaths (GRUB's mirroredBoots): the same loader and entries go to each path; a path that lacks the loader
    gets it without NIXOS_INSTALL_BOOTLOADER, as install-grub.pl installs where its state file is missing."""
    base = build_system(name="base")
    new = build_system(name="base", version="mirrored", bootPaths=["/boot", "/boot/mirror"])
    set_profile(host, new)
    host.run("rm -rf /boot/mirror")
    assert stc(host, new, "switch").returncode == 0
    for path in ("/boot", "/boot/mirror"):
        assert host.read_file(path + "/EFI/BOOT/BOOTX64.EFI") == "systemd-boot (fixture)\n"
        assert sorted(host.run("ls %s/loader/entries" % path).stdout.split()) == ["nixos-generation-1.conf", "nixos-generation-2.conf"]
        assert host.read_file(path + "/loader/entries/nixos-generation-1.conf") == expected_entry(base, 1)
        assert host.read_file(path + "/loader/entries/nixos-generation-2.conf") == expected_entry(new, 2)
        assert re.search(r"^default nixos-generation-2.conf$", host.read_file(path + "/loader/loader.conf"), re.M)
    assert host.read_file("/boot/mirror/loader/ansinix-bootloader.log").split()[-1] == "install_bootloader=1"
    assert last_bootloader_run(host) == ("switch", new, "0")


def test_test_activates_without_touching_the_boot_loader(host):
    base = build_system(name="base")
    new = build_system(name="base", version="test", units={"sshd.service": "openssh 9.6", "nginx.service": "nginx 1.25"})
    host.import_closure(new)
    boot_before = host.run("find /boot -type f | sort | xargs sha256sum").stdout
    proc = stc(host, new, "test")
    assert proc.returncode == 0, proc.stderr
    assert "stopping the following units: dbus.service" in proc.stderr.splitlines()
    assert "restarting the following units: nginx.service" in proc.stderr.splitlines()
    assert host.readlink("/run/current-system") == new
    assert unit_states(host) == unit_hashes(new, ["nginx.service", "sshd.service"])
    assert host.run("find /boot -type f | sort | xargs sha256sum").stdout == boot_before
    assert host.default_boot_system() == base


def test_dry_activate_says_what_would_happen_and_changes_nothing(host):
    new = build_system(name="base", version="dry", units={
        "sshd.service": "openssh 9.6", "nginx.service": "nginx 1.26", "redis.service": "redis 7"})
    host.import_closure(new)
    snapshot = ("find /run/ansinix-units /run/current-system /etc/static /etc/ssh/authorized_keys.d /boot "
                "/nix/var/nix/profiles -printf '%p %l %s %T@\\n' | sort; cat /run/ansinix-units/*")
    before = host.run(snapshot).stdout
    proc = stc(host, new, "dry-activate")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "would stop the following units: dbus.service",
        "would activate the configuration...",
        "would restart the following units: nginx.service",
        "would start the following units: redis.service",
    ]
    assert host.run(snapshot).stdout == before


# -- refusing -------------------------------------------------------------------------------------

def test_usage_error_and_not_nixos(host, fresh_hosts):
    base = build_system(name="base")
    for bad in ("reboot", ""):
        proc = stc(host, base, bad)
        assert proc.returncode == 1
        # switch-to-configuration-ng's usage, which lists `check` first.
        assert proc.stderr.splitlines()[0] == "Usage: %s/bin/switch-to-configuration [check|switch|boot|test|dry-activate]" % base
        assert "dry-activate: show what would be done if this configuration were activated" in proc.stderr
    (debian,) = fresh_hosts("fx2", fx2={"nixos": False, "system": None})
    debian.import_closure(base)
    for action in ("switch", "boot", "test", "dry-activate"):
        proc = stc(debian, base, action)
        assert (proc.returncode, proc.stderr) == (1, "This is not a NixOS installation!\n")
    assert not debian.exists("/run/current-system") and not debian.exists("/boot/loader")
    assert not debian.exists("/etc/static")


def test_pre_switch_checks_refuse_before_anything_changes_unless_nixos_no_check(host):
    # As NixOS's system.preSwitchChecks: each gets the new system and the action; the first that fails is named,
    # and switch-to-configuration says "Pre-switch checks failed" and exits before the boot loader or activation.
    refusing = build_system(name="base", version="psc", preSwitchChecks={
        "args": 'echo "got $1 $2"', "zz-hostname": "echo 'not this host'; false"})
    host.import_closure(refusing)
    before = (host.readlink("/run/current-system"), boot_entries(host), loader_default(host), unit_states(host))
    for action in ("check", "switch", "boot", "test", "dry-activate"):
        proc = stc(host, refusing, action)
        assert proc.returncode == 1, (action, proc.stderr)
        assert proc.stderr.splitlines() == ["got %s %s" % (refusing, action), "not this host",
                                            "Pre-switch check 'zz-hostname' failed", "Pre-switch checks failed"]
    assert (host.readlink("/run/current-system"), boot_entries(host), loader_default(host), unit_states(host)) == before
    proc = stc(host, refusing, "test", env="NIXOS_NO_CHECK=1")
    assert proc.returncode == 0 and "Pre-switch" not in proc.stderr and host.readlink("/run/current-system") == refusing
    assert stc(host, build_system(name="base"), "check").returncode == 0  # no checks: `check` passes, says nothing


def test_switch_inhibitors_refuse_a_live_switch_not_a_boot(host):
    # As system.switch.inhibitors: a value that changed against the running system refuses switch, test and check
    # with NixOS's message; boot and dry-activate skip the check; names only one side has do not count.
    dbus = build_system(name="base", version="inh1", switchInhibitors={"dbus-implementation": "dbus", "systemd": "258"})
    broker = build_system(name="base", version="inh2",
                          switchInhibitors={"dbus-implementation": "broker", "systemd": "258", "new-one": "x"})
    for path in (dbus, broker):
        host.import_closure(path)
    assert host.read_file(broker + "/switch-inhibitors") == '{"dbus-implementation":"broker","new-one":"x","systemd":"258"}'
    proc = stc(host, dbus, "test")  # the running base system lists none
    assert proc.returncode == 0 and "Checking switch inhibitors... done" in proc.stderr, proc.stderr
    for action in ("check", "switch", "test"):
        proc = stc(host, broker, action)
        assert proc.returncode == 1, (action, proc.stderr)
        assert in_order(proc.stderr, ["Checking switch inhibitors...", "There are changes to critical components of the system:",
                                      "dbus-implementation : dbus -> broker",
                                      "You probably want to run 'nixos-rebuild boot' and reboot your system instead.",
                                      "you can set NIXOS_NO_CHECK=1 to ignore pre-switch checks.",
                                      "Pre-switch check 'switchInhibitors' failed", "Pre-switch checks failed"]), proc.stderr
        assert "new-one" not in proc.stderr and "systemd :" not in proc.stderr
    assert host.readlink("/run/current-system") == dbus
    proc = stc(host, broker, "dry-activate")
    assert proc.returncode == 0 and "Not checking switch inhibitors (action = dry-activate)" in proc.stderr
    set_profile(host, broker)
    proc = stc(host, broker, "boot")
    assert proc.returncode == 0 and "Not checking switch inhibitors (action = boot)" in proc.stderr
    assert host.readlink("/run/current-system") == dbus and loader_default(host).endswith(".conf")
    host.reboot()
    assert host.readlink("/run/current-system") == broker
    assert stc(host, broker, "switch").returncode == 0


def test_bootctl_set_oneshot_boots_an_entry_once(host):
    base, other = build_system(name="base"), build_system(name="base", version="once")
    host.import_closure(other)
    set_profile(host, other)
    assert stc(host, other, "boot").returncode == 0
    set_profile(host, base)  # back to the previous generation as the default
    assert stc(host, base, "boot").returncode == 0
    entries = boot_entries(host)
    once = next(e for e in entries if host.entry_system(e) == other)
    proc = host.run("%s/sw/bin/bootctl set-oneshot %s" % (other, once), check=False)
    assert proc.returncode == 0 and host.oneshot_boot_entry() == once
    host.reboot()
    assert host.readlink("/run/booted-system") == other and host.oneshot_boot_entry() is None
    host.reboot()
    assert host.readlink("/run/booted-system") == base


def test_updating_a_boot_loader_that_was_never_installed_fails(fresh_hosts):
    (bare,) = fresh_hosts("fx2", fx2={"system": None})
    base = build_system(name="base")
    bare.import_closure(base)
    proc = stc(bare, base, "boot")
    assert proc.returncode == 1
    assert "could not find any previously installed systemd-boot" in proc.stderr
    assert not bare.exists("/boot/loader")
    # Installing it works; with no profile, the entry is named after the system's hash.
    proc = stc(bare, base, "boot", env="NIXOS_INSTALL_BOOTLOADER=1")
    assert proc.returncode == 0, proc.stderr
    entry = "nixos-%s.conf" % os.path.basename(base)[:32]
    assert boot_entries(bare) == [entry] and loader_default(bare) == entry
    assert bare.default_boot_system() == base
    assert not bare.exists("/run/current-system")


def test_a_second_switch_is_refused_at_once_while_a_switch_holds_the_lock(host):
    slow = build_system(name="base", version="slow", activationSeconds=4)
    new = build_system(name="base", version="locked")
    for system in (slow, new):
        host.import_closure(system)
    # A switch in progress (a nixos-rebuild on the host, say) holds the lock for its whole run; its activation
    # script, a command it starts, does not hold it.
    host.run("(%s/bin/switch-to-configuration test >/tmp/slow.out 2>&1; echo $? > /tmp/slow.rc) </dev/null >/dev/null 2>&1 & "
             "until pgrep -f ' %s/activat[e] ' >/dev/null; do sleep 0.05; done" % (slow, slow))
    holders = host.run("for p in $(pgrep -f '%s/'); do ls -l /proc/$p/fd | grep -q switch-to-configuration.lock "
                       "&& cat /proc/$p/cmdline | tr '\\0' ' ' && echo; done; true" % slow).stdout.splitlines()
    assert len(holders) == 1 and holders[0].endswith("/sh %s/bin/switch-to-configuration test " % slow), holders
    proc = host.run("t0=$(date +%%s%%N); %s/bin/switch-to-configuration test; rc=$?; "
                    "echo rc=$rc ms=$(( ($(date +%%s%%N) - t0) / 1000000 ))" % new, check=False)
    result = dict(kv.split("=") for kv in proc.stdout.split()[-2:])
    assert result["rc"] == "11" and proc.stderr == "Could not acquire lock\n", proc.stdout + proc.stderr
    assert int(result["ms"]) < 2000 and host.readlink("/run/current-system") != new
    host.run("until [ -e /tmp/slow.rc ]; do sleep 0.1; done")
    assert host.read_file("/tmp/slow.rc").strip() == "0" and host.readlink("/run/current-system") == slow
    assert stc(host, new, "test").returncode == 0 and host.readlink("/run/current-system") == new


# -- the failure knobs ------------------------------------------------------------------------------

def test_failing_units_exit_4_after_doing_everything_else(host):
    failing = build_system(name="base", version="fail", failUnits=["nginx.service", "redis.service"], units={
        "sshd.service": "openssh 9.6", "nginx.service": "nginx 1.99", "dbus.service": "dbus 1.15", "redis.service": "redis 7"})
    host.import_closure(failing)
    proc = stc(host, failing, "test")
    assert proc.returncode == 4
    lines = proc.stderr.splitlines()
    assert in_order(proc.stderr, [
        "activating the configuration...",
        "reloading the following units: dbus.service",
        "restarting the following units: nginx.service",
        "starting the following units: redis.service",
        "warning: the following units failed: nginx.service, redis.service",
        "× nginx.service - nginx.service (fixture)",
        "× redis.service - redis.service (fixture)",
    ]), proc.stderr
    assert "     Loaded: loaded (/etc/systemd/system/nginx.service; enabled; preset: enabled)" in lines
    assert any(re.match(r"^     Active: failed \(Result: exit-code\) since \w{3} [-\d]+ [:\d]+ UTC; 0s ago$", line) for line in lines)
    assert "the following new units were started" not in proc.stderr
    assert host.readlink("/run/current-system") == failing
    assert unit_states(host) == unit_hashes(failing, ["dbus.service", "sshd.service"])
    # As with NixOS, a unit that failed is tried again at the next switch, and fails again.
    proc = stc(host, failing, "test")
    assert proc.returncode == 4 and "warning: the following units failed: nginx.service, redis.service" in proc.stderr


def test_failing_activation_exits_2_and_the_rest_still_runs(host):
    broken = build_system(name="base", version="badact", failActivation=True)
    host.import_closure(broken)
    proc = stc(host, broken, "test")
    assert proc.returncode == 2
    assert "Activation script snippet 'fixtureFailActivation' failed (1)" in proc.stderr.splitlines()
    # As on NixOS, the rest of the activation ran: the system is current, its units run.
    assert host.readlink("/run/current-system") == broken
    assert host.readlink("/etc/static") == broken + "/etc"
    proc = host.run(broken + "/activate", check=False)
    assert proc.returncode == 1 and "failActivation" in proc.stderr


def test_broken_ssh_knob_locks_out_new_logins_until_a_normal_system_returns(host):
    base = build_system(name="base")
    broken = build_system(name="base", version="nossh", breakSsh=True)
    host.import_closure(broken)
    assert host.ssh(["true"]).returncode == 0
    # A connection opened before the activation lives on, as with a real sshd.
    ssh = ["ssh"] + host.hosts.ssh_options() + ["root@" + host.address, "--", "echo ready; read line; echo alive $line"]
    with subprocess.Popen(ssh, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as open_session:
        assert open_session.stdout.readline() == "ready\n"
        assert stc(host, broken, "test").returncode == 0
        out, _err = open_session.communicate("still-here\n", timeout=30)
    assert out.strip() == "alive still-here"
    assert host.run("ls -A /etc/ssh/authorized_keys.d").stdout == ""
    proc = host.ssh(["true"])
    assert proc.returncode == 255 and "Permission denied" in proc.stderr
    assert host.ssh(["true"], user="deploy").returncode == 255
    # Activating a normal system (through the harness, as SSH is gone) brings logins back.
    assert stc(host, base, "test").returncode == 0
    assert host.ssh(["hostname"]).stdout.strip() == "fx1"
    assert host.ssh(["sudo", "-n", "true"], user="deploy").returncode == 0


# -- kernel, specialisations, closures ------------------------------------------------------------

def test_kernel_knob_needs_a_reboot(host):
    base = build_system(name="base")
    newer = build_system(name="base", kernelVersion="6.7.0")
    set_profile(host, newer)
    boot_id = host.boot_id()
    assert stc(host, newer, "switch").returncode == 0
    for part in ("kernel", "initrd", "kernel-modules"):
        assert host.readlink("/run/current-system/" + part) != host.readlink("/run/booted-system/" + part)
    assert host.readlink("/run/booted-system") == base
    assert host.read_file("/boot/loader/entries/nixos-generation-2.conf") == expected_entry(newer, 2)
    host.reboot()
    assert host.boot_id() != boot_id
    assert host.readlink("/run/booted-system") == newer and host.readlink("/run/current-system") == newer
    assert unit_states(host) == unit_hashes(newer, BASE_UNITS)
    # Only the kernel's paths and the toplevel differ from the base system.
    changed = sorted(p.split("-", 1)[1] for p in set(closure(newer)) - set(closure(base)))
    assert changed == ["initrd-linux-6.7.0", "linux-6.7.0", "linux-6.7.0-modules", "nixos-system-base-1"]


def test_specialisations_inherit_and_get_boot_entries(host):
    system = build_system(name="base", version="spec", kernelVersion="6.7.0",
                          specialisations={"maint": {"units": {"sshd.service": "openssh 9.6"}}})
    spec = os.path.realpath(system + "/specialisation/maint")
    assert os.path.realpath(spec + "/kernel") == os.path.realpath(system + "/kernel")  # inherited
    with open(system + "/boot.json", encoding="utf-8") as f:
        assert json.load(f)["org.nixos.specialisation.v1"]["maint"]["org.nixos.bootspec.v1"]["toplevel"] == spec
    set_profile(host, system)
    proc = stc(host, spec, "switch")
    assert proc.returncode == 0, proc.stderr
    assert "stopping the following units: dbus.service, nginx.service" in proc.stderr.splitlines()
    assert host.readlink("/run/current-system") == spec
    assert boot_entries(host) == ["nixos-generation-1.conf", "nixos-generation-2-specialisation-maint.conf",
                                  "nixos-generation-2.conf"]
    assert loader_default(host) == "nixos-generation-2-specialisation-maint.conf"
    assert host.read_file("/boot/loader/entries/nixos-generation-2-specialisation-maint.conf").startswith("title NixOS (maint)\n")
    assert host.default_boot_system() == spec


def test_payload_and_shared_closures(host):
    small = build_system(name="pl", payloadMiB=3, payloadSeed="a")
    relabelled = build_system(name="pl", version="2", payloadMiB=3, payloadSeed="a")
    other_seed = build_system(name="pl", payloadMiB=3, payloadSeed="b")
    assert nar_size([small]) < 64 * 1024
    shared = set(closure(small)) & set(closure(relabelled))
    assert nar_size(shared) >= 3 * 1048576
    # A new version label makes only a new toplevel and /etc (os-release names the version).
    new_paths = set(closure(relabelled)) - set(closure(small))
    assert sorted(p.split("-", 1)[1] for p in new_paths) == ["etc", "nixos-system-pl-2"]
    assert os.path.realpath(small + "/payload") != os.path.realpath(other_seed + "/payload")
    # On the host: 3 MiB that no compression shrinks.
    host.import_closure(small)
    data = small + "/payload/data"
    assert host.stat(data)["size"] == 3 * 1048576
    assert len(gzip.compress(host.run("cat " + data, input=b"").stdout)) > 3 * 1048576


def test_packages_knob_shows_in_closure_diffs():
    base = build_system(name="base")
    upgraded = build_system(name="base", packages={"nginx": "1.26.0", "openssl": "3.0.13", "coreutils": "9.4", "htop": "3.3.0"})
    proc = subprocess.run(["nix"] + FLAKE_FEATURES + ["store", "diff-closures", base, upgraded],
                          capture_output=True, text=True, env=NIX_ENV, check=True)
    assert re.search(r"^htop: ∅ → 3\.3\.0", proc.stdout, re.M), proc.stdout
    assert re.search(r"^nginx: 1\.24\.0 → 1\.26\.0", proc.stdout, re.M), proc.stdout
    assert "openssl" not in proc.stdout
    assert sorted(os.listdir(upgraded + "/sw/bin")) == ["bootctl", "coreutils", "htop", "nginx", "openssl", "sh"]


# -- building -------------------------------------------------------------------------------------

def test_args_override_knobs_and_bad_knobs_are_named():
    def nix_build(*args):
        return subprocess.run(["nix-build", FIXTURES_DIR, "--no-out-link"] + list(args),
                              capture_output=True, text=True, env=NIX_ENV, check=False)
    direct = build_system(version="2")
    via_args = nix_build("--arg", "args", '{ version = "2"; nodes = { web1 = { }; }; }')
    assert via_args.stdout.strip() == direct
    both = nix_build("--argstr", "version", "1", "--arg", "args", '{ version = "2"; }')
    assert both.stdout.strip() == direct
    for knobs, message in (
            ({"verison": "2"}, "unknown knob(s) verison; the knobs are "),
            ({"failUnits": ["ngnix.service"]}, "failUnits names ngnix.service, which is not among its units"),
            ({"payloadMiB": "3"}, 'payloadMiB must be a whole number of MiB, not "3"'),
            ({"name": "web 1"}, "name must be a non-empty string"),
            ({"etcFiles": {"../shadow": "x"}}, "etcFiles paths must be relative to /etc"),
            ({"preSwitchChecks": {"host name": "true"}}, "preSwitchChecks must map check names"),
            ({"switchInhibitors": {"dbus": 'a"b'}}, "to strings without quotes, backslashes or commas")):
        with pytest.raises(FixtureBuildError) as error:
            build_system(**knobs)
        assert message in str(error.value) and "Traceback" not in str(error.value)


def test_flake_configurations_are_the_same_systems():
    web1 = build_flake_system("web1")
    assert web1 == build_system(name="web1", system="x86_64-linux")
    failing = build_flake_system("failing")
    with open(failing + "/etc/systemd/system/nginx.service", encoding="utf-8") as f:
        assert "X-Fixture-Fails=true" in f.read().splitlines()
    # What nix_build does with args for a flake: extendModules with ansinixArgs, extra data ignored.
    expr = ('((builtins.getFlake "path:%s").nixosConfigurations.web1.extendModules { modules = [ '
            '{ _module.args.ansinixArgs = { version = "7"; nodes = { }; }; } ]; }).config.system.build.toplevel.outPath'
            % FLAKE_DIR)
    proc = subprocess.run(["nix"] + FLAKE_FEATURES + ["eval", "--raw", "--impure", "--expr", expr],
                          capture_output=True, text=True, env=NIX_ENV, check=True)
    assert proc.stdout == build_system(name="web1", version="7", system="x86_64-linux")
