"""Consent to reset and wipe servers: names from -e only, never from the inventory, never 'all'."""
import pytest

from ansible_collections.ansinix.nixos.plugins.filter.reinstall_consent import NOT_GIVEN, reinstall_consent

HOSTS = ["web1", "web2", "dedi1"]


@pytest.mark.parametrize("given, hosts", [
    ("web1", ["web1"]),
    ("web1,web2", ["web1", "web2"]),
    (" web1 , dedi1 ,", ["web1", "dedi1"]),
    (["web2"], ["web2"]),
    ("", []),
])
def test_names_given_with_extra_vars(given, hosts):
    # An extra var: the role and hostvars see the same value.
    assert reinstall_consent(given, given, HOSTS) == {"hosts": hosts, "error": ""}


def test_no_consent():
    assert reinstall_consent(NOT_GIVEN, NOT_GIVEN, HOSTS) == {"hosts": [], "error": ""}


@pytest.mark.parametrize("seen, inventory, words", [
    # Set in host_vars or group_vars: the role's vars/ hide it from the role, hostvars still hold it.
    (NOT_GIVEN, "web1", "is set in the inventory"),
    (NOT_GIVEN, ["web1"], "is set in the inventory"),
    # A role parameter or play variable: the role sees it, hostvars do not.
    ("web1", NOT_GIVEN, "must be given on the command line"),
    ("all", "all", "'all' is not accepted"),
    ("web1,all", "web1,all", "'all' is not accepted"),
    ("web1,web9", "web1,web9", "names web9, not a host of the inventory"),
    ("nixos", "nixos", "names nixos, not a host of the inventory"),
    ({"web1": True}, {"web1": True}, "must be inventory host names"),
    ([1], [1], "must be inventory host names"),
    (True, True, "must be inventory host names"),
])
def test_refused_with_one_line(seen, inventory, words):
    result = reinstall_consent(seen, inventory, HOSTS)
    assert result["hosts"] == [] and words in result["error"] and "\n" not in result["error"], result
    assert "nixos_bootstrap_reinstall" in result["error"]
