"""Profiles, systems, unit lists, closure diffs and nixos_switch's decisions, on files in a temp dir."""
import os

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError
from ansible_collections.ansinix.nixos.plugins.module_utils.nixos import (
    Profile, check_system, closure_diff, format_closure_diff, parse_units, reboot_required,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.switch import command_path_for_later, up_to_date, validate_params

H = "8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc"


def make_profile(tmp_path, numbers, current):
    """A profile whose generation N points at tmp_path/systems/sN."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for n in numbers:
        system = tmp_path / "systems" / ("s%d" % n)
        system.mkdir(parents=True)
        os.symlink(str(system), str(profiles / ("system-%d-link" % n)))
    os.symlink("system-%d-link" % current, str(profiles / "system"))
    return Profile(str(profiles / "system"))


def test_profile_generations_current_and_previous(tmp_path):
    profile = make_profile(tmp_path, [1, 3, 7], current=7)
    assert profile.generations() == {n: str(tmp_path / "systems" / ("s%d" % n)) for n in (1, 3, 7)}
    assert profile.current_generation() == 7 and profile.previous_generation() == 3
    assert profile.current_path() == str(tmp_path / "systems" / "s7")
    # After a rollback to 3, the one before is 1; nothing is before 1.
    os.unlink(profile.path)
    os.symlink("system-3-link", profile.path)
    assert profile.previous_generation() == 1
    os.unlink(profile.path)
    os.symlink("system-1-link", profile.path)
    assert profile.previous_generation() is None


def test_profile_ignores_other_profiles_in_the_same_directory(tmp_path):
    profile = make_profile(tmp_path, [1, 2], current=2)
    os.symlink(str(tmp_path), str(tmp_path / "profiles" / "system-profiles-9-link"))
    os.symlink(str(tmp_path), str(tmp_path / "profiles" / "default-4-link"))
    assert sorted(profile.generations()) == [1, 2]


def test_missing_profile_has_no_generations(tmp_path):
    profile = Profile(str(tmp_path / "nowhere" / "system"))
    assert profile.generations() == {} and profile.current_generation() is None and profile.previous_generation() is None


def test_check_system_and_specialisations(tmp_path):
    system = tmp_path / "system"
    (system / "bin").mkdir(parents=True)
    with pytest.raises(NixError, match="is not a NixOS system: it has no bin/switch-to-configuration"):
        check_system(str(system))
    (system / "bin" / "switch-to-configuration").write_text("#!/bin/sh\n")
    assert check_system(str(system)) == str(system)
    with pytest.raises(NixError, match=r"has no specialisation 'gpu' \(it has: none\)"):
        check_system(str(system), "gpu")
    spec = system / "specialisation" / "maintenance" / "bin"
    spec.mkdir(parents=True)
    (spec / "switch-to-configuration").write_text("#!/bin/sh\n")
    assert check_system(str(system), "maintenance") == str(system / "specialisation" / "maintenance")
    with pytest.raises(NixError, match=r"it has: maintenance"):
        check_system(str(system), "gpu")


def test_parse_units_of_the_rust_switch_to_configuration():
    out = "\n".join([
        "stopping the following units: old.service",
        "NOT restarting the following changed units: systemd-journald.service",
        "activating the configuration...",
        "setting up /etc...",
        "restarting systemd...",
        "reloading user units for alice...",
        "reloading the following units: dbus.service, firewall.service",
        "restarting the following units: nginx.service",
        "starting the following units: new.service",
        "the following new units were started: run-credentials.mount, new.service",
        "warning: the following units failed: nginx.service",
    ])
    assert parse_units(out) == {
        "stopped": ["old.service"], "reloaded": ["dbus.service", "firewall.service"], "restarted": ["nginx.service"],
        "started": ["new.service", "run-credentials.mount"], "failed": ["nginx.service"],
    }
    assert parse_units("") == {"stopped": [], "reloaded": [], "restarted": [], "started": [], "failed": []}
    dry = parse_units("would restart the following units: nginx.service\nrestarting the following units: x\n", dry=True)
    assert dry["restarted"] == ["nginx.service"]


def test_reboot_required_compares_kernel_initrd_and_modules(tmp_path):
    def system(name, kernel, initrd, modules):
        d = tmp_path / name
        d.mkdir()
        for part, target in (("kernel", kernel), ("initrd", initrd), ("kernel-modules", modules)):
            (tmp_path / target).mkdir(exist_ok=True)
            os.symlink(str(tmp_path / target), str(d / part))
        return str(d)
    booted = system("booted", "k1", "i1", "m1")
    assert reboot_required(system("same", "k1", "i1", "m1"), booted=booted) is False
    assert reboot_required(system("new-kernel", "k2", "i1", "m1"), booted=booted) is True
    assert reboot_required(system("new-initrd", "k1", "i2", "m1"), booted=booted) is True
    assert reboot_required(system("new-modules", "k1", "i1", "m2"), booted=booted) is True
    assert reboot_required(system("other", "k2", "i2", "m2"), booted=str(tmp_path / "not-booted")) is False


def test_closure_diff_by_package_name():
    old = ["/nix/store/%s-%s" % (H, n) for n in ("nginx-1.24.0", "openssl-3.0.13", "dbus-1.14", "etc", "nixos-system-web1-1")]
    new = ["/nix/store/%s-%s" % (H, n) for n in ("nginx-1.25.0", "openssl-3.0.13", "redis-7.2.4", "etc", "nixos-system-web1-2",
                                                 "hello-2.12.drv")]
    diff = closure_diff(old, new)
    assert diff == {"added": {"redis": ["7.2.4"]}, "removed": {"dbus": ["1.14"]},
                    "changed": {"nginx": ["1.24.0", "1.25.0"], "nixos-system-web1": ["1", "2"]}}
    assert format_closure_diff(diff) == ("~ nginx: 1.24.0 -> 1.25.0\n~ nixos-system-web1: 1 -> 2\n"
                                         "+ redis 7.2.4\n- dbus 1.14\n")
    assert format_closure_diff(closure_diff(old, old)) == ""


def test_command_path_for_later_keeps_the_name_nix_picks_its_personality_by(tmp_path):
    store_bin = tmp_path / "store" / "nix-2.18" / "bin"
    store_bin.mkdir(parents=True)
    (store_bin / "nix").write_text("#!/bin/sh\n")
    os.symlink("nix", str(store_bin / "nix-env"))
    system_bin = tmp_path / "system-path" / "bin"
    system_bin.mkdir(parents=True)
    os.symlink(str(store_bin / "nix-env"), str(system_bin / "nix-env"))
    current = tmp_path / "current-system"
    os.symlink(str(tmp_path / "system-path"), str(current))
    # /run/current-system/sw/bin/nix-env -> the store's nix-env, not on to `nix`.
    assert command_path_for_later(str(current / "bin" / "nix-env")) == str(store_bin / "nix-env")
    assert command_path_for_later("/usr/bin/true") == os.path.join(os.path.realpath("/usr/bin"), "true")


def params(**over):
    base = dict(path=None, rollback=False, generation=None, action="switch", confirm_timeout=30, lock_timeout=300,
                activation_timeout=1800, keep_generations=None, specialisation=None)
    base.update(over)
    return base


@pytest.mark.parametrize("over,message", [
    ({}, "give exactly one of path, rollback=true or generation (got: none)"),
    ({"path": "/nix/store/x", "rollback": True}, "(got: path, rollback)"),
    ({"rollback": True, "generation": 3}, "(got: rollback, generation)"),
    ({"rollback": True, "confirm_timeout": -1}, "confirm_timeout must be 0 or more seconds, not -1"),
    ({"rollback": True, "lock_timeout": -5}, "lock_timeout must be 0 or more seconds"),
    ({"rollback": True, "keep_generations": 0}, "keep_generations must be 1 or more"),
    ({"generation": 0}, "generation must be a generation number (1 or more), not 0"),
    ({"rollback": True, "specialisation": "../etc"}, "specialisation must be the name of one"),
])
def test_bad_option_values_are_refused_with_a_message(over, message):
    with pytest.raises(NixError) as err:
        validate_params(params(**over))
    assert message in err.value.msg


def test_good_option_values_pass():
    validate_params(params(path="/nix/store/x", keep_generations=1, confirm_timeout=0))
    validate_params(params(generation=4, specialisation="maintenance"))


@pytest.mark.parametrize("action,profile,current,expected", [
    ("switch", "S", "S", True),
    ("switch", "S", "OLD", False),   # active elsewhere
    ("switch", "OLD", "S", False),   # active, but not the boot default (after a `test`)
    ("boot", "S", "OLD", True),
    ("boot", "OLD", "S", False),
    ("test", "OLD", "S", True),
    ("test", "S", "OLD", False),
    ("dry-activate", "S", "S", False),
])
def test_up_to_date(action, profile, current, expected):
    assert up_to_date(action, profile, current, "S", "S") is expected


def test_up_to_date_with_a_specialisation_compares_what_runs():
    assert up_to_date("switch", "S", "S/specialisation/m", "S", "S/specialisation/m") is True
    assert up_to_date("switch", "S", "S", "S", "S/specialisation/m") is False
