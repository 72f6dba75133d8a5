"""Store paths, error messages, closure diffs and nix_build's rules; nix itself only where it is the judge."""
import json
import os
import re
import subprocess

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import (
    Nix, NixError, build_log_tail, check_search_path, check_store_path, error_block, error_summary, failed_derivation,
    flat_directory_nar_hash, is_store_path, option_args, parse_version, split_name_version, store_path_name, version_tuple,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nixos import closure_diff, format_closure_diff, parse_units
from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import batches, choose_method, ssh_options
from ansible_collections.ansinix.nixos.plugins.module_utils.build import (
    attr_components, attribute, check_local_flake, default_gcroot_dir, default_out_link, flake_parts, flake_reference,
    nix_string, root_label,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix_source import SCAN_MAX_DEPTH, ansible_files_in, source_warning

GOOD = "/nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-26.11"


def test_store_path_accepted_and_normalised():
    assert check_store_path(GOOD) == GOOD
    assert check_store_path(GOOD + "/") == GOOD
    assert store_path_name(GOOD) == "nixos-system-web1-26.11"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "/nix/store/short-name", GOOD + "/bin/x",
                                 "/nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4we-ok",  # 'e' is not in Nix's base32
                                 "nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-x", None,
                                 GOOD + "\n", GOOD + "/\n", GOOD + "\n/"])
def test_store_path_rejected_with_a_message(bad):
    with pytest.raises(NixError) as err:
        check_store_path(bad)
    assert "store path" in err.value.msg


