"""ansinix.nixos.nix_build through real ansible and ansible-playbook: on the controller, on test hosts.

The fixtures (tests/fixtures/nix_build) need no nixpkgs: their derivations write the data that
reached them as JSON, so a test reads exactly what the expression saw.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import uuid

import pytest

from ansinix_test import REPO_ROOT
from ansinix_test.ansible import ansible_env, run_ansible, run_playbook

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "nix_build")
CLASSIC = os.path.join(FIXTURES, "classic.nix")
NIX_ENV = ansible_env()


def nix(*argv, check=True):
    return subprocess.run(list(argv), env=NIX_ENV, capture_output=True, text=True, check=check)


def valid(path):
    return nix("nix-store", "--check-validity", path, check=False).returncode == 0


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def build_locally(*tasks, env=None, args=()):
    """One ansible-playbook run on the controller with a nix_build task per (name, params[, task keywords]).

    Failing tasks do not stop the play; returns {name: result} (and the run, for its output).
    """
    play = [{"name": "nix_build on the controller", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": [dict({"name": t[0], "ansinix.nixos.nix_build": t[1], "ignore_errors": True}, **(t[2] if len(t) > 2 else {}))
                       for t in tasks]}]
    # JSON is YAML: no quoting surprises for the data.
    run = run_playbook(json.dumps(play, indent=1), env=env, args=args)
    assert run.rc == 0, str(run)
    # The recorded status says whether a task failed (Ansible leaves `failed` out of ignored failures).
    status = {e["task"]: e["status"] for e in run.events}
    build_locally.last_run = run
    return {t[0]: dict(run.result(t[0], "localhost"), failed=status[t[0]] == "failed") for t in tasks}


def nonce():
    return uuid.uuid4().hex[:12]


def ok(result):
    assert not result.get("failed"), result.get("msg")
    return result


# -- on the controller ------------------------------------------------------------------------------------

# Ansible runs the module (AnsiballZ) with and without pipelining: AnsibleModule's `invocation` is in the result.
@pytest.mark.parametrize("pipelining", ["True", "False"], ids=["pipelining", "no pipelining"])
def test_file_with_args_builds_roots_and_is_idempotent(tmp_path, pipelining):
    data = {"nonce": nonce(), "peers": ["10.0.0.1", "10.0.0.2"], "port": 8080, "tls": True, "motd": "h\u00e9llo \"${x}\" 'y'"}
    link = str(tmp_path / "roots" / "demo")
    params = {"file": CLASSIC, "nixos_configuration": "demo", "args": data, "out_link": link}
    results = build_locally(("Build", params), ("Again", params), env={"ANSIBLE_PIPELINING": pipelining})
    built, again = ok(results["Build"]), ok(results["Again"])
    assert "invocation" in built and "invocation" in again
    out_path, drv = built["out_path"], built["drv_path"]
    assert built["changed"] is True and built["already_valid"] is False
    assert out_path.endswith("-nixos-system-demo") and drv.endswith("-nixos-system-demo.drv")
    # What the expression saw is exactly the data, strings with quotes, ${ and non-ASCII included.
    assert read_json(out_path) == {"configuration": "demo", "ansinixArgs": data}
    assert nix("nix-store", "--query", "--outputs", drv).stdout.split() == [out_path]
    # The root is a real GC root: the link points to the result and Nix counts it.
    assert built["out_link"] == link and os.readlink(link) == out_path
    assert link in nix("nix-store", "--query", "--roots", out_path).stdout
    assert nix("nix-store", "--delete", out_path, check=False).returncode != 0 and valid(out_path)
    assert built["nix_version"] == nix("nix-store", "--version").stdout.split()[-1]
    assert again["changed"] is False and again["already_valid"] is True
    assert (again["out_path"], again["drv_path"]) == (out_path, drv)
    # The args went through a private temporary file that is gone again.
    assert not [n for n in os.listdir("/tmp") if n.startswith("ansinix-args-")]


def test_flake_args_reach_nixos_configurations_and_function_outputs(tmp_path):
    data = {"nonce": nonce(), "nested": {"list": [1, {"deep": None}], "float": 1.5}}
    results = build_locally(
        ("Configuration", {"flake": FIXTURES, "nixos_configuration": "demo", "args": data, "out_link": str(tmp_path / "demo")}),
        # An output that is a function gets the data itself (for imports and specialArgs).
        ("Function", {"flake": FIXTURES + "#systemFor.config.system.build.toplevel", "args": data, "out_link": str(tmp_path / "f")}),
        # A configuration name with dots, and Nix's own search for a short name (packages.SYSTEM.plain).
        ("Dotted", {"flake": FIXTURES, "nixos_configuration": "web1.example.org", "out_link": str(tmp_path / "d")}),
        ("Short name", {"flake": FIXTURES + "#plain", "out_link": str(tmp_path / "plain")}),
        ("No args", {"flake": FIXTURES, "nixos_configuration": "demo", "out_link": str(tmp_path / "bare")}),
    )
    assert read_json(ok(results["Configuration"])["out_path"]) == {"configuration": "demo", "ansinixArgs": data}
    assert read_json(ok(results["Function"])["out_path"]) == {"fromFunction": data}
    assert ok(results["Dotted"])["out_path"].endswith("-nixos-system-web1-example-org")
    assert read_json(ok(results["Short name"])["out_path"]) == {"plain": True}
    # Without args it is another system: the data really is part of it.
    assert read_json(ok(results["No args"])["out_path"]) == {"configuration": "demo", "ansinixArgs": None}


def test_ansible_files_in_the_flake_directory_are_named_in_one_warning(tmp_path):
    """A flake next to the inventory and group_vars/ (the vault with them): Nix copies all of it into the store.
    The build warns once, naming the files; the same flake in a directory of its own builds without a warning."""
    mixed = tmp_path / "ansible"
    shutil.copytree(FIXTURES, str(mixed))
    (mixed / "group_vars" / "nixos").mkdir(parents=True)
    (mixed / "group_vars" / "nixos" / "vault.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162630a\n")
    (mixed / "inventory.yml").write_text("---\nnixos:\n  hosts:\n    web1:\n")
    (mixed / "files").mkdir()
    (mixed / "files" / "tls.key").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162630a\n")
    clean = tmp_path / "nix"
    shutil.copytree(FIXTURES, str(clean))
    params = {"nixos_configuration": "demo", "out_link": str(tmp_path / "root")}
    results = build_locally(("Mixed", dict(params, flake=str(mixed)), {"check_mode": True}),
                            ("Mixed again", dict(params, flake=str(mixed)), {"check_mode": True}))
    run = build_locally.last_run
    assert not results["Mixed"]["failed"]
    warning = ("flake directory %s holds Ansible files: files/tls.key (vault), group_vars/nixos/vault.yml (vault), "
               "inventory.yml (inventory). Nix copies the directory into the Nix store, which every user can read, "
               "and a build on the target sends it to every host: move the Nix files into a directory of their own (say "
               "nix/) and point nixos_flake or nixos_file there" % mixed)
    said = " ".join((run.stdout + run.stderr).replace("[WARNING]:", "\n[WARNING]:").split())
    assert said.count("[WARNING]: " + warning) == 1, run.stdout + run.stderr
    build_locally(("Clean", dict(params, flake=str(clean)), {"check_mode": True}))
    assert "holds Ansible files" not in build_locally.last_run.stdout + build_locally.last_run.stderr


def test_large_args_reach_nix_whole(tmp_path):
    # Far beyond what one command line argument or environment variable may hold (128 KiB).
    hosts = {"host%05d" % i: {"address": "10.0.%d.%d" % (i >> 8, i & 255), "note": "\u00fc" * 20} for i in range(12000)}
    data = {"nonce": nonce(), "hosts": hosts}
    assert len(json.dumps(data)) > 1024 * 1024
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"big": data}))
    results = build_locally(
        ("File", {"file": CLASSIC, "nixos_configuration": "demo", "args": "{{ big }}", "out_link": str(tmp_path / "file")}),
        ("Flake", {"flake": FIXTURES, "nixos_configuration": "demo", "args": "{{ big }}", "out_link": str(tmp_path / "flake")}),
        args=["-e", "@%s" % vars_file])
    assert read_json(ok(results["File"])["out_path"])["ansinixArgs"] == data
    assert read_json(ok(results["Flake"])["out_path"])["ansinixArgs"] == data


def test_check_mode_evaluates_only_and_writes_nothing(tmp_path):
    data = {"nonce": nonce()}
    file_params = {"file": CLASSIC, "nixos_configuration": "demo", "args": data, "out_link": str(tmp_path / "file")}
    flake_params = {"flake": FIXTURES, "nixos_configuration": "demo", "args": data, "out_link": str(tmp_path / "flake")}
    check = {"check_mode": True}
    checked = build_locally(("File", file_params, check), ("Flake", flake_params, check))
    for source, params in (("File", file_params), ("Flake", flake_params)):
        result = ok(checked[source])
        assert result["changed"] is True and result["already_valid"] is False
        assert result["out_link"] == params["out_link"] and not os.path.lexists(params["out_link"])
        # Read-only evaluation: neither the result nor even its derivation is in the store.
        assert not valid(result["out_path"]) and not os.path.exists(result["drv_path"])
    # The file and the flake describe the same system here.
    assert checked["File"]["out_path"] == checked["Flake"]["out_path"]
    # A build then makes exactly what check mode announced, and check mode then reports no change.
    after = build_locally(("Build", file_params), ("Check file", file_params, check), ("Check flake", flake_params, check))
    built = ok(after["Build"])
    assert (built["out_path"], built["drv_path"]) == (checked["File"]["out_path"], checked["File"]["drv_path"])
    assert ok(after["Check file"])["changed"] is False and after["Check file"]["already_valid"] is True
    # Built, but the flake's root would be new: a change.
    assert ok(after["Check flake"])["changed"] is True and after["Check flake"]["already_valid"] is True
    assert not os.path.lexists(flake_params["out_link"])


def test_out_link_follows_the_last_build(tmp_path):
    link = str(tmp_path / "root")
    one = {"file": CLASSIC, "nixos_configuration": "demo", "args": {"v": nonce()}, "out_link": link}
    two = dict(one, args={"v": nonce()})
    results = build_locally(("One", one), ("Two", two), ("One again", one))
    first, second, back = ok(results["One"]), ok(results["Two"]), ok(results["One again"])
    assert second["changed"] and second["out_path"] != first["out_path"]
    # Already built, but the root moves back: that is a change, and it is reported as one.
    assert back["already_valid"] is True and back["changed"] is True
    assert os.readlink(link) == first["out_path"]
    assert link not in nix("nix-store", "--query", "--roots", second["out_path"]).stdout


def test_two_projects_with_one_configuration_name_keep_two_default_roots(tmp_path):
    """Two checkouts with a configuration `demo`, built in turn with the default out_link: neither moves the other's
    root (a shared root would be re-pointed by each build, report a change every time, and leave the other's
    system to the garbage collector)."""
    sources = []
    for project in ("shop", "blog"):
        shutil.copytree(FIXTURES, tmp_path / project)
        sources.append(str(tmp_path / project / "classic.nix"))
    args = {"v": nonce()}
    tasks = [(name, {"file": source, "nixos_configuration": "demo", "args": dict(args, project=name)})
             for name, source in zip(("Shop", "Blog"), sources)]
    first = build_locally(*tasks)
    shop, blog = ok(first["Shop"]), ok(first["Blog"])
    assert shop["out_path"] != blog["out_path"] and shop["out_link"] != blog["out_link"]
    try:
        again = build_locally(*tasks)
        # Nothing changed for either: each root still points at its own system, and both systems are rooted.
        assert not ok(again["Shop"])["changed"] and not ok(again["Blog"])["changed"]
        for built in (shop, blog):
            assert os.readlink(built["out_link"]) == built["out_path"]
            assert built["out_link"] in nix("nix-store", "--query", "--roots", built["out_path"]).stdout
    finally:
        for built in (shop, blog):
            shutil.rmtree(os.path.dirname(built["out_link"]), ignore_errors=True)


def test_search_path_is_only_what_the_task_gives(tmp_path):
    """The caller's NIX_PATH, and a nix-path in the Nix configuration (as NixOS sets it), are ignored unless asked for."""
    expr = os.path.join(FIXTURES, "search-path.nix")
    ambient = "ansinixpin=" + os.path.join(FIXTURES, "pins", "ambient")
    explicit = "ansinixpin=" + os.path.join(FIXTURES, "pins", "explicit")
    for how, env in (("env", {"NIX_PATH": ambient}), ("conf", {"NIX_CONFIG": NIX_ENV["NIX_CONFIG"] + "\nnix-path = " + ambient})):
        results = build_locally(
            ("Ignored", {"file": expr, "out_link": str(tmp_path / how / "i")}),
            ("Explicit", {"file": expr, "nix_path": [explicit], "out_link": str(tmp_path / how / "e")}),
            ("From the environment", {"file": expr, "use_environment_nix_path": True, "out_link": str(tmp_path / how / "u")}),
            ("Both", {"file": expr, "use_environment_nix_path": True, "nix_path": [explicit], "out_link": str(tmp_path / how / "b")}),
            env=env)
        assert "file 'ansinixpin' was not found in the Nix search path" in results["Ignored"]["msg"]
        assert "search-path.nix:3:" in results["Ignored"]["msg"]
        assert read_json(ok(results["Explicit"])["out_path"]) == {"found": "explicit"}
        assert read_json(ok(results["From the environment"])["out_path"]) == {"found": "ambient"}
        # With both, the task's entries come first.
        assert read_json(ok(results["Both"])["out_path"]) == {"found": "explicit"}


