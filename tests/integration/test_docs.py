"""The commands of the docs, run as printed against test hosts, on the example files the docs show.

What the test machine needs differs from a user's machine only in files the docs tell the user to edit: the
inventory gets the test hosts' addresses and connection (as a user puts in their server's address), the flake's
nixpkgs input points at the stand-in nixpkgs (there is no network). Galaxy is not reachable: where a doc installs
the collection, the same collection, built here, is installed. The stand-in Hetzner APIs take the docs'
placeholder credentials, and their address comes from the environment (HCLOUD_ENDPOINT, HROBOT_API_ENDPOINT).
No command gets an -i or -e the reader does not see.
"""
import json
import os
import re
import shutil
import subprocess

import yaml

from ansinix_test import REPO_ROOT, docs
from ansinix_test.ansible import CALLBACK_DIR, PlaybookRun, ansible_env
from ansinix_test.fakehetzner import CLOUD_TOKEN, FakeHetzner
from ansinix_test.fleet import (build_collection, copy_example, copy_stand_in, link_installed_collection,
                                point_flake, point_inventory)
from ansinix_test.hosts import INSTALL_NIX_COMMAND, REBOOT_COMMAND

HOWTO = os.path.join(REPO_ROOT, "examples", "howto")
DEPLOY = "ansible-playbook -i inventory.yml ansinix.nixos.site"


