"""The commands of the docs, run as written against test hosts, on the example files the docs show.

What the test machine needs is added, never changed: a second inventory with the test hosts' addresses and
SSH keys after the user's own (`-i connection.json`), the stand-in nixpkgs for flake inputs (there is no
network), and the built collection where Galaxy would serve it.
"""
import json
import os
import shutil
import subprocess

from ansinix_test import REPO_ROOT, docs
from ansinix_test.ansible import CALLBACK_DIR, PlaybookRun, ansible_env
from ansinix_test.fakehetzner import CLOUD_TOKEN, FakeHetzner
from ansinix_test.fleet import build_collection, connection_inventory, copy_example, copy_stand_in

HOWTO = os.path.join(REPO_ROOT, "examples", "howto")


class Shell:
    """Runs doc commands in a user's directory, with a home of its own and the additions of `rules`."""

    def __init__(self, testhosts, tmp_path, cwd, rules):
        self.cwd, self.rules, self.tmp = str(cwd), rules, tmp_path
        self.env = ansible_env(testhosts, {"HOME": str(tmp_path / "home"), "ANSIBLE_CALLBACKS_ENABLED": "ansinix_test_recorder",
                                           "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_DIR})
        self.env.pop("ANSIBLE_INVENTORY")  # the docs' commands name their inventory
        self.runs = 0

    def run(self, text):
        """Run a script (adapted doc commands); a PlaybookRun of every ansible-playbook in it."""
        self.runs += 1
        events_file = self.tmp / ("events-%d.jsonl" % self.runs)
        proc = subprocess.run(["bash", "-c", text], cwd=self.cwd, env=dict(self.env, ANSINIX_TEST_EVENTS=str(events_file)),
                              capture_output=True, text=True, timeout=900, check=False)
        events = [json.loads(line) for line in events_file.read_text().splitlines()] if events_file.exists() else []
        return PlaybookRun(proc, events)

    def block(self, block):
        return self.run(docs.script(block, self.rules))

    def line(self, line):
        return self.run("set -euo pipefail\n" + docs.adapt(line, self.rules))


def block_with(blocks, text, whole=False):
    """The one block that contains text, or is it (so that a reordered doc still runs each block where it belongs)."""
    found = [b for b in blocks if (text == b.text if whole else text in b.text)]
    assert len(found) == 1, "%d blocks contain %r: %s" % (len(found), text, found)
    return found[0]


def playbook_rule(connection):
    return (lambda w: w[0] == "ansible-playbook", lambda w: w + ["-i", connection])


def lock_rule(stand_in):
    return (lambda w: w[0] == "nix" and w[-2:] == ["flake", "lock"],
            lambda w: w + ["--override-input", "nixpkgs", "path:" + stand_in])


def system_of(host):
    return host.readlink("/run/current-system")


def test_install(tmp_path):
    """The guide's install commands, in a new home with Debian's Python, from the package index."""
    home = tmp_path / "home"
    home.mkdir()
    tarball = [build_collection(tmp_path)]
    # Only the system's Python and tools: not this checkout's venv, not its collections.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(HOME=str(home), PATH="/usr/bin:/bin")
    rules = [(lambda w: w[:3] == ["ansible-galaxy", "collection", "install"] and w[3:] == ["ansinix.nixos"],
              lambda w: w[:3] + tarball)]  # Galaxy is not reachable from the tests: the same collection, built here
    (block,) = docs.run_blocks("install")
    proc = subprocess.run(["bash", "-c", docs.script(block, rules)], cwd=str(home), env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    venv_bin = home / ".venvs" / "ansible" / "bin"
    installed = home / ".ansible" / "collections" / "ansible_collections" / "ansinix" / "nixos" / "MANIFEST.json"
    assert json.loads(installed.read_text())["collection_info"]["name"] == "nixos"
    doc = subprocess.run([str(venv_bin / "ansible-doc"), "-t", "role", "ansinix.nixos.deploy"], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert doc.returncode == 0 and "nixos_build_on" in doc.stdout, doc.stdout[-2000:] + doc.stderr[-2000:]
    check = subprocess.run([str(venv_bin / "ansible-playbook"), "-i", "localhost,", "--syntax-check", "ansinix.nixos.site"],
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]


def test_guide(fresh_hosts, testhosts, tmp_path):
    """docs/guide.md from step 1 to the secrets, on one test host named like the guide's server."""
    (web,) = fresh_hosts("web")
    base = system_of(web)
    fleet = tmp_path / "home" / "fleet"
    fleet.parent.mkdir()
    copy_example("guide", fleet)
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    connection = connection_inventory(testhosts, ["web"], tmp_path / "connection.json")
    shell = Shell(testhosts, tmp_path, fleet, [playbook_rule(connection), lock_rule(stand_in)])
    blocks = docs.run_blocks("guide")
    used = []

    def run(text, whole=False):
        block = block_with(blocks, text, whole)
        used.append(block)
        return shell.block(block)

    # 1. Pin nixpkgs.
    lock = run("flake lock")
    assert lock.rc == 0, lock.stderr
    locked = json.loads((fleet / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]
    assert locked["type"] == "path" and locked["path"] == stand_in and locked["narHash"].startswith("sha256-")

    # 3. Deploy, and again: nothing changes.
    deploy = block_with(blocks, "ansible-playbook -i inventory.yml ansinix.nixos.site\n", whole=True)
    first = run(deploy.text, whole=True)
    assert first.rc == 0, str(first)
    deployed = system_of(web)
    assert deployed.endswith("-nixos-system-web-24.05") and web.generation() == 2
    assert web.exists("/run/current-system/sw/bin/htop")
    assert sorted(web.run("ls /run/ansinix-units").stdout.split()) == ["nginx.service", "sshd.service"]
    again = shell.block(deploy)
    assert again.rc == 0 and again.changed() == {"web": 0}, str(again)

    # 4. Add pkgs.git, look at the plan (nothing changes), then deploy it.
    web_nix = fleet / "web.nix"
    web_nix.write_text(web_nix.read_text().replace("[ pkgs.python3 pkgs.htop ]", "[ pkgs.python3 pkgs.htop pkgs.git ]"))
    plan = run("--check --diff")
    assert plan.rc == 0, str(plan)
    assert "+ git 2.44.1" in plan.stdout
    assert system_of(web) == deployed and web.generation() == 2
    applied = shell.block(deploy)
    assert applied.rc == 0, str(applied)
    assert web.generation() == 3 and web.exists("/run/current-system/sw/bin/git")

    # 5. Roll back.
    back = run("ansinix.nixos.rollback")
    assert back.rc == 0, str(back)
    assert system_of(web) == deployed and web.generation() == 2

    # 6. Secrets, from an encrypted vault file.
    secrets = run("ansible-vault encrypt")
    assert secrets.rc == 0, str(secrets)
    assert (fleet / "group_vars" / "nixos" / "vault.yml").read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert oct(os.stat(tmp_path / "home" / ".fleet-vault-password").st_mode & 0o777) == "0o600"
    key = web.stat("/run/keys/api-token")
    assert (key["user"], key["mode"]) == ("root", 0o400) and web.read_file("/run/keys/api-token") == "replace-me"
    assert web.exists("/run/current-system/sw/bin/git") and system_of(web) != base  # web.nix as it is now

    assert sorted(b.line for b in used) == sorted(b.line for b in blocks), "a block of the guide was not run"


def _fleet_shell(fresh_hosts, testhosts, tmp_path):
    hosts = {h.name: h for h in fresh_hosts("web1", "web2", "mon")}
    fleet = tmp_path / "fleet"
    copy_example("fleet", fleet)
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    # What `nix flake lock` does on a user's machine, with the stand-in for nixpkgs.
    subprocess.run(["nix", "--extra-experimental-features", "nix-command flakes", "flake", "lock", "--override-input",
                    "nixpkgs", "path:" + stand_in], cwd=str(fleet), env=ansible_env(), capture_output=True, check=True)
    connection = connection_inventory(testhosts, list(hosts), tmp_path / "connection.json")
    return hosts, fleet, Shell(testhosts, tmp_path, fleet, [playbook_rule(connection)])


def test_fleet_everyday_commands_and_rollbacks(fresh_hosts, testhosts, tmp_path):
    """The README's everyday commands and the how-to's rollbacks, in a copy of examples/fleet."""
    hosts, fleet, shell = _fleet_shell(fresh_hosts, testhosts, tmp_path)
    everyday = docs.commands(block_with(docs.run_blocks("fleet"), "--check --diff"))
    rollbacks = docs.commands(block_with(docs.run_blocks("fleet"), "nixos_generation"))
    deploy, plan, rollback = everyday
    assert len(rollbacks) == 2

    # The ansible.cfg of the example is the one in effect.
    config = subprocess.run(["ansible-config", "dump", "--only-changed"], cwd=str(fleet), env=shell.env, capture_output=True,
                            text=True, check=True).stdout
    assert "DEFAULT_FORKS" in config and "50" in config.split("DEFAULT_FORKS")[1].split("\n")[0]

    first = shell.line(deploy)
    assert first.rc == 0, str(first)
    builds = first.results("Build each configuration once, on the controller or the builder host")
    assert len(builds) == 1 and [r["item"] for r in list(builds.values())[0]["results"]] == ["mon", "web"]
    for name, host in hosts.items():
        assert system_of(host).endswith("-nixos-system-%s-24.05" % ("mon" if name == "mon" else "web"))
        assert host.generation() == 2
    scrape = json.loads(hosts["mon"].read_file("/etc/static/prometheus/prometheus.yml"))
    assert sorted(scrape["scrape_configs"][0]["static_configs"][0]["targets"]) == sorted(
        "%s:9100" % hosts[h].address for h in ("web1", "web2"))

    web_nix = fleet / "web.nix"
    web_nix.write_text(web_nix.read_text().replace("  networking.hostName", "  environment.systemPackages = [ pkgs.git ];\n"
                                                   "  networking.hostName").replace("{ ... }:", "{ pkgs, ... }:"))
    before = {n: (system_of(h), h.generation()) for n, h in hosts.items()}
    planned = shell.line(plan)
    assert planned.rc == 0, str(planned)
    assert planned.stdout.count("+ git 2.44.1") == 2  # web1 and web2, not mon
    assert not planned.result("Switch to the new system", "mon")["changed"]
    assert {n: (system_of(h), h.generation()) for n, h in hosts.items()} == before

    second = shell.line(deploy)
    assert second.rc == 0, str(second)
    assert second.changed()["mon"] == 0
    assert [hosts[n].generation() for n in ("web1", "web2", "mon")] == [3, 3, 2]

    back = shell.line(rollback)
    assert back.rc == 0, str(back)
    assert system_of(hosts["web1"]) == before["web1"][0] and hosts["web1"].generation() == 2
    assert hosts["web2"].generation() == 3

    previous, given = rollbacks
    assert shell.line(previous).rc == 0
    assert hosts["web1"].generation() == 1  # the system the host was installed with
    assert shell.line(given).rc == 0
    assert hosts["web1"].generation() == 3 and hosts["web1"].exists("/run/current-system/sw/bin/git")


def test_fleet_pinned_by_path_and_by_input_override(fresh_hosts, testhosts, tmp_path):
    """The how-to's classic file with nixos_nix_path, and the flake with nixos_override_inputs, both pointed at a
    nixpkgs checkout next to the inventory: they build the same systems, from that checkout."""
    hosts, fleet, shell = _fleet_shell(fresh_hosts, testhosts, tmp_path)
    checkout = copy_stand_in(str(fleet / "nixpkgs"))
    pkgs = os.path.join(checkout, "pkgs.nix")  # a different nixpkgs than flake.lock's: a newer Python
    with open(pkgs, encoding="utf-8") as f:
        text = f.read()
    with open(pkgs, "w", encoding="utf-8") as f:
        f.write(text.replace('version = "3.11.9"', 'version = "3.12.4"'))
    # The classic variant: the inventory names no flake; each how-to file says what to build.
    inventory = fleet / "inventory.yml"
    inventory.write_text("".join(line for line in inventory.read_text().splitlines(True) if "nixos_flake:" not in line))
    deploy = "ansible-playbook -i inventory.yml ansinix.nixos.site -e @%s"

    by_path = shell.line(deploy % os.path.join(HOWTO, "pin-file.yml"))
    assert by_path.rc == 0, str(by_path)
    systems = {n: system_of(h) for n, h in hosts.items()}
    # The stand-in's packages are scripts that say their name and version.
    assert {n: h.run("/run/current-system/sw/bin/python3").stdout.strip() for n, h in hosts.items()} == dict.fromkeys(hosts, "python3 3.12.4")

    by_input = shell.line(deploy % os.path.join(HOWTO, "override-nixpkgs.yml"))
    assert by_input.rc == 0, str(by_input)
    # Only the build's garbage collector root is new (a flake's has another name than a file's); nothing is
    # copied or switched.
    assert {e["task"] for e in by_input.events if e["result"].get("changed")} <= {
        "Build each configuration once, on the controller or the builder host"}
    assert not any(r["changed"] for r in by_input.results("Switch to the new system").values())
    assert {n: system_of(h) for n, h in hosts.items()} == systems
    assert json.loads((fleet / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]["path"] != checkout  # untouched


def test_awx_project_through_ansible_runner(fresh_hosts, testhosts, tmp_path):
    """examples/awx as AWX runs it: the project with its collections installed beside it, the Hetzner inventory
    source (against a stand-in of the API on loopback, the token from the environment), the SSH key in the agent."""
    hosts = {h.name: h for h in fresh_hosts("web1", "web2", "mon")}
    data = tmp_path / "runner"
    project = data / "project"
    copy_example("awx", project)
    copy_example("fleet", data / "fleet")  # group_vars/nixos.yml: "{{ playbook_dir }}/../fleet"
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    env = ansible_env()
    for name in ("ANSIBLE_INVENTORY", "ANSIBLE_COLLECTIONS_PATH"):
        env.pop(name, None)
    # The project sync: AWX installs collections/requirements.yml into a directory of its own, which the job then
    # finds through ANSIBLE_COLLECTIONS_PATH. Galaxy is not reachable from the tests, so the built collection is put
    # there; installing the requirements file must then find nothing to do.
    tarball = build_collection(tmp_path)
    collections = str(tmp_path / "awx_collections")
    galaxy_env = dict(env, ANSIBLE_COLLECTIONS_PATH=collections)  # blind to copies installed elsewhere on this machine
    subprocess.run(["ansible-galaxy", "collection", "install", tarball, "-p", collections], env=galaxy_env, capture_output=True,
                   check=True)
    again = subprocess.run(["ansible-galaxy", "collection", "install", "-r", "collections/requirements.yml", "-p", collections],
                           cwd=str(project), env=dict(galaxy_env, ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9"),
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "Nothing to do" in again.stdout, again.stdout + again.stderr

    with FakeHetzner() as api:
        for name, configuration in (("web1", "web"), ("web2", "web"), ("mon", "mon")):
            server = api.cloud.add_server(name=name, labels={"nixos": configuration})
            server["public_net"]["ipv4"]["ip"] = hosts[name].address
        api.cloud.add_server(name="db1", labels={"team": "data"})  # no nixos label: not deployed
        (data / "inventory").mkdir()
        shutil.copy(project / "inventory" / "hetzner.yml", data / "inventory" / "hetzner.yml")
        (data / "env").mkdir()
        shutil.copy(testhosts.ssh_key_path, data / "env" / "ssh_key")
        envvars = {  # what the credentials inject
            "HCLOUD_TOKEN": CLOUD_TOKEN, "HCLOUD_ENDPOINT": api.cloud_url, "ANSIBLE_REMOTE_USER": "root",
            "ANSIBLE_SSH_COMMON_ARGS": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % testhosts.known_hosts_path,
            "ANSIBLE_COLLECTIONS_PATH": collections,  # the project sync's, not this checkout
        }
        (data / "env" / "envvars").write_text(json.dumps(envvars))
        (data / "env" / "extravars").write_text(json.dumps({
            "ansible_python_interpreter": "/usr/bin/python3",  # the test hosts run the machine's Python
            "nixos_override_inputs": {"nixpkgs": stand_in}}))  # no network: the stand-in for github:NixOS/nixpkgs
        proc = subprocess.run(["ansible-runner", "run", str(data), "-p", "site.yml"], env=env, capture_output=True, text=True,
                              timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert [p.read_text() for p in (data / "artifacts").glob("*/status")] == ["successful"]
    assert os.path.exists(os.path.join(collections, "ansible_collections", "ansinix", "nixos", "MANIFEST.json"))
    for name, host in hosts.items():
        assert system_of(host).endswith("-nixos-system-%s-24.05" % ("mon" if name == "mon" else "web"))
    scrape = json.loads(hosts["mon"].read_file("/etc/static/prometheus/prometheus.yml"))
    assert sorted(scrape["scrape_configs"][0]["static_configs"][0]["targets"]) == sorted(
        "%s:9100" % hosts[h].address for h in ("web1", "web2"))
    assert "db1" not in proc.stdout
    assert not (data / "fleet" / "flake.lock").exists()  # the deploy never writes the project's files
    assert api.count("/v1/servers") >= 1
