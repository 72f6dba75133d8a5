"""The examples as a user lays them out, with what only the test machine needs added.

There is no nixpkgs and no network here: the examples build against the stand-in in
tests/fixtures/mini-nixpkgs, which makes NixOS-like fixture systems from the same NixOS modules.
"""
import glob
import json
import os
import shutil
import subprocess

from ansinix_test import REPO_ROOT

EXAMPLES = os.path.join(REPO_ROOT, "examples")
MINI_NIXPKGS = os.path.join(REPO_ROOT, "tests", "fixtures", "mini-nixpkgs")
FIXTURE_SYSTEMS = os.path.join(REPO_ROOT, "tests", "fixtures", "nixos")


def copy_stand_in(dest):
    """A copy of the stand-in nixpkgs that stands alone (the fixture systems inside it), usable as a
    flake (path:DEST) and as <nixpkgs>. Returns dest."""
    shutil.copytree(MINI_NIXPKGS, dest)
    shutil.copytree(FIXTURE_SYSTEMS, os.path.join(dest, "fixture-system"))
    return dest


def copy_example(name, dest):
    """examples/NAME copied to dest, as a user's checkout of it would be. Returns dest."""
    shutil.copytree(os.path.join(EXAMPLES, name), dest)
    return str(dest)


def connection_inventory(testhosts, names, path):
    """An inventory with only what reaching these test hosts takes (address, SSH key, known hosts,
    the machine's Python), to pass after the user's inventory: its host variables win over the user's
    example addresses. Lists no groups, so it adds no host to a play. Returns path."""
    ssh_args = "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes" % testhosts.known_hosts_path
    hosts = {name: {"ansible_host": testhosts[name].address,
                    "ansible_ssh_private_key_file": testhosts.ssh_key_path,
                    "ansible_ssh_common_args": ssh_args,
                    # The fixture systems' python3 is a stand-in; the hosts run the machine's.
                    "ansible_python_interpreter": "/usr/bin/python3"} for name in names}
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"all": {"hosts": hosts}}, f, indent=1)
    return str(path)


def build_collection(tmp_dir):
    """The collection's tarball, as Galaxy would serve it, built from a snapshot of this checkout (files that
    change while ansible-galaxy reads them would fail its checksums). Returns the tarball's path."""
    snapshot = os.path.join(str(tmp_dir), "collection-source")
    shutil.copytree(REPO_ROOT, snapshot, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".build", ".pytest_cache", "__pycache__", "tests", "bench", "*.tar.gz"))
    subprocess.run(["ansible-galaxy", "collection", "build", snapshot, "--output-path", str(tmp_dir)], capture_output=True,
                   check=True)
    (tarball,) = glob.glob(os.path.join(str(tmp_dir), "ansinix-nixos-*.tar.gz"))
    return tarball
