"""Fixture NixOS systems, built with real nix-build from tests/fixtures/nixos (no nixpkgs needed).

    build_system(name="web1", version="2", failUnits=["nginx.service"]) -> "/nix/store/...-nixos-system-web1-2"
    build_flake_system("web1") -> the toplevel of nixosConfigurations.web1 of the fixture flake

The knobs are the arguments of tests/fixtures/nixos/system.nix (documented there); a name that is
no knob, or a bad value, raises FixtureBuildError with Nix's one-line message. Results are kept
alive by GC roots under .build/gcroots and remembered per knob set, so asking twice costs nothing
(and asking again in a new process costs one evaluation, about a tenth of a second).
"""
import hashlib
import json
import os
import subprocess

from ansinix_test import REPO_ROOT

FIXTURES_DIR = os.path.join(REPO_ROOT, "tests", "fixtures", "nixos")
# The fixture flake is tests/fixtures/flake.nix: a path: flake reads only below its directory, and
# its systems come from tests/fixtures/nixos.
FLAKE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
GCROOTS_DIR = os.path.join(REPO_ROOT, ".build", "gcroots")

# No binary cache is reachable from the test machines; no build users (see scripts/env.sh).
NIX_ENV = dict(os.environ, NIX_CONFIG="substituters =\nsandbox = false\nbuild-users-group =")
FLAKE_FEATURES = ["--extra-experimental-features", "nix-command flakes"]

_built = {}


class FixtureBuildError(RuntimeError):
    """A fixture system failed to evaluate or build; the message is Nix's error."""


def nix_string(text):
    """A Nix string literal holding text."""
    return json.dumps(text).replace("${", "\\${")


def nix_value(value):
    """Any JSON value as a Nix expression."""
    return "builtins.fromJSON " + nix_string(json.dumps(value, sort_keys=True))


def _error(stderr):
    """Nix's error: from its first "error:" line to the end, else the last lines."""
    lines = stderr.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), max(0, len(lines) - 5))
    return "\n".join(lines[start:])


def _gcroot(kind, key):
    os.makedirs(GCROOTS_DIR, exist_ok=True)
    return os.path.join(GCROOTS_DIR, "%s-%s" % (kind, hashlib.sha256(key.encode()).hexdigest()[:16]))


def build_system(**knobs):
    """Build a fixture system with these knobs and return its store path."""
    key = json.dumps(knobs, sort_keys=True)
    if key not in _built:
        argv = ["nix-build", FIXTURES_DIR, "--out-link", _gcroot("system", key)]
        for name, value in sorted(knobs.items()):
            argv += ["--arg", name, nix_value(value)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=NIX_ENV, check=False)
        if proc.returncode != 0:
            raise FixtureBuildError("building the fixture system %s failed: %s" % (key, _error(proc.stderr)))
        _built[key] = proc.stdout.strip().splitlines()[-1]
    return _built[key]


def build_flake_system(configuration):
    """Build nixosConfigurations.<configuration> of the fixture flake and return its toplevel."""
    key = "flake:" + configuration
    if key not in _built:
        attr = "path:%s#nixosConfigurations.%s.config.system.build.toplevel" % (FLAKE_DIR, configuration)
        proc = subprocess.run(["nix"] + FLAKE_FEATURES + ["build", "--json", "--out-link", _gcroot("flake", key), attr],
                              capture_output=True, text=True, env=NIX_ENV, check=False)
        if proc.returncode != 0:
            raise FixtureBuildError("building %s failed: %s" % (attr, _error(proc.stderr)))
        _built[key] = json.loads(proc.stdout)[0]["outputs"]["out"]
    return _built[key]


def closure(path):
    """The store paths of path's closure on the controller."""
    return subprocess.run(["nix-store", "-qR", path], capture_output=True, text=True, check=True).stdout.split()


def nar_size(paths):
    """The summed NAR size of these store paths on the controller."""
    out = subprocess.run(["nix-store", "-q", "--size"] + list(paths), capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in out.split())
