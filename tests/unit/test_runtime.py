"""One runtime: action plugins run modules through Ansible, and async is declared as the plugins support it."""
import ast
import importlib
import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "plugins", "modules")) if n.endswith(".py"))
ACTIONS = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "plugins", "action")) if n.endswith(".py"))
CONTROLLER_CODE = sorted(os.path.join(d, n) for d in ("action", "plugin_utils")
                         for n in os.listdir(os.path.join(ROOT, "plugins", d)) if n.endswith(".py"))


def documentation(module):
    with open(os.path.join(ROOT, "plugins", "modules", module + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return next(yaml.safe_load(n.value.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "DOCUMENTATION")


@pytest.mark.parametrize("module", MODULES)
def test_async_is_declared_as_it_is(module):
    """An action plugin of the collection refuses async (Ansible's default): its module says support none."""
    doc = documentation(module)
    declared = (doc.get("attributes", {}).get("async") or {}).get("support")
    if "ansinix.nixos.attributes.action" in doc.get("extends_documentation_fragment", []):
        declared = declared or "none"
    if module in ACTIONS:
        action = importlib.import_module("ansible_collections.ansinix.nixos.plugins.action." + module).ActionModule
        assert "ansinix.nixos.attributes.action" in doc["extends_documentation_fragment"], module
        assert (declared == "full") is bool(action._supports_async), module  # pylint: disable=protected-access
    else:
        assert declared in (None, "full"), module


@pytest.mark.parametrize("action", CONTROLLER_CODE)
def test_no_action_plugin_sends_module_code_itself(action):
    """Module code reaches a host through _execute_module only: no plugin feeds a program to a command's stdin."""
    with open(os.path.join(ROOT, "plugins", action), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "_low_level_execute_command":
            assert not any(k.arg == "in_data" for k in node.keywords), (action, node.lineno)
