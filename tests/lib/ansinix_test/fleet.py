"""The examples as a user lays them out, with what only the test machine needs added.

There is no nixpkgs and no network here: the examples build against the stand-in in
tests/fixtures/mini-nixpkgs, which makes NixOS-like fixture systems from the same NixOS modules.
"""
import glob
import os
import re
import shutil
import subprocess

import yaml

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


def connection_vars(testhosts, name):
    """What reaching a test host takes: its address, the SSH key, known hosts, the machine's Python."""
    return {"ansible_host": testhosts[name].address,
            "ansible_ssh_private_key_file": testhosts.ssh_key_path,
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                                       % testhosts.known_hosts_path,
            # The fixture systems' python3 is a stand-in; the hosts run the machine's.
            "ansible_python_interpreter": "/usr/bin/python3"}


def point_inventory(path, testhosts, names, extra=None):
    """The edit a user makes to the example's inventory, done for the test machine: each named host of the
    YAML inventory at path gets its test host's address and connection (and extra[name], if any), in place.
    Comments are lost; every other value stays. Returns path."""
    with open(path, encoding="utf-8") as f:
        inventory = yaml.safe_load(f)
    left = set(names)

    def visit(group):
        for name, hostvars in (group.get("hosts") or {}).items():
            if name in left:
                left.discard(name)
                group["hosts"][name] = dict(hostvars or {}, **connection_vars(testhosts, name), **(extra or {}).get(name, {}))
        for child in (group.get("children") or {}).values():
            visit(child or {})
    for group in inventory.values():
        visit(group or {})
    assert not left, "%s names no host %s" % (path, sorted(left))
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(inventory, f, sort_keys=False)
    return str(path)


def point_flake(flake_nix, stand_in):
    """The flake's nixpkgs input pointed at the stand-in (there is no network here), in place."""
    with open(flake_nix, encoding="utf-8") as f:
        text = f.read()
    text, count = re.subn(r'inputs\.nixpkgs\.url = "[^"]*";', 'inputs.nixpkgs.url = "path:%s";' % stand_in, text)
    assert count == 1, "%s has no one inputs.nixpkgs.url" % flake_nix
    with open(flake_nix, "w", encoding="utf-8") as f:
        f.write(text)


def link_installed_collection(home):
    """What `ansible-galaxy collection install ansinix.nixos` leaves in a home (this checkout, linked), so
    that a doc's `cp -r ~/.ansible/collections/.../examples/NAME` copies the examples of this checkout."""
    namespace = os.path.join(str(home), ".ansible", "collections", "ansible_collections", "ansinix")
    os.makedirs(namespace, exist_ok=True)
    os.symlink(REPO_ROOT, os.path.join(namespace, "nixos"))


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