# -- bad input: one clear line, nothing changed -------------------------------------------------------------

EVAL_ERROR = os.path.join(FIXTURES, "eval-error.nix")
BAD_INPUTS = [
    ("eval-error", {"file": EVAL_ERROR, "attr": "config.system.build.toplevel"},
     "failed: error: undefined variable 'nosuchvariable' at %s:5:23" % EVAL_ERROR),
    # In a flake the error points into the flake's directory, not into its copy in the store.
    ("flake-eval-error", {"flake": FIXTURES, "nixos_configuration": "broken"},
     "failed: error: undefined variable 'nosuchvariable' at %s:5:23" % EVAL_ERROR),
    ("build-error", {"file": CLASSIC, "attr": "fails"},
     "-fails-in-file.drv' failed with exit code 3. Its last log line: this build fails on purpose. "
     "The whole log: nix-store --read-log /nix/store/"),
    ("flake-build-error", {"flake": FIXTURES + "#packages.x86_64-linux.fails"}, "-fails-in-flake.drv' failed with exit code 3."),
    # Nix's timeout setting, given as an option, ends a build that would sleep ten minutes.
    ("options-reach-nix", {"file": CLASSIC, "attr": "sleeper", "args": {"nonce": nonce()}, "options": {"timeout": 2}},
     "timed out after 2 seconds"),
    ("bad-flake-reference", {"flake": "::bad::#x"},
     "evaluating ::bad::#x failed: error: '::bad::#x' is not a valid URL; write a directory, path:DIR"),
    ("no-flake-directory", {"flake": FIXTURES + "/nowhere#x"}, "flake directory %s/nowhere does not exist on" % FIXTURES),
    ("no-flake-nix", {"flake": FIXTURES + "/pins#x"}, "flake directory %s/pins has no flake.nix" % FIXTURES),
    ("flake-without-attribute", {"flake": FIXTURES}, "names no attribute: use flake: '<ref>#<attr>', attr, or nixos_configuration"),
    ("unknown-configuration-in-flake", {"flake": FIXTURES, "nixos_configuration": "nope"},
     "flake 'path:%s' does not provide attribute 'nixosConfigurations.nope' (nixosConfigurations has: broken, demo, other, "
     "web1.example.org)" % FIXTURES),
    ("unknown-configuration-in-file", {"file": CLASSIC, "nixos_configuration": "nope"},
     "attribute 'nixosConfigurations.nope' not found in %s (nixosConfigurations has: demo, other)" % CLASSIC),
    ("unknown-output", {"flake": FIXTURES + "#nosuchoutput"}, "does not provide attribute"),
    ("not-a-derivation", {"file": CLASSIC, "attr": "notADerivation"},
     "notADerivation is a set, not a derivation: name one to build"),
    ("args-to-a-file-without-function", {"file": os.path.join(FIXTURES, "not-a-function.nix"), "attr": "hello", "args": {"a": 1}},
     "not-a-function.nix is not a function, so it cannot take args: start it with { args ? { }, ... }:"),
    ("args-to-a-plain-flake-output", {"flake": FIXTURES + "#plain", "args": {"a": 1}},
     "args were given, but plain is neither a function nor a NixOS configuration"),
    ("missing-file", {"file": "/nowhere/default.nix"}, "file /nowhere/default.nix does not exist on"),
    ("attr-and-flake-attribute", {"flake": FIXTURES + "#plain", "attr": "plain"},
     "give only one of attr, nixos_configuration and a flake's #ATTRIBUTE"),
    ("attr-and-configuration", {"file": CLASSIC, "attr": "hello", "nixos_configuration": "demo"},
     "parameters are mutually exclusive: attr|nixos_configuration"),
    ("flake-and-file", {"file": CLASSIC, "flake": FIXTURES}, "parameters are mutually exclusive: flake|file"),
    ("bad-attribute-path", {"file": CLASSIC, "attr": "a..b"}, "attr 'a..b' is not an attribute path"),
    ("bad-configuration-name", {"file": CLASSIC, "nixos_configuration": "web1; rm -rf /"},
     "nixos_configuration 'web1; rm -rf /' is not a configuration name"),
    ("bad-option-name", {"file": CLASSIC, "attr": "hello", "options": {"--max-jobs": 1}},
     "options: '--max-jobs' is not a Nix setting name"),
    ("bad-search-path", {"file": CLASSIC, "attr": "hello", "nix_path": ["nixpkgs=/my nixpkgs"]},
     "nix_path entry 'nixpkgs=/my nixpkgs' is not valid"),
    ("override-inputs-with-a-file", {"file": CLASSIC, "attr": "hello", "override_inputs": {"nixpkgs": "/srv"}},
     "override_inputs is for flakes"),
    ("out-link-is-a-directory", {"file": CLASSIC, "attr": "hello"}, "exists and is no symlink: remove it or choose another out_link"),
]


