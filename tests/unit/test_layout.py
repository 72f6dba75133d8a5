"""The collection's layout agrees with itself: the action group lists exactly the modules, the deploy role
reads in the order of a deploy, and every file that names the supported ansible-core or the controller's
Python libraries says the same."""
import glob
import os
import re

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


def _tasks(role, name):
    with open(os.path.join(ROOT, "roles", role, "tasks", name), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_deploy_role_main_lists_the_phases_in_the_order_of_the_deploy():
    phases = []
    for task in _tasks("deploy", "main.yml"):
        if "ansible.builtin.assert" in task:
            continue
        included = task.get("ansible.builtin.include_tasks")
        if included is not None:
            # A plain file name, and the phase's tag handed down to the tasks of the file.
            assert included["apply"]["tags"] == task["tags"], task["name"]
            included = included["file"]
        else:
            included = task["ansible.builtin.import_tasks"]
        assert "{{" not in included, task["name"]
        phases.append((included, task["tags"]))
    assert phases == [("build_once.yml", ["build"]), ("build_target.yml", ["build"]), ("keys.yml", ["keys"]),
                      ("copy.yml", ["copy"]), ("switch.yml", ["switch"]), ("keys_after.yml", ["keys"]),
                      ("check.yml", ["check"]), ("reboot.yml", ["reboot"])]


def test_deploy_role_switches_in_one_place_and_freezes_no_value():
    tasks_dir = os.path.join(ROOT, "roles", "deploy", "tasks")
    switches = []
    for name in sorted(os.listdir(tasks_dir)):
        stack = list(_tasks("deploy", name))
        while stack:
            task = stack.pop()
            stack.extend(task.get("block", []) + task.get("rescue", []) + task.get("always", []))
            assert "ansible.builtin.meta" not in task, (name, task["name"])
            if "path" in (task.get("ansinix.nixos.nixos_switch") or {}):
                switches.append(name)
            # A set_fact of a variable to itself would freeze a lazily computed value: name where it comes from.
            for var, value in (task.get("ansible.builtin.set_fact") or {}).items():
                assert value.replace(" ", "") != "{{%s}}" % var, (name, var)
    assert switches == ["switch.yml"]


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def test_the_oldest_tested_ansible_core_is_the_one_required():
    tested = re.search(r"^ansible-core==(\d+\.\d+)\.", read("tests", "requirements.txt"), re.M).group(1)
    newer = sorted(re.fullmatch(r"requirements-(\d+\.\d+)\.txt", os.path.basename(p)).group(1)
                   for p in glob.glob(os.path.join(ROOT, "tests", "requirements-*.txt")))
    assert all(tuple(map(int, v.split("."))) > tuple(map(int, tested.split("."))) for v in newer), newer
    assert yaml.safe_load(read("meta", "runtime.yml"))["requires_ansible"] == ">=%s.0" % tested
    assert "ansible-core>=%s.0" % tested in read("requirements.txt").splitlines()
    for meta in glob.glob(os.path.join(ROOT, "roles", "*", "meta", "main.yml")):
        assert yaml.safe_load(read(meta))["galaxy_info"]["min_ansible_version"] == tested, meta
    for doc in ("README.md", os.path.join("docs", "guide.md")):
        assert "`ansible-core` %s or newer" % tested in read(doc), doc


def test_the_execution_environment_gets_the_controller_libraries():
    controller = [line for line in read("requirements.txt").splitlines()
                  if line and not line.startswith(("#", "ansible-core"))]
    ee = yaml.safe_load(read("meta", "execution-environment.yml"))
    assert read(ee["dependencies"]["python"]).splitlines() == controller
    # paramiko serves only ansible-core's own connection plugin (2.20 and older), never the collection.
    assert not any("paramiko" in line for line in controller)
    plugins = glob.glob(os.path.join(ROOT, "plugins", "**", "*.py"), recursive=True)
    assert not [p for p in plugins if re.search(r"^\s*(import|from) paramiko", read(p), re.M)]


def test_hetzner_fragments_describe_the_credentials_alike():
    # The inventory's cloud:/robot: sections repeat the modules' credential suboptions (fragments merge shallowly).
    from ansible_collections.ansinix.nixos.plugins.doc_fragments.hetzner import ModuleDocFragment as fragment

    inventory = yaml.safe_load(fragment.INVENTORY)["options"]
    for section, text in (("cloud", fragment.CLOUD), ("robot", fragment.ROBOT)):
        module_auth = yaml.safe_load(text)["options"][section]["suboptions"]
        listed = inventory[section]["suboptions"]
        assert {name: listed[name] for name in module_auth} == module_auth
