"""Fixture NixOS systems, built with real nix-build from tests/fixtures/nixos (no nixpkgs needed).

    build_system(name="web1", version="2", failUnits=["nginx.service"]) -> "/nix/store/...-nixos-system-web1-2"

The knobs are those of tests/fixtures/nixos/system.nix. Results are kept alive by GC roots under
.build/gcroots and remembered per knob set, so asking twice costs nothing.
"""
import hashlib
import json
import os
import subprocess

from ansinix_test import REPO_ROOT

FIXTURES_DIR = os.path.join(REPO_ROOT, "tests", "fixtures", "nixos")
FLAKE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
GCROOTS_DIR = os.path.join(REPO_ROOT, ".build", "gcroots")

# No binary cache is reachable from the test machines.
NIX_ENV = dict(os.environ, NIX_CONFIG="substituters =\nsandbox = false\nbuild-users-group =")

_built = {}


def nix_string(text):
    """A Nix string literal holding text."""
    return json.dumps(text).replace("${", "\\${")


def knobs_expression(knobs):
    """The knobs as a Nix expression (parsed from JSON, so any JSON value works)."""
    return "builtins.fromJSON " + nix_string(json.dumps(knobs, sort_keys=True))


def build_system(**knobs):
    """Build a fixture system with these knobs and return its store path."""
    key = json.dumps(knobs, sort_keys=True)
    if key in _built:
        return _built[key]
    os.makedirs(GCROOTS_DIR, exist_ok=True)
    link = os.path.join(GCROOTS_DIR, "system-" + hashlib.sha256(key.encode()).hexdigest()[:16])
    proc = subprocess.run(
        ["nix-build", FIXTURES_DIR, "--arg", "args", knobs_expression(knobs), "--out-link", link],
        capture_output=True, text=True, env=NIX_ENV, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError("building the fixture system %s failed:\n%s" % (key, proc.stderr))
    _built[key] = proc.stdout.strip().splitlines()[-1]
    return _built[key]


def closure(path):
    """The store paths of path's closure on the controller."""
    return subprocess.run(["nix-store", "-qR", path], capture_output=True, text=True, check=True).stdout.split()


def nar_size(paths):
    """The summed NAR size of these store paths on the controller."""
    out = subprocess.run(["nix-store", "-q", "--size"] + list(paths), capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in out.split())