class Shell:
    """Runs doc commands in a user's directory, with a home of its own and the additions of `rules`."""

    def __init__(self, testhosts, tmp_path, cwd, rules=(), installed=False):
        self.cwd, self.rules, self.tmp = str(cwd), list(rules), tmp_path
        self.env = ansible_env(testhosts, {"HOME": str(tmp_path / "home"), "ANSIBLE_CALLBACKS_ENABLED": "ansinix_test_recorder",
                                           "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_DIR})
        self.env.pop("ANSIBLE_INVENTORY")  # the docs' commands name their inventory
        if installed:  # the collection as the docs install it, in the home, not this checkout's
            self.env.pop("ANSIBLE_COLLECTIONS_PATH")
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


def galaxy_rule(tarball):
    """Galaxy is not reachable from the tests: `ansible-galaxy collection install ansinix.nixos` installs the
    same collection, built here."""
    return (lambda w: w[:3] == ["ansible-galaxy", "collection", "install"] and w[3:] == ["ansinix.nixos"],
            lambda w: w[:3] + [tarball])


def exported(blocks, name):
    """The value a doc's `export NAME='...'` line gives (the stand-in API takes the docs' placeholders)."""
    for block in blocks:
        for line in docs.commands(block):
            found = re.match(r"export %s='([^']*)'$" % name, line)
            if found:
                return found.group(1)
    raise AssertionError("no doc block exports %s" % name)


def system_of(host):
    return host.readlink("/run/current-system")


def test_install(tmp_path):
    """The guide's install commands, in a new home with Debian's Python, from the package index."""
    home = tmp_path / "home"
    home.mkdir()
    # Only the system's Python and tools: not this checkout's venv, not its collections.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(HOME=str(home), PATH="/usr/bin:/bin")
    rules = [galaxy_rule(build_collection(tmp_path))]
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


def test_quickstart(fresh_hosts, testhosts, tmp_path):
    """The README's three commands: install the collection, copy its example, and (after the edits the README
    names: the address) deploy it."""
    (web,) = fresh_hosts("web")
    home = tmp_path / "home"
    home.mkdir()
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    shell = Shell(testhosts, tmp_path, home, [galaxy_rule(build_collection(tmp_path))], installed=True)
    (block,) = docs.run_blocks("quickstart")
    install, copy, deploy = docs.commands(block)
    for line in (install, copy):
        done = shell.line(line)
        assert done.rc == 0, str(done)
    fleet = home / "fleet"
    assert (home / ".ansible" / "collections" / "ansible_collections" / "ansinix" / "nixos" / "MANIFEST.json").exists()
    point_inventory(fleet / "inventory.yml", testhosts, ["web"])
    point_flake(fleet / "nix" / "flake.nix", stand_in)
    first = shell.line(deploy)
    assert first.rc == 0, str(first)
    assert system_of(web).endswith("-nixos-system-web-26.11") and web.generation() == 2


def test_guide(fresh_hosts, testhosts, tmp_path):
    """docs/guide.md from the copy to the secrets, on one test host named like the guide's server."""
    (web,) = fresh_hosts("web")
    base = system_of(web)
    home = tmp_path / "home"
    home.mkdir()
    link_installed_collection(home)
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    shell = Shell(testhosts, tmp_path, home)
    blocks = docs.run_blocks("guide")
    used = []

    def run(text, whole=False):
        block = block_with(blocks, text, whole)
        used.append(block)
        return shell.block(block)

    # 1. Copy the example; the user's edits: the server's address, and (here) the stand-in nixpkgs.
    copied = run("cp -r ")
    assert copied.rc == 0, str(copied)
    fleet = home / "fleet"
    shell.cwd = str(fleet)  # the block's `cd ~/fleet`
    point_inventory(fleet / "inventory.yml", testhosts, ["web"])
    point_flake(fleet / "nix" / "flake.nix", stand_in)

    # 2. Pin nixpkgs.
    lock = run("flake lock")
    assert lock.rc == 0, lock.stderr
    locked = json.loads((fleet / "nix" / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]
    assert locked["type"] == "path" and locked["path"] == stand_in and locked["narHash"].startswith("sha256-")

    # 3. Deploy, and again: nothing changes.
    deploy = block_with(blocks, DEPLOY + "\n", whole=True)
    first = run(deploy.text, whole=True)
    assert first.rc == 0, str(first)
    deployed = system_of(web)
    assert deployed.endswith("-nixos-system-web-26.11") and web.generation() == 2
    assert web.exists("/run/current-system/sw/bin/htop")
    assert sorted(web.run("ls /run/ansinix-units").stdout.split()) == ["nginx.service", "sshd.service"]
    again = shell.block(deploy)
    assert again.rc == 0 and again.changed() == {"web": 0}, str(again)

    # 4. Add pkgs.git, look at the plan (nothing changes), then deploy it.
    web_nix = fleet / "nix" / "web.nix"
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
    assert oct(os.stat(home / ".fleet-vault-password").st_mode & 0o777) == "0o600"
    key = web.stat("/run/keys/api-token")
    assert (key["user"], key["mode"]) == ("root", 0o400) and web.read_file("/run/keys/api-token") == "replace-me"
    assert web.exists("/run/current-system/sw/bin/git") and system_of(web) != base  # web.nix as it is now

    # After a reboot the deploy did not make, /run/keys is empty: --tags keys sends the keys, and only them.
    running, generation = system_of(web), web.generation()
    web.run("rm -f /run/keys/api-token")
    shell.env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(home / ".fleet-vault-password")  # the terminal still has it
    resent = run("--tags keys")
    assert resent.rc == 0, str(resent)
    assert web.read_file("/run/keys/api-token") == "replace-me"
    assert (system_of(web), web.generation()) == (running, generation)
    assert {e["task"] for e in resent.events if e["result"].get("changed")} == {"Put the keys in place"}

    assert sorted(b.line for b in used) == sorted(b.line for b in blocks), "a block of the guide was not run"


def _fleet_shell(fresh_hosts, testhosts, tmp_path):
    hosts = {h.name: h for h in fresh_hosts("web1", "web2", "mon")}
    fleet = tmp_path / "fleet"
    copy_example("fleet", fleet)
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    # What `nix flake lock` does on a user's machine, with the stand-in for nixpkgs.
    subprocess.run(["nix", "--extra-experimental-features", "nix-command flakes", "flake", "lock", "--override-input",
                    "nixpkgs", "path:" + stand_in], cwd=str(fleet / "nix"), env=ansible_env(), capture_output=True, check=True)
    point_inventory(fleet / "inventory.yml", testhosts, list(hosts))
    return hosts, fleet, Shell(testhosts, tmp_path, fleet)


def test_fleet_everyday_commands_and_rollbacks(fresh_hosts, testhosts, tmp_path):
    """The everyday commands and the how-to's rollbacks, in a copy of examples/fleet."""
    hosts, fleet, shell = _fleet_shell(fresh_hosts, testhosts, tmp_path)
    (block,) = docs.run_blocks("fleet")
    rollback, given = docs.commands(block)
    deploy, plan = DEPLOY, DEPLOY + " --check --diff"

    # The ansible.cfg of the example is the one in effect.
    config = subprocess.run(["ansible-config", "dump", "--only-changed"], cwd=str(fleet), env=shell.env, capture_output=True,
                            text=True, check=True).stdout
    assert "DEFAULT_FORKS" in config and "50" in config.split("DEFAULT_FORKS")[1].split("\n")[0]

    first = shell.line(deploy)
    assert first.rc == 0, str(first)
    builds = first.results("Build the batch's configurations in one evaluation, on the controller or the builder host")
    assert len(builds) == 1 and sorted(list(builds.values())[0]["out_paths"]) == ["mon", "web"]
    for name, host in hosts.items():
        assert system_of(host).endswith("-nixos-system-%s-26.11" % ("mon" if name == "mon" else "web"))
        assert host.generation() == 2
    scrape = json.loads(hosts["mon"].read_file("/etc/static/prometheus/prometheus.yml"))
    assert sorted(scrape["scrape_configs"][0]["static_configs"][0]["targets"]) == sorted(
        "%s:9100" % hosts[h].address for h in ("web1", "web2"))

    web_nix = fleet / "nix" / "web.nix"
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

    assert shell.line(rollback).rc == 0
    assert hosts["web1"].generation() == 1  # the system the host was installed with
    assert shell.line(given).rc == 0
    assert hosts["web1"].generation() == 3 and hosts["web1"].exists("/run/current-system/sw/bin/git")


def test_fleet_pinned_by_path_and_by_input_override(fresh_hosts, testhosts, tmp_path):
    """The how-to's classic file with nixos_nix_path, and the flake with nixos_override_inputs, both pointed at a
    nixpkgs checkout next to the inventory: they build the same systems, from that checkout. Between them, the
    classic file pinned to a commit's tarball."""
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
    deploy = DEPLOY + " -e @%s"

    by_path = shell.line(deploy % os.path.join(HOWTO, "pin-file.yml"))
    assert by_path.rc == 0, str(by_path)
    systems = {n: system_of(h) for n, h in hosts.items()}
    # The stand-in's packages are scripts that say their name and version.
    assert {n: h.run("/run/current-system/sw/bin/python3").stdout.strip() for n, h in hosts.items()} == dict.fromkeys(hosts, "python3 3.12.4")

    # The tarball of one commit, as the user's copy of the how-to file names it: here a file: URL (no network),
    # which Nix fetches the way it fetches https:, of a nixpkgs with a newer Python still.
    commit = "0123456789abcdef0123456789abcdef01234567"
    release = tmp_path / "release"
    copy_stand_in(str(release / ("nixpkgs-" + commit)))
    with open(release / ("nixpkgs-" + commit) / "pkgs.nix", "w", encoding="utf-8") as f:
        f.write(text.replace('version = "3.11.9"', 'version = "3.13.1"'))
    tarball = release / (commit + ".tar.gz")
    subprocess.run(["tar", "-C", str(release), "-czf", str(tarball), "nixpkgs-" + commit], check=True)
    with open(os.path.join(HOWTO, "pin-tarball.yml"), encoding="utf-8") as f:
        pinned = f.read()
    assert "https://github.com/NixOS/nixpkgs/archive/COMMIT.tar.gz" in pinned
    (fleet / "pin-tarball.yml").write_text(pinned.replace("https://github.com/NixOS/nixpkgs/archive/COMMIT.tar.gz",
                                                          "file://%s" % tarball))
    by_tarball = shell.line(deploy % (fleet / "pin-tarball.yml"))
    assert by_tarball.rc == 0, str(by_tarball)
    assert {n: h.run("/run/current-system/sw/bin/python3").stdout.strip() for n, h in hosts.items()} == dict.fromkeys(hosts, "python3 3.13.1")
    tarball_systems = {n: system_of(h) for n, h in hosts.items()}
    assert all(tarball_systems[n] != systems[n] for n in hosts)

    # Back to the checkout's nixpkgs: the systems of the first deploy.
    assert shell.line(deploy % os.path.join(HOWTO, "pin-file.yml")).rc == 0
    assert {n: system_of(h) for n, h in hosts.items()} == systems

    by_input = shell.line(deploy % os.path.join(HOWTO, "override-nixpkgs.yml"))
    assert by_input.rc == 0, str(by_input)
    # Only the build's garbage collector root is new (a flake's has another name than a file's); nothing is
    # copied or switched.
    assert {e["task"] for e in by_input.events if e["result"].get("changed")} <= {
        "Build the batch's configurations in one evaluation, on the controller or the builder host"}
    assert not any(r["changed"] for r in by_input.results("Switch to the new system").values())
    assert {n: system_of(h) for n, h in hosts.items()} == systems
    assert json.loads((fleet / "nix" / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]["path"] != checkout  # untouched


def test_awx_project_through_ansible_runner(fresh_hosts, testhosts, tmp_path):
    """examples/awx as AWX runs it: the project with its collections installed beside it, the Hetzner inventory
    source (against a stand-in of the API on loopback, the token from the environment), the SSH key in the agent."""
    hosts = {h.name: h for h in fresh_hosts("web1", "web2", "mon")}
    data = tmp_path / "runner"
    project = data / "project"
    copy_example("awx", project)
    copy_example("fleet", data / "fleet")  # group_vars/nixos.yml: "{{ playbook_dir }}/../fleet/nix"
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
        assert system_of(host).endswith("-nixos-system-%s-26.11" % ("mon" if name == "mon" else "web"))
    scrape = json.loads(hosts["mon"].read_file("/etc/static/prometheus/prometheus.yml"))
    assert sorted(scrape["scrape_configs"][0]["static_configs"][0]["targets"]) == sorted(
        "%s:9100" % hosts[h].address for h in ("web1", "web2"))
    assert "db1" not in proc.stdout
    assert not (data / "fleet" / "nix" / "flake.lock").exists()  # the deploy never writes the project's files
    assert api.count("/v1/servers") >= 1


def test_inventory_quick_start(testhosts, tmp_path):
    """docs/inventory.md's quick start: the example source, its credentials from the environment, against the
    stand-in APIs; a second listing comes from the cache."""
    (block,) = docs.run_blocks("inventory")
    work = tmp_path / "work"
    (work / "inventory").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    shutil.copy(os.path.join(REPO_ROOT, "inventory", "hetzner.yml"), work / "inventory" / "hetzner.yml")
    credentials = {name: exported([block], name) for name in ("HCLOUD_TOKEN", "HROBOT_API_USER", "HROBOT_API_PASSWORD")}
    with FakeHetzner(cloud_token=credentials["HCLOUD_TOKEN"], robot_user=credentials["HROBOT_API_USER"],
                     robot_password=credentials["HROBOT_API_PASSWORD"]) as api:
        api.cloud.add_server(name="web1", labels={"nixos": "web"})
        api.cloud.add_server(name="db1", labels={"team": "data"})  # no nixos label: not listed
        api.robot.add_server(number=123456, name="dedi1")
        shell = Shell(testhosts, tmp_path, work)
        shell.env.update(HCLOUD_ENDPOINT=api.cloud_url, HROBOT_API_ENDPOINT=api.robot_url)
        first = shell.block(block)
        assert first.rc == 0, first.stdout + first.stderr
        requests = len(api.requests)
        again = shell.block(block)
        assert again.rc == 0 and again.stdout == first.stdout, again.stdout + again.stderr
        assert len(api.requests) == requests  # the cache answered
    lines = first.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("|--@nixos:"))
    depth = lines[start].index("@")
    members = []
    for line in lines[start + 1:]:
        if line.index("|--") < depth:
            break
        members.append(line.split("|--")[-1])
    assert sorted(members) == ["dedi1", "web1"], first.stdout
    cache = "".join(p.read_text() for p in (tmp_path / "home" / ".cache" / "ansinix-inventory").iterdir())
    assert "dedi1" in cache and not any(value in cache for value in credentials.values())


def _md_driver():
    """Whether this machine's kernel has the md driver the dedicated server's mdadm RAID1 needs."""
    return os.path.exists("/proc/mdstat")


def test_bootstrap(fresh_hosts, testhosts, tmp_path):
    """docs/bootstrap.md on test machines with loop-device disks, reset into a rescue system through the stand-in
    Robot and Cloud APIs: the copy of the example, the dedicated server's plan and install (which stops before any
    change where the kernel lacks the md driver, as the doc says), the rescue by hand and the rerun, the Cloud server
    and the Debian server installed from start to finish, their facts read by facts.nix, and the everyday deploy."""
    hosts = {h.name: h for h in fresh_hosts("dedi1", "cloud1", "deb1",
                                            dedi1={"disks": [700, 700], "system": None, "nix": False, "nixos": False},
                                            cloud1={"disks": [600], "system": None, "nix": False, "nixos": False},
                                            deb1={"system": None, "nix": False, "nixos": False})}
    dedi1, cloud1, deb1 = hosts["dedi1"], hosts["cloud1"], hosts["deb1"]
    home = tmp_path / "home"
    home.mkdir()
    link_installed_collection(home)
    stand_in = copy_stand_in(str(tmp_path / "stand-in"))
    with open(testhosts.ssh_key_path + ".pub", encoding="utf-8") as f:
        harness_key = f.read().strip()
    blocks = docs.run_blocks("bootstrap")
    credentials = {name: exported(blocks, name) for name in ("HROBOT_API_USER", "HROBOT_API_PASSWORD", "HCLOUD_TOKEN")}
    with FakeHetzner(cloud_token=credentials["HCLOUD_TOKEN"], robot_user=credentials["HROBOT_API_USER"],
                     robot_password=credentials["HROBOT_API_PASSWORD"]) as api:
        api.robot.add_server(number=123456, name="dedi1")
        api.robot.add_key("laptop", harness_key)  # the key name of the doc's inventory
        api.cloud.add_server(name="cloud1")
        api.cloud.add_ssh_key("laptop", harness_key)

        def on_reset(kind, srv, rescue):
            name = "dedi1" if kind == "robot" else srv["name"]
            hosts[name].power_cycle(rescue_keys=rescue["authorized_keys"] if rescue else None)
        api.on_reset = on_reset

        shell = Shell(testhosts, tmp_path, home)
        # The user's terminal keeps what the doc exported for the next commands; the stand-in APIs' address.
        shell.env.update(credentials, HCLOUD_ENDPOINT=api.cloud_url, HROBOT_API_ENDPOINT=api.robot_url)
        used = []

        def run(text, whole=False):
            block = block_with(blocks, text, whole)
            used.append(block)
            return shell.block(block)

        copied = run("cp -r ")
        assert copied.rc == 0, str(copied)
        servers = home / "servers"
        shell.cwd = str(servers)  # the block's `cd ~/servers`
        # The user's edits, for the test machine: the test hosts' addresses and connection, their loop devices in
        # place of the NVMe and virtio disks (the rest of each layout as the doc has it), the harness's Nix
        # installer and reboots; and the stand-in nixpkgs in the flake.
        inventory = servers / "inventory.yml"
        layouts = {name: json.loads(subprocess.run(["ansible-inventory", "-i", str(inventory), "--host", name], env=ansible_env(),
                                                   capture_output=True, text=True, check=True).stdout).get("nixos_disks")
                   for name in hosts}
        extra = {}
        for name, host in hosts.items():
            extra[name] = dict(nixos_nix_install_command=INSTALL_NIX_COMMAND, nixos_reboot_command=REBOOT_COMMAND,
                               nixos_known_hosts_file=testhosts.known_hosts_path, nixos_reboot_timeout=120,
                               nixos_rescue_timeout=120,
                               # A test host's / is the machine's own: the old /boot goes under its /root.
                               nixos_boot_backup_dir="/root/boot.bak")
            if layouts[name]:
                extra[name]["nixos_disks"] = dict(layouts[name], disks=host.disks())
        # deb1's / is on no disk of its own, as on no real server: name the disk GRUB would go on.
        extra["deb1"]["nixos_grub_devices"] = ["/dev/vda"]
        point_inventory(inventory, testhosts, list(hosts), extra)
        point_flake(servers / "nix" / "flake.nix", stand_in)

        lock = run("flake lock")
        assert lock.rc == 0, lock.stderr

        # The dedicated server: the plan, through the API, changes nothing.
        plan = run("--limit dedi1 -e nixos_bootstrap_reinstall=dedi1 -e nixos_wipe_disks=true --check")
        assert plan.rc == 0, str(plan)
        assert "would reset dedi1 into the robot rescue system, then lay out %s (wiping: True)" % ", ".join(dedi1.disks()) in plan.stdout
        assert api.robot.resets == [] and not api.robot.rescue[123456]["active"]

        # The install: reset into the rescue system, then the disks.
        def dedi1_installed(result):
            if _md_driver():
                assert result.rc == 0, str(result)
                assert dedi1.readlink("/run/current-system").endswith("-nixos-system-dedi1-26.11")
                return
            assert result.rc != 0
            refused = result.results("Partition, format and mount the disks").get("dedi1", {}).get("msg", "")
            assert refused.startswith("raid=mdadm needs the kernel's md driver"), str(result)
            for disk in dedi1.disks():  # nothing was changed
                assert dedi1.run("blkid -p %s" % disk, check=False).returncode == 2
            assert not (servers / "nix" / "hosts" / "dedi1").exists()

        with testhosts.serve_reboots():
            dedi1_installed(run("ansible-playbook -i inventory.yml ansinix.nixos.bootstrap --limit dedi1 "
                                "-e nixos_bootstrap_reinstall=dedi1 -e nixos_wipe_disks=true\n", whole=True))
        assert api.robot.resets == [(123456, "hw")]

        # Into the rescue system again by hand, and the rerun that does not reset.
        boot_id = dedi1.boot_id()
        rescue = run("-m ansinix.nixos.hetzner_rescue")
        assert rescue.rc == 0, rescue.stdout + rescue.stderr
        assert "root_password" not in rescue.stdout or "censored" in rescue.stdout
        assert api.robot.resets == [(123456, "hw")] * 2 and dedi1.boot_id() != boot_id
        with testhosts.serve_reboots():
            dedi1_installed(run("-e nixos_rescue_api=none"))
        assert len(api.robot.resets) == 2

        # The Cloud server, from start to finish.
        with testhosts.serve_reboots():
            cloud = run("--limit cloud1 -e nixos_bootstrap_reinstall=cloud1")
        assert cloud.rc == 0, str(cloud)
        assert [r[1] for r in api.cloud.resets] == ["reset"]
        # The Debian server, converted in place.
        with testhosts.serve_reboots():
            infect = run("--limit deb1")
        assert infect.rc == 0, str(infect)

        for name, host in (("cloud1", cloud1), ("deb1", deb1)):
            system = host.readlink("/run/current-system")
            assert system.endswith("-nixos-system-%s-26.11" % name) and host.exists("/etc/NIXOS"), system
            # The configuration's hardware module reads the facts the roles wrote.
            facts = json.loads((servers / "nix" / "hosts" / name / "hardware.json").read_text())
            config = json.loads(subprocess.run(
                ["nix-instantiate", "--eval", "--strict", "--json", "-E", "import %s/facts.nix (builtins.fromJSON "
                 "(builtins.readFile %s/hosts/%s/hardware.json))" % (servers / "nix", servers / "nix", name)],
                capture_output=True, text=True, check=True).stdout)
            root = facts["hardware"]["file_systems"]["/"]
            assert config["fileSystems"]["/"]["device"] == root["device"] and config["fileSystems"]["/"]["fsType"] == root["fsType"]
            uplink = config["systemd"]["network"]["networks"]["10-uplink"]
            assert uplink["matchConfig"]["MACAddress"] == facts["network"]["mac"] != ""
            assert uplink["address"][0] == "%s/%s" % (host.address, facts["network"]["ipv4"]["prefix_length"])
        cloud_facts = json.loads((servers / "nix" / "hosts" / "cloud1" / "hardware.json").read_text())
        assert cloud_facts["hardware"]["file_systems"]["/"]["device"] == "/dev/disk/by-label/root"
        assert cloud_facts["hardware"]["file_systems"]["/"]["fsType"] == "ext4"
        assert cloud_facts["hardware"]["boot"] == "bios"  # boot: auto, on a machine without /sys/firmware/efi
        assert cloud_facts["hardware"]["grub_devices"] == cloud1.disks()

        # Everyday deploys: what the bootstrap installed is what the site deploys. Where dedi1 could not be
        # installed, it is not in the inventory the user deploys (as a server that was never installed).
        systems = {n: hosts[n].readlink("/run/current-system") for n in ("cloud1", "deb1")}
        if not _md_driver():
            data = yaml.safe_load(inventory.read_text())
            del data["nixos"]["hosts"]["dedi1"]
            inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        site = run(DEPLOY + "\n", whole=True)
        assert site.rc == 0, str(site)
        assert {n: hosts[n].readlink("/run/current-system") for n in systems} == systems
        assert not any(r["changed"] for r in site.results("Switch to the new system").values())

    assert sorted(b.line for b in used) == sorted(b.line for b in blocks), "a block of docs/bootstrap.md was not run"
