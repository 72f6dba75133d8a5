"""nixos_switch's shortcut for a host that already runs the system: the script's output and the decision.

The script runs over the task's own connection instead of the module; whenever it cannot be sure
(another deploy, a handover in flight, anything it cannot parse) the answer is None: run the module.
"""
import json

from ansible_collections.ansinix.nixos.plugins.module_utils import switch

SYSTEM = "/nix/store/25hvkkbz4ary5jnyxvis6jiz96553yx5-nixos-system-web1-2"
OLD = "/nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-1"
PROFILE = "/nix/var/nix/profiles/system"


def output(current=SYSTEM, profile=SYSTEM, link="system-7-link", lock=None, lock_status=None, booted=None, last=None):
    lines = []
    if lock is not None:
        lines.append("lock " + json.dumps(lock))
        if lock_status is not None:
            lines.append("lock_status " + json.dumps(lock_status))
    lines += ["current " + current, "profile " + profile, "profile_link " + link]
    if booted:
        lines.append("booted")
        for part, (old, new) in booted.items():
            lines += ["booted_%s %s" % (part, old), "new_%s %s" % (part, new)]
    if last:
        lines.append("last_status " + json.dumps(last[0], indent=1).replace("\n", ""))
        lines.append("last_params " + "".join(' "%s": "%s",' % kv for kv in sorted(last[1].items())))
    return "\n".join(lines + ["end"]) + "\n"


def test_an_up_to_date_host_gets_what_the_module_would_say():
    last = ({"state": "finished", "outcome": "done", "rc": 0, "confirmed": True, "log": "/var/log/ansinix/switch-1.log"},
            {"action": "switch", "system": SYSTEM})
    result = switch.up_to_date_result("switch", SYSTEM, PROFILE, output(last=last))
    assert result["changed"] is False and result["generation"] == 7
    assert result["previous"] == result["current"] == result["system"] == SYSTEM
    assert result["reboot_required"] is False and result["units"]["restarted"] == []
    assert result["last_activation"]["outcome"] == "done" and result["last_activation"]["system"] == SYSTEM
    assert result["last_activation"]["action"] == "switch"


def test_a_new_kernel_since_boot_is_reported():
    booted = {"kernel": ("/nix/store/a-linux/bzImage", "/nix/store/b-linux/bzImage"), "initrd": ("/x", "/x"),
              "kernel-modules": ("/y", "/y")}
    assert switch.up_to_date_result("switch", SYSTEM, PROFILE, output(booted=booted))["reboot_required"] is True


def test_anything_but_an_up_to_date_host_goes_to_the_module():
    assert switch.up_to_date_result("switch", SYSTEM, PROFILE, output(current=OLD)) is None
    assert switch.up_to_date_result("switch", SYSTEM, PROFILE, output(profile=OLD)) is None
    assert switch.up_to_date_result("test", SYSTEM, PROFILE, output(profile=OLD))["changed"] is False  # test leaves the profile
    # A switch handed to a runner that has not finished: the module waits for it.
    handover = {"handover": True, "status_dir": "/run/ansinix/switch-1"}
    assert switch.up_to_date_result("switch", SYSTEM, PROFILE, output(lock=handover, lock_status={"state": "activating"})) is None
    assert switch.up_to_date_result("switch", SYSTEM, PROFILE, output(lock=handover, lock_status={"state": "finished"})) is not None
    # Output cut short, or not what the script prints.
    assert switch.up_to_date_result("switch", SYSTEM, PROFILE, output().replace("end\n", "")) is None
    assert switch.up_to_date_result("switch", SYSTEM, PROFILE, "lock {not json\nend\n") is None


def test_the_script_quotes_what_it_is_given():
    script = switch.up_to_date_script("/nix/store/x-a b", "/nix/var/nix/profiles/my profile", require_nixos=False)
    assert "p='/nix/store/x-a b'; prof='/nix/var/nix/profiles/my profile'" in script
    assert "/etc/NIXOS" not in script
    script = switch.up_to_date_script(SYSTEM, PROFILE, require_nixos=True)
    assert "[ -e /etc/NIXOS ] || decide" in script and "decide() { exit 3; }" in script


def test_with_a_program_the_script_hands_over_where_it_cannot_decide_and_where_the_host_changes():
    script = switch.up_to_date_script(SYSTEM, PROFILE, require_nixos=True, action="boot", otherwise="exec python3 -")
    # The deploy lock's fd is closed first: the module takes that lock itself.
    assert "decide() { exec 9<&-; exec python3 -; }" in script
    assert '[ "$(readlink -f "$prof")" = "$p" ] || decide' in script and 'current-system)" = "$p" ] ||' not in script
