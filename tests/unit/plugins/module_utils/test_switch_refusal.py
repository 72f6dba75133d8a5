"""What nixos_switch reads from `switch-to-configuration check`: did the new system refuse a live switch, and why."""
import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.next_boot import boot_entry_id
from ansible_collections.ansinix.nixos.plugins.module_utils.switch import classify_pre_switch_check, refusal_reason

# What switch-to-configuration-ng prints when the switchInhibitors check of switchable-system.nix refuses.
INHIBITED = """Checking switch inhibitors...
There are changes to critical components of the system:

dbus-implementation : dbus -> broker
systemd : 258.1 -> 259

Switching into this system is not recommended.
You probably want to run 'nixos-rebuild boot' and reboot your system instead.

If you really want to switch into this configuration directly, then
you can set NIXOS_NO_CHECK=1 to ignore pre-switch checks.

WARNING: doing so might cause the switch to fail or your system to become unstable.

Pre-switch check 'switchInhibitors' failed
Pre-switch checks failed
"""


@pytest.mark.parametrize("rc,output,verdict", [
    (0, "", "passed"),
    (0, "Checking switch inhibitors... done\n", "passed"),
    (1, INHIBITED, "refused"),
    (11, INHIBITED, "refused"),  # stc-ng's die() exits with errno: the message counts, not the code
    (0, "Pre-switch checks failed\n", "refused"),
    # A system from before the check action: its usage lists none.
    (1, "Usage: /nix/store/x-nixos-system-a/bin/switch-to-configuration [switch|boot|test|dry-activate]\n\nswitch: ...", "unsupported"),
    (1, "Usage: /nix/store/x/bin/switch-to-configuration [check|switch|boot|test|dry-activate]\n", "error"),
    (11, "Could not acquire lock\n", "error"),
    (1, "This is not a NixOS installation!\n", "error"),
])
def test_classify_pre_switch_check(rc, output, verdict):
    assert classify_pre_switch_check(rc, output) == verdict


def test_refusal_reason_names_the_check_and_what_changed():
    assert refusal_reason(INHIBITED) == ("pre-switch check 'switchInhibitors' failed "
                                         "(dbus-implementation: dbus -> broker, systemd: 258.1 -> 259)")
    own = "Checking switch inhibitors... done\nthis system is for web9, not web1\nPre-switch check 'hostname' failed\n" \
          "Pre-switch checks failed\n"
    assert refusal_reason(own) == "pre-switch check 'hostname' failed (this system is for web9, not web1)"
    assert refusal_reason("Pre-switch check 'quiet' failed\nPre-switch checks failed\n") == "pre-switch check 'quiet' failed"
    assert refusal_reason("Pre-switch checks failed\n") == "its pre-switch checks failed"
    assert len(refusal_reason("x" * 5000 + "\nPre-switch check 'long' failed\n")) < 250


def test_boot_entry_id_is_the_name_nixos_gives_a_generation_s_entry():
    assert boot_entry_id("/nix/var/nix/profiles/system", 42) == "nixos-generation-42.conf"
    assert boot_entry_id("/nix/var/nix/profiles/system-profiles/lab", 3) == "nixos-lab-generation-3.conf"
