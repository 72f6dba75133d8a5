"""Store paths, error messages and closure diffs, without running nix."""
import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import (
    NixError, check_store_path, error_summary, split_name_version, store_path_name,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nixos import closure_diff, format_closure_diff, parse_units
from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import batches, choose_method, ssh_options
from ansible_collections.ansinix.nixos.plugins.module_utils.build import attribute, default_out_link, flake_reference, nix_string

GOOD = "/nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-24.05"


def test_store_path_accepted_and_normalised():
    assert check_store_path(GOOD) == GOOD
    assert check_store_path(GOOD + "/") == GOOD
    assert store_path_name(GOOD) == "nixos-system-web1-24.05"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "/nix/store/short-name", GOOD + "/bin/x",
                                 "/nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4we-ok",  # 'e' is not in Nix's base32
                                 "nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-x", None])
def test_store_path_rejected_with_a_message(bad):
    with pytest.raises(NixError) as err:
        check_store_path(bad)
    assert "store path" in err.value.msg


@pytest.mark.parametrize("name,expected", [
    ("openssl-3.0.13", ("openssl", "3.0.13")),
    ("nixos-system-web1-24.05", ("nixos-system-web1", "24.05")),
    ("linux-6.6.1-modules", ("linux", "6.6.1-modules")),
    ("etc", ("etc", "")),
    ("python3.11-requests-2.31.0", ("python3.11-requests", "2.31.0")),
])
def test_split_name_version_like_nix(name, expected):
    assert split_name_version(name) == expected


def test_error_summary_keeps_nix_message_and_position_drops_trace():
    stderr = (
        "\x1b[31;1merror:\x1b[0m undefined variable 'nosuchthing'\n\n"
        "       at /srv/fleet/web.nix:4:11:\n\n"
        "            3| {\n            4|   value = nosuchthing;\n"
        "       … while evaluating the attribute 'value'\n"
    )
    summary = error_summary(stderr)
    assert summary.startswith("error: undefined variable 'nosuchthing'")
    assert "/srv/fleet/web.nix:4:11" in summary
    assert "while evaluating" not in summary and "\x1b" not in summary


def test_parse_units_real_output():
    out = ("stopping the following units: a.service, b.service\nactivating the configuration...\n"
           "reloading the following units: dbus.service\nrestarting the following units: nginx.service\n"
           "starting the following units: redis.service\nwarning: the following units failed: redis.service\n")
    assert parse_units(out) == {"stopped": ["a.service", "b.service"], "reloaded": ["dbus.service"],
                                "restarted": ["nginx.service"], "started": ["redis.service"], "failed": ["redis.service"]}
    dry = parse_units("would stop the following units: x.service\nwould start the following units: y.service\n", dry=True)
    assert dry["stopped"] == ["x.service"] and dry["started"] == ["y.service"] and dry["restarted"] == []


def test_closure_diff():
    old = ["/nix/store/%s-%s" % ("a" * 32, n) for n in ("nginx-1.24.0", "openssl-3.0.13", "gone-1")]
    new = ["/nix/store/%s-%s" % ("b" * 32, n) for n in ("nginx-1.25.0", "openssl-3.0.13", "redis-7.2")]
    diff = closure_diff(old, new)
    assert diff == {"added": {"redis": ["7.2"]}, "removed": {"gone": ["1"]}, "changed": {"nginx": ["1.24.0", "1.25.0"]}}
    assert format_closure_diff(diff) == "~ nginx: 1.24.0 -> 1.25.0\n+ redis 7.2\n- gone 1\n"


def test_batches_keep_order_and_bound_size():
    paths = ["p%d" % i for i in range(5)]
    sizes = {"p0": 60, "p1": 60, "p2": 10, "p3": 200, "p4": 1}
    assert list(batches(paths, sizes, 100)) == [["p0"], ["p1", "p2"], ["p3"], ["p4"]]


def test_copy_method_choice_and_ssh_options():
    assert choose_method("auto", False) == "stream"
    assert choose_method("auto", True) == "ssh"
    assert choose_method("ssh", False) == "ssh"
    opts = ssh_options(2222, "/k", "-o UserKnownHostsFile=/kh", None, True)
    assert opts == ["-p", "2222", "-i", "/k", "-o", "UserKnownHostsFile=/kh", "-o", "BatchMode=yes"]
    assert "StrictHostKeyChecking=no" in ssh_options(host_key_checking=False)


def test_build_attribute_rules():
    assert attribute({"nixos_configuration": "web1"}) == "nixosConfigurations.web1.config.system.build.toplevel"
    assert attribute({"nixos_configuration": "web.example"}) == 'nixosConfigurations."web.example".config.system.build.toplevel'
    assert attribute({"attr": "packages.x86_64-linux.hello"}) == "packages.x86_64-linux.hello"
    with pytest.raises(NixError):
        attribute({"nixos_configuration": "web1; rm -rf /"})
    assert default_out_link({"nixos_configuration": "web1"}, "x") == "/nix/var/nix/gcroots/ansinix/web1"
    assert default_out_link({}, "") == "/nix/var/nix/gcroots/ansinix/result"
    assert flake_reference("/srv/fleet") == "path:/srv/fleet"
    assert flake_reference("github:me/fleet") == "github:me/fleet"
    assert nix_string('a"${b}') == '"a\\"\\${b}"'
