"""The collection's metadata agrees with itself: the action group lists exactly the modules."""
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_action_groups_list_every_module_once():
    with open(os.path.join(ROOT, "meta", "runtime.yml"), encoding="utf-8") as f:
        runtime = yaml.safe_load(f)
    modules = sorted(
        name[:-3]
        for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
        if name.endswith(".py") and not name.startswith("_")
    )
    groups = runtime["action_groups"]
    assert sorted(m for members in groups.values() for m in members) == modules
    # The Hetzner API modules share credentials and settings; everything else drives Nix and NixOS.
    assert sorted(groups["hetzner"]) == [m for m in modules if m.startswith("hetzner_")]
    assert sorted(groups["nixos"]) == [m for m in modules if not m.startswith("hetzner_")]


def test_galaxy_identity():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as f:
        galaxy = yaml.safe_load(f)
    assert (galaxy["namespace"], galaxy["name"]) == ("ansinix", "nixos")
    assert galaxy["license"] == ["GPL-3.0-or-later"]