@pytest.fixture(scope="module")
def bad_results(tmp_path_factory):
    """Every bad input in one playbook run: {name: (result, out_link)}."""
    tmp = tmp_path_factory.mktemp("bad")
    tasks = []
    for name, params, _message in BAD_INPUTS:
        link = tmp / name / "root"
        link.parent.mkdir()
        if name == "out-link-is-a-directory":
            link.mkdir()
            (link / "keep").write_text("mine")
        tasks.append((name, dict(params, out_link=str(link))))
    results = build_locally(*tasks)
    return {name: (results[name], tmp / name / "root") for name, _p, _m in BAD_INPUTS}


@pytest.mark.parametrize("name,message", [(b[0], b[2]) for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_and_changes_nothing(bad_results, name, message):
    result, link = bad_results[name]
    assert result.get("failed") is True and result.get("changed") is False
    assert message in result["msg"], result["msg"]
    # Ansible 2.19 puts a placeholder under `exception` for every failure; a crash would leave its traceback there.
    assert "\n" not in result["msg"] and result.get("exception", "(traceback unavailable)") == "(traceback unavailable)"
    if name == "out-link-is-a-directory":
        assert (link / "keep").read_text() == "mine"
    else:
        assert not os.path.lexists(link)
    if name.endswith("build-error"):
        # The log's tail comes along: the last 25 lines, the failure's own message last.
        assert result["log_tail"][-1] == "this build fails on purpose" and len(result["log_tail"]) == 25
        assert result["log_tail"][0].startswith("log line 77 of fails-in-")
        assert result["failed_drv"] in result["msg"]
        assert not valid(re.match(r"building (/nix/store/\S+) failed", result["msg"]).group(1))
    if name == "options-reach-nix":
        assert result["log_tail"] == ["going to sleep"]
    if "eval-error" in name:
        assert result["nix_error"] == ["error: undefined variable 'nosuchvariable'", "       at %s:5:23:" % EVAL_ERROR]


# -- on test hosts ---------------------------------------------------------------------------------------

def send_fixtures(host, where="/srv/fleet"):
    """The host sees its own file system: give it a copy of the fixtures."""
    archive = subprocess.run(["tar", "-C", FIXTURES, "-c", "."], capture_output=True, check=True).stdout
    host.run("rm -rf %s && mkdir -p %s && tar -C %s -x" % ((shlex.quote(where),) * 3), input=archive)


def test_build_on_the_target_keeps_the_result_until_it_is_replaced(fresh_hosts, testhosts):
    (host,) = fresh_hosts("nbt1")
    send_fixtures(host)
    tag = nonce()
    play = """
- name: Build on the target
  hosts: nbt1
  gather_facts: false
  tasks:
    - name: Check
      ansinix.nixos.nix_build:
        file: /srv/fleet/classic.nix
        nixos_configuration: demo
        args: {host: "{{ inventory_hostname }}", address: "{{ ansible_host }}", tag: "%(tag)s"}
      check_mode: true
    - name: Build
      ansinix.nixos.nix_build:
        file: /srv/fleet/classic.nix
        nixos_configuration: demo
        args: {host: "{{ inventory_hostname }}", address: "{{ ansible_host }}", tag: "%(tag)s"}
    - name: Flake
      ansinix.nixos.nix_build:
        flake: /srv/fleet
        nixos_configuration: other
        args: {host: "{{ inventory_hostname }}", tag: "%(tag)s"}
""" % {"tag": tag}
    run = run_playbook(play, hosts=testhosts)
    assert run.rc == 0, str(run)
    checked, built, flake = (run.result(t, "nbt1") for t in ("Check", "Build", "Flake"))
    out_path = built["out_path"]
    assert checked["out_path"] == out_path and checked["changed"] and not checked["already_valid"]
    assert checked["out_link"] == built["out_link"]
    assert re.fullmatch(r"/nix/var/nix/gcroots/ansinix/srv-fleet-[0-9a-f]{8}/demo", built["out_link"]), built["out_link"]
    # Built there, from inventory data, and not here.
    assert host.store_has(out_path) and not valid(out_path)
    assert json.loads(host.read_file(out_path)) == {
        "configuration": "demo", "ansinixArgs": {"host": "nbt1", "address": host.address, "tag": tag}}
    assert host.readlink(built["out_link"]) == out_path
    assert built["nix_version"] == host.run("nix-store --version").stdout.split()[-1]
    assert flake["out_link"] == os.path.join(os.path.dirname(built["out_link"]), "other")  # one directory for /srv/fleet
    assert host.readlink(flake["out_link"]) == flake["out_path"]
    assert json.loads(host.read_file(flake["out_path"]))["ansinixArgs"] == {"host": "nbt1", "tag": tag}
    assert host.run("ls -A /tmp").stdout.strip() == ""  # the args' temporary files are gone
    # The roots hold through a garbage collection...
    host.run("nix-collect-garbage")
    assert host.store_has(out_path) and host.store_has(flake["out_path"])
    # ...until the next build of the same configuration replaces the root.
    proc = run_ansible(["nbt1", "-m", "ansinix.nixos.nix_build", "-a", "file=/srv/fleet/classic.nix nixos_configuration=demo"],
                       hosts=testhosts)
    assert proc.returncode == 0, proc.stdout
    new = json.loads(proc.stdout.split("=>", 1)[1])["out_path"]
    assert new != out_path and host.readlink(built["out_link"]) == new
    host.run("nix-collect-garbage")
    assert not host.store_has(out_path) and host.store_has(new)


def test_no_nix_on_the_host_says_how_to_install_it(fresh_hosts, testhosts):
    (host,) = fresh_hosts("nbnonix", nbnonix={"nix": False, "system": None})
    send_fixtures(host)
    proc = run_ansible(["nbnonix", "-m", "ansinix.nixos.nix_build", "-a", "file=/srv/fleet/classic.nix attr=hello"],
                       hosts=testhosts)
    assert proc.returncode != 0
    result = json.loads(proc.stdout.split("=>", 1)[1])
    assert result["msg"].startswith("`nix-store` was not found on nbnonix (PATH and /run/current-system/sw/bin"), result["msg"]
    assert "apt-get install nix-bin" in result["msg"] and "\n" not in result["msg"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not host.exists("/nix/var/nix/gcroots/ansinix")


# -- several configurations at once -------------------------------------------------------------------------

def test_configurations_build_together_and_fail_alone(tmp_path):
    """One evaluation and one build for all; a configuration that fails to evaluate or build fails alone."""
    data = {"nonce": nonce()}
    # A file whose configurations share a let at its top: its function is called once for all of them.
    fleet = tmp_path / "fleet.nix"
    fleet.write_text("""{ args ? { } }:
let lib = import %s; in {
  nixosConfigurations = {
    good = lib.nixosLike "good-${args.nonce}" { ansinixArgs = args; };
    unbuildable = { config.system.build.toplevel = lib.failing "unbuildable-${args.nonce}" 3; };
    broken = { config.system.build.toplevel = throw "broken on purpose"; };
  };
}
""" % os.path.join(FIXTURES, "lib.nix"))
    results = build_locally(
        ("Flake", {"flake": FIXTURES, "nixos_configurations": ["demo", "broken", "web1.example.org"], "args": data}),
        ("File", {"file": str(fleet), "nixos_configurations": ["good", "unbuildable", "broken"], "args": data}),
        ("Plan", {"file": str(fleet), "nixos_configurations": ["good"], "args": dict(data, nonce=nonce())}, {"check_mode": True}),
        ("Chunks", {"flake": FIXTURES, "nixos_configurations": ["demo", "other", "broken"], "eval_chunk": 1}),
    )
    flake = results["Flake"]
    assert flake["failed"] and sorted(flake["out_paths"]) == ["demo", "web1.example.org"]
    assert read_json(flake["out_paths"]["demo"]) == {"configuration": "demo", "ansinixArgs": data}
    assert read_json(flake["out_paths"]["web1.example.org"])["ansinixArgs"] == data
    # Its own error, pointing into the flake's directory, as a build of it alone says.
    assert list(flake["errors"]) == ["broken"]
    assert "failed: error: undefined variable 'nosuchvariable' at %s:5:23" % EVAL_ERROR in flake["errors"]["broken"]
    assert flake["msg"].startswith("1 configuration failed: broken: evaluating path:%s#nixosConfigurations.broken" % FIXTURES)

    file = results["File"]
    assert file["failed"] and list(file["out_paths"]) == ["good"] and valid(file["out_paths"]["good"])
    assert read_json(file["out_paths"]["good"]) == {"configuration": "good-" + data["nonce"], "ansinixArgs": data}
    assert file["already_valid"] == {"good": False} and file["changed"]
    # Its root is a real GC root, made without a nix-store call of its own.
    good, link = file["out_paths"]["good"], file["out_links"]["good"]
    assert os.readlink(link) == good and link in nix("nix-store", "--query", "--roots", good).stdout
    assert nix("nix-store", "--delete", good, check=False).returncode != 0 and valid(good)
    assert "broken on purpose" in file["errors"]["broken"]
    assert "-unbuildable-%s.drv' failed with exit code 3. Its last log line: this build fails on purpose." % data["nonce"] \
        in file["errors"]["unbuildable"]
    assert not [n for n in os.listdir("/tmp") if n.startswith(("ansinix-args-", "ansinix-roots-"))]

    plan = ok(results["Plan"])
    assert plan["changed"] is True and not valid(plan["out_paths"]["good"]) and plan["already_valid"] == {"good": False}

    chunks = results["Chunks"]
    assert sorted(chunks["out_paths"]) == ["demo", "other"] and list(chunks["errors"]) == ["broken"]