@pytest.mark.parametrize("name,expected", [
    ("openssl-3.0.13", ("openssl", "3.0.13")),
    ("nixos-system-web1-26.11", ("nixos-system-web1", "26.11")),
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
    # Each source gets its own directory of roots: two projects with a configuration `web1` keep two roots.
    one = default_out_link({"flake": "/srv/one/nix", "nixos_configuration": "web1"}, "", uid=0)
    two = default_out_link({"flake": "/srv/two/nix#x", "nixos_configuration": "web1"}, "", uid=0)
    assert re.fullmatch(r"/nix/var/nix/gcroots/ansinix/one-nix-[0-9a-f]{8}/web1", one), one
    assert re.fullmatch(r"/nix/var/nix/gcroots/ansinix/two-nix-[0-9a-f]{8}/web1", two), two
    assert default_out_link({"flake": "/srv/one/nix/", "nixos_configuration": "web1"}, "", uid=0) == one
    assert default_out_link({"file": "/srv/one/nix/default.nix"}, "nixosConfigurations.web1.config.system.build.toplevel",
                            uid=0) == one
    assert re.fullmatch(r"/nix/var/nix/gcroots/ansinix/me-fleet-[0-9a-f]{8}/web1",
                        default_out_link({"flake": "github:me/fleet", "nixos_configuration": "web1"}, "", uid=0))
    assert default_out_link({"flake": "github:me/../..", "nixos_configuration": "w"}, "", uid=0).startswith(
        "/nix/var/nix/gcroots/ansinix/source-")
    assert flake_reference("/srv/fleet") == "path:/srv/fleet"
    assert flake_reference("github:me/fleet") == "github:me/fleet"
    assert nix_string('a"${b}') == '"a\\"\\${b}"'


# -- nix.py: store paths ----------------------------------------------------------------------------------

def test_is_store_path():
    assert is_store_path(GOOD) and is_store_path(GOOD + "/")
    for bad in (GOOD + "/bin", "/nix/store/" + "a" * 32, "/nix/store/" + "a" * 32 + "-.hidden", "/nix/store/x-y", 42, None,
                "/nix/store/" + "a" * 32 + "-x y", GOOD + "\n", GOOD + "\n/"):
        assert not is_store_path(bad), bad


# -- nix.py: messages ------------------------------------------------------------------------------------

NIX_2_8_EVAL_ERROR = """error: undefined variable 'nosuchthing'

       at /srv/fleet/web.nix:4:11:

            3| {
            4|   value = nosuchthing;
             |           ^
            5| }.value
(use '--show-trace' to show detailed location information)
"""

# Newer Nix (2.13+): a bare "error:", the trace, and the real message last.
NEWER_NIX_EVAL_ERROR = """warning: Git tree '/srv/fleet' is dirty
error:
       \u2026 while calling the 'derivationStrict' builtin
         at /builtin/derivation.nix:9:12: (source not available)

       \u2026 while evaluating derivation 'nixos-system-web1-26.11'
         whose name attribute is located at /nix/store/abc-source/pkgs/stdenv/generic/make-derivation.nix:331:7

       error: undefined variable 'nosuchthing'
       at /srv/fleet/web.nix:4:11:
            3| {
            4|   value = nosuchthing;
             |           ^
            5| }
"""

NEWER_NIX_ASSERTIONS = """error:
       \u2026 while evaluating the attribute 'config.system.build.toplevel'

       error:
       Failed assertions:
       - The \u2018fileSystems\u2019 option does not specify your root file system.
"""

NIX_2_8_BUILD_FAILURE = """this derivation will be built:
  /nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv
building '/nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv'...
error: builder for '/nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv' failed with exit code 1;
       last 2 log lines:
       > compiling
       > this build fails on purpose
       For full logs, run 'nix log /nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv'.
"""


@pytest.mark.parametrize("stderr,expected", [
    (NIX_2_8_EVAL_ERROR, "error: undefined variable 'nosuchthing' at /srv/fleet/web.nix:4:11"),
    (NEWER_NIX_EVAL_ERROR, "error: undefined variable 'nosuchthing' at /srv/fleet/web.nix:4:11"),
    (NEWER_NIX_ASSERTIONS, "error: Failed assertions: - The \u2018fileSystems\u2019 option does not specify your root file system."),
    (NIX_2_8_BUILD_FAILURE, "error: builder for '/nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv' failed with exit code 1"),
    ("error: '::bad::#x' is not a valid URL\n", "error: '::bad::#x' is not a valid URL"),
    ("error: my message\n\n       at (string):1:44:\n", "error: my message"),
    ("\x1b[31;1merror:\x1b[0m attribute '\x1b[35;1mnope\x1b[0m' missing\n", "error: attribute 'nope' missing"),
    ("copying path...\nKilled\n", "Killed"),
    ("", ""),
])
def test_error_summary_is_one_line_with_nix_message_and_position(stderr, expected):
    assert error_summary(stderr) == expected


def test_error_block_keeps_messages_and_positions_drops_trace_and_code():
    block = error_block(NEWER_NIX_EVAL_ERROR)
    assert block[0] == "error:" and "       error: undefined variable 'nosuchthing'" in block
    assert not any(line.strip().startswith(("\u2026", "3|", "4|")) for line in block)
    assert error_block(NIX_2_8_BUILD_FAILURE) == [
        "error: builder for '/nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv' failed with exit code 1;",
        "       For full logs, run 'nix log /nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv'."]


def test_failed_build_names_the_derivation_and_the_log_tail():
    assert failed_derivation(NIX_2_8_BUILD_FAILURE) == "/nix/store/qs17vp5cxfslnms26qyi874fxzisawd3-fails.drv"
    assert failed_derivation(NIX_2_8_EVAL_ERROR) is None
    timed_out = "error: building of '/nix/store/0qjhz6n2gpv4ybaih7dp0i932bwf7c4n-sleeper.drv!*' from .drv file timed out after 2 seconds"
    assert failed_derivation(timed_out) == "/nix/store/0qjhz6n2gpv4ybaih7dp0i932bwf7c4n-sleeper.drv"
    assert build_log_tail(NIX_2_8_BUILD_FAILURE) == ["compiling", "this build fails on purpose"]
    # Without -Q the builder's output comes before nix's own lines, unquoted.
    raw = "this derivation will be built:\n  /nix/store/x.drv\nbuilding '/nix/store/x.drv'...\nstep 1\nstep 2\nerror: builder for '/nix/store/x.drv' failed\n"
    assert build_log_tail(raw) == ["step 1", "step 2"]


@pytest.mark.parametrize("text,version,as_tuple", [
    ("nix-store (Nix) 2.8.0", "2.8.0", (2, 8, 0)),
    ("nix-store (Nix) 2.24.10\n", "2.24.10", (2, 24, 10)),
    ("nix-store (Lix, like Nix) 2.91.1", "2.91.1", (2, 91, 1)),
    ("nix (Determinate Nix 3.6.2) 2.29.0", "2.29.0", (2, 29, 0)),
    ("nix-store (Nix) 2.4pre20211006_53e4794", "2.4pre20211006_53e4794", (2, 4)),
])
def test_nix_versions_of_every_flavour(text, version, as_tuple):
    assert parse_version(text) == version and version_tuple(version) == as_tuple


def test_option_args():
    assert option_args({"max-jobs": 0, "keep-going": True, "substituters": ["a", "b"], "builders": ""}) == [
        "--option", "builders", "", "--option", "keep-going", "true", "--option", "max-jobs", "0",
        "--option", "substituters", "a b"]
    for bad in ("--builders", "max jobs", "Builders", ""):
        with pytest.raises(NixError) as err:
            option_args({bad: 1})
        assert "is not a Nix setting name" in err.value.msg


def test_search_path_entries():
    assert check_search_path(["nixpkgs=/srv/nixpkgs", "/srv/extra", "nixpkgs=https://example.org/x.tar.gz"])
    for bad in ("nixpkgs=/srv/my nixpkgs", "", None):
        with pytest.raises(NixError):
            check_search_path([bad])


class RealCommands:
    """What Nix needs of AnsibleModule: find and run commands, here for real."""

    def get_bin_path(self, name, opt_dirs=None):
        for d in os.environ["PATH"].split(":") + list(opt_dirs or []):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        return None

    def run_command(self, argv, data=None, environ_update=None, binary_data=False):
        env = dict(os.environ, **(environ_update or {}))
        proc = subprocess.run(argv, input=data, env=env, capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr


def test_nar_hash_is_the_one_nix_computes(tmp_path):
    files = {"args.json": json.dumps({"a": [1, 2], "big": "x" * 100003}).encode(), "b": b"", "Z": b"1234567"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    _rc, out, _err = RealCommands().run_command(
        ["nix", "--extra-experimental-features", "nix-command", "hash", "path", "--type", "sha256", "--sri", str(tmp_path)])
    assert flat_directory_nar_hash(files) == out.strip()


def test_store_helpers_against_the_real_store(tmp_path):
    nix = Nix(RealCommands())
    (tmp_path / "f").write_text("ansinix %s\n" % tmp_path)
    added = subprocess.run(["nix-store", "--add", str(tmp_path / "f")], capture_output=True, text=True, check=True).stdout.strip()
    missing = "/nix/store/" + "0" * 32 + "-not-there"
    assert nix.invalid_paths([added, missing]) == [missing] == nix.missing_paths([missing])
    assert nix.is_valid(added) and not nix.path_is_valid(missing)
    assert nix.closure([added]) == [added]
    assert nix.nar_sizes([added]) == {added: nix.closure_size([added])} and nix.closure_size([added]) > 0
    with pytest.raises(NixError) as err:
        nix.closure(["/etc/passwd"])
    assert "is not a Nix store path" in err.value.msg
    link = tmp_path / "root"
    nix.add_root(added, str(link))
    assert os.readlink(link) == added
    roots = subprocess.run(["nix-store", "--query", "--roots", added], capture_output=True, text=True, check=True).stdout
    assert str(link) in roots


def test_nix_missing_says_how_to_install_it():
    class NoNix(RealCommands):
        def get_bin_path(self, name, opt_dirs=None):
            return None
    with pytest.raises(NixError) as err:
        Nix(NoNix()).version()
    assert "`nix-store` was not found on" in err.value.msg and "apt-get install nix-bin" in err.value.msg


def test_flakes_need_nix_2_4():
    nix = Nix(RealCommands())
    nix._version = "2.3.16"  # pylint: disable=protected-access
    with pytest.raises(NixError) as err:
        nix.experimental("nix-command", "flakes")
    assert "Nix 2.3.16" in err.value.msg and "came with Nix 2.4" in err.value.msg
    nix._version = "2.8.0"  # pylint: disable=protected-access
    assert nix.experimental("nix-command", "flakes") == ["--extra-experimental-features", "nix-command flakes"]


def test_search_path_replaces_or_extends_the_environment():
    isolated = Nix(RealCommands(), nix_path=["nixpkgs=/srv/nixpkgs"])
    assert isolated.environ() == {"NIX_PATH": "nixpkgs=/srv/nixpkgs"}
    assert isolated.search_path_args("nix-instantiate") == ["--option", "nix-path", "nixpkgs=/srv/nixpkgs"]
    assert isolated.search_path_args("nix-store") == []
    assert Nix(RealCommands()).search_path_args("nix") == ["--option", "nix-path", ""]
    extended = Nix(RealCommands(), nix_path=["a=/a", "/b"], use_environment_nix_path=True)
    assert extended.environ() == {} and extended.search_path_args("nix-build") == ["-I", "a=/a", "-I", "/b"]


# -- build.py: nix_build's rules ----------------------------------------------------------------------------

def test_attribute_paths():
    assert attr_components('nixosConfigurations."web1.example.org".config') == ["nixosConfigurations", "web1.example.org", "config"]
    assert attribute({"attr": 'hosts."a.b"'}) == 'hosts."a.b"'
    for bad in ("a..b", ".a", "a.", 'a."${x}"', "a b", 'a."b'):
        with pytest.raises(NixError) as err:
            attribute({"attr": bad})
        assert "is not an attribute path" in err.value.msg
    with pytest.raises(NixError) as err:
        attribute({"nixos_configuration": "web1"}, flake_attr="packages.x86_64-linux.hello")
    assert "give only one of attr, nixos_configuration and a flake's #ATTRIBUTE" in err.value.msg


def test_flake_parts_give_args_where_config_starts():
    assert flake_parts("nixosConfigurations.web1.config.system.build.toplevel") == (
        "nixosConfigurations", ["web1"], ["config", "system", "build", "toplevel"])
    assert flake_parts("packages.x86_64-linux.hello") == ("packages", ["x86_64-linux", "hello"], [])
    assert flake_parts("config.x") == ("config", ["x"], [])


def test_root_labels_and_where_roots_go(tmp_path):
    assert root_label({"nixos_configuration": "web1"}, "") == "web1"
    assert root_label({}, "nixosConfigurations.web2.config.system.build.toplevel") == "web2"
    assert root_label({}, 'nixosConfigurations."a.b".config.system.build.toplevel') == "a.b"
    assert root_label({}, "packages.x86_64-linux.hello") == "packages.x86_64-linux.hello"
    assert root_label({}, "") == "result"
    assert default_gcroot_dir(uid=0) == "/nix/var/nix/gcroots/ansinix"
    # A user who may not write to Nix's gcroots gets a root in their state directory (Nix registers it).
    assert default_gcroot_dir(uid=1000, environ={"XDG_STATE_HOME": str(tmp_path)}, writable=lambda p: False) == str(
        tmp_path / "ansinix" / "gcroots")
    assert default_gcroot_dir(uid=1000, environ={"HOME": "/home/u"}, writable=lambda p: True) == "/nix/var/nix/gcroots/ansinix"


def test_local_flakes_are_checked_before_nix_runs(tmp_path):
    with pytest.raises(NixError) as err:
        check_local_flake(str(tmp_path / "nowhere"))
    assert "does not exist on" in err.value.msg
    with pytest.raises(NixError) as err:
        check_local_flake("path:" + str(tmp_path))
    assert "has no flake.nix" in err.value.msg
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }")
    check_local_flake(str(tmp_path))
    check_local_flake("github:me/fleet")
    assert flake_reference("~/fleet") == "path:" + os.path.expanduser("~/fleet")


# -- nix_source.py: Ansible's files next to the Nix files ----------------------------------------------------------

VAULT = "$ANSIBLE_VAULT;1.1;AES256\n6162630a\n"


def test_ansible_files_are_found_and_nix_files_are_not(tmp_path):
    (tmp_path / "flake.nix").write_text("{ }")
    (tmp_path / "hosts").mkdir()  # the bootstrap's facts directory, not an inventory
    (tmp_path / "hosts" / "web1.json").write_text("{}")
    (tmp_path / "hosts.nix").write_text("{ hosts = [ ]; }")
    assert ansible_files_in(str(tmp_path)) == [] and source_warning(str(tmp_path), "flake directory") is None
    (tmp_path / "host_vars" / "web1").mkdir(parents=True)
    (tmp_path / "host_vars" / "web1" / "main.yml").write_text("a: 1\n")
    (tmp_path / "hosts.ini").write_text("[web]\nweb1\n")
    (tmp_path / "secret.bin").write_text(VAULT)
    assert ansible_files_in(str(tmp_path)) == ["host_vars/", "hosts.ini (inventory)", "secret.bin (vault)"]


def test_a_git_flake_counts_only_tracked_files_and_the_walk_is_bounded(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "flake.nix").write_text("{ }")
    (tmp_path / "vault.yml").write_text(VAULT)
    subprocess.run(["git", "-C", str(tmp_path), "add", "flake.nix"], check=True)
    assert ansible_files_in(str(tmp_path), git=True) == []
    assert ansible_files_in(str(tmp_path)) == ["vault.yml (vault)"]
    subprocess.run(["git", "-C", str(tmp_path), "add", "vault.yml"], check=True)
    assert ansible_files_in(str(tmp_path), git=True) == ["vault.yml (vault)"]
    deep = tmp_path.joinpath(*["d"] * (SCAN_MAX_DEPTH + 1))
    deep.mkdir(parents=True)
    (deep / "deep-vault.yml").write_text(VAULT)
    assert ansible_files_in(str(tmp_path)) == ["vault.yml (vault)"]
