"""The collection's metadata agrees with itself: the action group lists exactly the modules."""
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_action_group_lists_every_module():
    with open(os.path.join(ROOT, "meta", "runtime.yml"), encoding="utf-8") as f:
        runtime = yaml.safe_load(f)
    modules = sorted(
        name[:-3]
        for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
        if name.endswith(".py") and not name.startswith("_")
    )
    assert sorted(runtime["action_groups"]["nixos"]) == modules


def test_galaxy_identity():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as f:
        galaxy = yaml.safe_load(f)
    assert (galaxy["namespace"], galaxy["name"]) == ("ansinix", "nixos")
    assert galaxy["license"] == ["GPL-3.0-or-later"]
