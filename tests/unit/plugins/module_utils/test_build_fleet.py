"""Building several configurations at once (module_utils/build_fleet.py), against the real Nix of this machine."""
import json
import os

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.build_fleet import (
    FleetBuilder, checked, chunks, configuration_parts, failure_message, file_expression,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import Nix, NixError

from test_nix import RealCommands

OUT = "/nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-26.11"
# A fleet whose configurations share a top-level let (traced: it must be evaluated once), one of which fails to
# evaluate and one to build.
FLEET = """{ args ? { } }:
let
  shared = builtins.trace "shared import evaluated" args.nonce;
  system = name: script: { config.system.build.toplevel = derivation {
    name = "nixos-system-${name}-${shared}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; }; };
in {
  nixosConfigurations = {
    a = system "a" "echo a > $out";
    b = system "b" "echo b > $out";
    unbuildable = system "unbuildable" "echo 'this build fails on purpose' >&2; exit 3";
    broken.config.system.build.toplevel = throw "broken on purpose";
  };
}
"""


class Recording(RealCommands):
    """Real commands, each one noted."""

    def __init__(self):
        self.calls = []

    def run_command(self, argv, data=None, environ_update=None, binary_data=False):
        self.calls.append([os.path.basename(argv[0])] + argv[1:])
        return super().run_command(argv, data=data, environ_update=environ_update, binary_data=binary_data)

    def count(self, command):
        return len([c for c in self.calls if c[0] == command])


@pytest.fixture
def fleet(tmp_path):
    path = tmp_path / "fleet.nix"
    path.write_text(FLEET)

    made = []

    def builder(**params):
        commands = Recording()
        defaults = {"file": str(path), "args": {"nonce": os.urandom(6).hex()}, "eval_chunk": 0}
        made.append(FleetBuilder(Nix(commands), dict(defaults, **params)))
        return made[-1], commands
    yield builder
    for built in made:
        built.close()  # the private directory of the args


def test_chunks_of_the_configurations():
    assert chunks(["a", "b", "c"], 0) == [["a", "b", "c"]] == chunks(["a", "b", "c"], 3) == chunks(["a", "b", "c"], -1)
    assert chunks(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    assert chunks(["a", "b", "c"], 1) == [["a"], ["b"], ["c"]]


@pytest.mark.parametrize("name", ["", "../x", "a b", "${x}", 3, None, ".hidden"])
def test_configuration_names_are_checked(name):
    with pytest.raises(NixError, match=r"^nixos_configurations holds .*, which is not a configuration name: use letters"):
        configuration_parts(name)


def test_nix_output_is_checked_before_use():
    good = {"drv_path": OUT + ".drv", "out_path": OUT, "output_name": "out"}
    assert checked({"web1": good}, ["web1"]) == {"web1": good}
    for bad in ([good], {"web1": good, "extra": good}, {}, {"web1": "x"}, {"web1": dict(good, out_path="/etc/passwd")},
                {"web1": dict(good, out_path=None)}):
        with pytest.raises(NixError):
            checked(bad, ["web1"])


def test_failure_message_is_one_line_per_configuration():
    msg = failure_message({"web": "evaluating x failed:\n  error: y", "mon": "building z failed"})
    assert msg == "2 configurations failed: mon: building z failed; web: evaluating x failed: error: y"
    assert failure_message({"web": "e"}) == "1 configuration failed: web: e"


def test_one_evaluation_applies_the_file_once(tmp_path):
    (tmp_path / "f.nix").write_text(FLEET)
    expr = file_expression('import "%s"' % (tmp_path / "f.nix"), '{ nonce = "n1"; }', "f.nix", ["a", "b"])
    commands = RealCommands()
    rc, out, err = commands.run_command(["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr])
    assert rc == 0, err
    assert sorted(json.loads(out)) == ["a", "b"] and json.loads(out)["a"]["out_path"].endswith("-nixos-system-a-n1")
    assert err.count("shared import evaluated") == 1


def test_the_normal_case_is_one_evaluation_and_one_build(fleet, tmp_path):
    builder, commands = fleet()
    evaluated, errors = builder.evaluate_many(["a", "b"], check_mode=False)
    assert sorted(evaluated) == ["a", "b"] and errors == {}
    assert commands.count("nix-instantiate") == 1
    links = {n: str(tmp_path / "roots" / n) for n in evaluated}
    assert builder.realise_many(evaluated, links) == {}
    realised = [c for c in commands.calls if c[:2] == ["nix-store", "--realise"]]
    # One build of both; roots outside Nix's gcroots directory are each registered by Nix.
    assert len(realised) == 3 and sorted(realised[0][2:4]) == sorted("%s!out" % e["drv_path"] for e in evaluated.values())
    for name, value in evaluated.items():
        assert os.readlink(links[name]) == value["out_path"]


def test_after_a_failed_evaluation_each_configuration_alone(fleet):
    builder, commands = fleet()
    evaluated, errors = builder.evaluate_many(["a", "broken", "b"], check_mode=True)
    assert sorted(evaluated) == ["a", "b"] and list(errors) == ["broken"]
    assert "-A nixosConfigurations.broken.config.system.build.toplevel failed: error: broken on purpose" in errors["broken"].msg
    assert commands.count("nix-instantiate") == 1 + 3  # all together, then one by one
    chunked, calls = fleet(eval_chunk=2)
    evaluated, errors = chunked.evaluate_many(["a", "b", "broken"], check_mode=True)
    assert sorted(evaluated) == ["a", "b"] and list(errors) == ["broken"]
    assert calls.count("nix-instantiate") == 2  # [a, b], then [broken], which is alone already


def test_after_a_failed_build_each_failed_configuration_alone(fleet, tmp_path):
    builder, commands = fleet()
    evaluated, errors = builder.evaluate_many(["a", "unbuildable"], check_mode=False)
    links = {n: str(tmp_path / n) for n in evaluated}
    errors = builder.realise_many(evaluated, links)
    assert list(errors) == ["unbuildable"]
    assert "-nixos-system-unbuildable-" in errors["unbuildable"].msg and "this build fails on purpose" in errors["unbuildable"].msg
    assert os.readlink(links["a"]) == evaluated["a"]["out_path"] and not os.path.lexists(links["unbuildable"])
    realised = [c for c in commands.calls if c[:2] == ["nix-store", "--realise"]]
    assert len(realised) == 3 and "--keep-going" in realised[0]  # together; then a's root, unbuildable alone


def test_a_rerun_runs_no_build(fleet):
    builder, commands = fleet(nixos_configurations=["a", "b"])
    first = builder.build_many(check_mode=False)
    again, calls = fleet(nixos_configurations=["a", "b"], args=builder.args)
    second = again.build_many(check_mode=False)
    assert first["changed"] and not second["changed"] and second["out_paths"] == first["out_paths"]
    assert second["already_valid"] == {"a": True, "b": True}
    assert [c[:2] for c in calls.calls] == [["nix-store", "--version"], ["nix-instantiate", "--eval"], ["nix-store", "--check-validity"]]
    for name, link in first["out_links"].items():
        os.unlink(link)  # roots in Nix's gcroots directory: this test's systems need none
