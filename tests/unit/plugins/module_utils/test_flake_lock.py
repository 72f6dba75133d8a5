"""A flake's lock computed by the real Nix of this machine (module_utils/flake_lock.py), and the controller's check of it."""
import json
import subprocess

import pytest

from ansible_collections.ansinix.nixos.plugins.filter.flake_lock import flake_lock
from ansible_collections.ansinix.nixos.plugins.module_utils.flake_lock import (
    MAX_LOCK_BYTES, check_lock, flake_directory, lock_flake, lock_text,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import Nix, NixError

from test_nix import RealCommands

FLAKE = """{
  inputs.a.url = "path:%s";
  inputs.a.flake = false;%s
  outputs = { self, ... }: { };
}
"""
NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]


@pytest.fixture
def flake(tmp_path):
    """A flake directory with a path input a (and b, when asked), each a directory with one file."""
    inputs = {}
    for name in ("a", "b"):
        inputs[name] = tmp_path / name
        inputs[name].mkdir()
        (inputs[name] / "file").write_text(name)
    directory = tmp_path / "flake"
    directory.mkdir()

    def write(with_b=False):
        extra = '\n  inputs.b = { url = "path:%s"; flake = false; };' % inputs["b"] if with_b else ""
        (directory / "flake.nix").write_text(FLAKE % (inputs["a"], extra))
        return directory
    write()
    return directory, inputs, write


def nix_lock(directory):
    """What `nix flake lock` writes, for comparison."""
    subprocess.run(NIX + ["flake", "lock", "path:%s" % directory], capture_output=True, check=True)
    return (directory / "flake.lock").read_text()


def test_no_lock_gives_the_bytes_nix_writes_and_writes_nothing(flake):
    directory, _inputs, _write = flake
    result = lock_flake(Nix(RealCommands()), str(directory), "missing")
    assert result["lock_changed"] and not (directory / "flake.lock").exists()
    assert result["lock"] == nix_lock(directory)
    assert lock_flake(Nix(RealCommands()), str(directory), "missing") == {"lock": result["lock"], "lock_changed": False}


def test_a_lock_is_kept_missing_inputs_are_added_and_update_takes_the_newest(flake):
    directory, inputs, write = flake
    nix = Nix(RealCommands())
    first = nix_lock(directory)
    (inputs["a"] / "file").write_text("a, newer")
    # The same lock written otherwise (another Nix, another indentation) is kept as it is.
    (directory / "flake.lock").write_text(json.dumps(json.loads(first)))
    assert lock_flake(nix, str(directory), "missing") == {"lock": json.dumps(json.loads(first)), "lock_changed": False}
    # So is one with what this Nix does not read (a newer Nix's field): Nix finds it complete, and keeps it.
    newer = json.loads(first)
    newer["nodes"]["a"]["from-a-newer-nix"] = True
    (directory / "flake.lock").write_text(lock_text(newer))
    assert lock_flake(nix, str(directory), "missing") == {"lock": lock_text(newer), "lock_changed": False}
    assert (directory / "flake.lock").read_text() == lock_text(newer)
    (directory / "flake.lock").write_text(first)
    write(with_b=True)
    added = lock_flake(nix, str(directory), "missing")
    nodes = json.loads(added["lock"])["nodes"]
    assert added["lock_changed"] and nodes["a"] == json.loads(first)["nodes"]["a"] and "b" in nodes
    assert (directory / "flake.lock").read_text() == first
    updated = json.loads(lock_flake(nix, str(directory), "update")["lock"])["nodes"]
    assert updated["a"]["locked"]["narHash"] != nodes["a"]["locked"]["narHash"]
    assert (directory / "flake.lock").read_text() == first  # never written


def test_lock_needs_a_local_flake_directory(tmp_path):
    (tmp_path / "flake.nix").write_text("{ outputs = { self }: { }; }")
    assert flake_directory(str(tmp_path)) == str(tmp_path)
    assert flake_directory("path:%s" % tmp_path) == str(tmp_path)
    for flake, message in (("github:me/fleet", "lock needs a flake directory on"),
                           ("%s#nixosConfigurations" % tmp_path, "names an attribute"),
                           (str(tmp_path / "missing"), "does not exist")):
        with pytest.raises(NixError) as exc:
            flake_directory(flake)
        assert message in exc.value.msg and "\n" not in exc.value.msg


def test_a_failing_lock_is_one_line(flake):
    directory, _inputs, _write = flake
    (directory / "flake.nix").write_text('{ inputs.a.url = "path:/nonexistent/input"; outputs = { self, a }: { }; }')
    with pytest.raises(NixError) as exc:
        lock_flake(Nix(RealCommands()), str(directory), "missing")
    assert exc.value.msg.startswith("locking the inputs of path:%s failed: " % directory) and "\n" not in exc.value.msg


GOOD = {"nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs", "x": ["nixpkgs"]}},
                  "nixpkgs": {"locked": {"narHash": "sha256-AAAA", "type": "github", "lastModified": 1}, "original": {"type": "github"}}},
        "root": "root", "version": 7}


@pytest.mark.parametrize("text, message", [
    ("", "is empty or not text"),
    ("x" * (MAX_LOCK_BYTES + 1), "larger than"),
    ("{nope", "is not JSON"),
    ("[]", "no lock file version"),
    (json.dumps(dict(GOOD, version=99)), "no lock file version"),
    (json.dumps(dict(GOOD, root="elsewhere")), "no nodes with its root node"),
    (json.dumps(dict(GOOD, nodes=dict(GOOD["nodes"], root={"inputs": {"n": "ghost"}}))), "names node 'ghost'"),
    (json.dumps(dict(GOOD, nodes=dict(GOOD["nodes"], root={"inputs": {"n": 3}}))), "are not names of nodes"),
    (json.dumps(dict(GOOD, nodes=dict(GOOD["nodes"], nixpkgs={"locked": {"type": "git"}, "original": {}}))), "is not locked"),
    (json.dumps(dict(GOOD, nodes=dict(GOOD["nodes"], nixpkgs={"locked": {"narHash": ["x"]}, "original": {}}))),
     "no locked and original"),
])
def test_what_is_no_lock_is_refused_in_one_line(text, message):
    with pytest.raises(NixError) as exc:
        check_lock(text)
    assert message in exc.value.msg and "\n" not in exc.value.msg


def test_the_filter_returns_a_good_lock_as_it_is():
    text = lock_text(GOOD)
    assert flake_lock(text, "web1") == text
    # A relative path input, as newer Nix locks it: inside its parent, with no hash of its own.
    sub = {"locked": {"path": "./sub", "type": "path"}, "original": {"path": "./sub", "type": "path"}, "parent": []}
    relative = lock_text(dict(GOOD, nodes=dict(GOOD["nodes"], sub=sub)))
    assert flake_lock(relative) == relative
    with pytest.raises(Exception) as exc:
        flake_lock("{}", "web1")
    assert str(exc.value).startswith("the lock web1 sent is no flake.lock: ")
