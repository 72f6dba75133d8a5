"""nix_build, nix_copy_closure and nixos_switch through real ansible and ansible-playbook, on test hosts."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from ansinix_test.ansible import ansible_env
from ansinix_test.systems import FIXTURES_DIR, FLAKE_DIR, build_system, closure, nar_size

PROFILE = "/nix/var/nix/profiles/system"


def v2(**extra):
    units = {"sshd.service": "openssh 9.6", "nginx.service": "nginx 1.25", "dbus.service": "dbus 1.15"}
    knobs = dict(name="base", version="2", units=units, packages={"nginx": "1.25.0", "openssl": "3.0.13", "coreutils": "9.4"})
    knobs.update(extra)
    return build_system(**knobs)


def deploy_play(system, hosts="dm1", switch_args="", copy_args="", become=False, extra_vars=""):
    return """
- name: Deploy a system
  hosts: %s
  gather_facts: false
  become: %s
  tasks:
    - name: Copy
      ansinix.nixos.nix_copy_closure:
        path: %s
        %s
    - name: Switch
      ansinix.nixos.nixos_switch:
        path: %s
        %s
""" % (hosts, "true" if become else "false", system, copy_args, system, switch_args)


def one_line(proc):
    return proc.stdout + proc.stderr


@pytest.fixture
def host(fresh_hosts):
    (h,) = fresh_hosts("dm1")
    return h


# -- the whole chain, then idempotence ---------------------------------------------------------------------

def test_first_switch_then_rerun_changes_nothing(host, run_playbook):
    base, new = build_system(name="base"), v2()
    run = run_playbook(deploy_play(new, switch_args="keep_generations: 5"))
    assert run.rc == 0, str(run)
    copy = run.result("Copy", "dm1")
    missing = set(closure(new)) - set(closure(base))
    assert set(copy["missing"]) == missing and copy["copied"] == len(missing)
    # What was sent is the NARs of the missing paths; on the wire, plus the protocol's framing (path, references).
    assert copy["nar_bytes"] == copy["bytes"] == nar_size(missing)
    assert nar_size(missing) < copy["wire_bytes"] <= nar_size(missing) + 1024 * len(missing)
    switch = run.result("Switch", "dm1")
    assert switch["changed"] and switch["previous"] == base and switch["current"] == new
    assert switch["generation"] == 2 and switch["confirmed"] is True and switch["rolled_back"] is False
    assert switch["units"]["restarted"] == ["nginx.service"] and switch["units"]["reloaded"] == ["dbus.service"]
    assert switch["reboot_required"] is False
    assert host.readlink("/run/current-system") == new
    assert host.generation() == 2 and host.readlink(PROFILE + "-2-link") == new
    assert host.default_boot_system() == new
    # Second run: nothing sent, nothing activated.
    log_before = host.read_file("/boot/loader/ansinix-bootloader.log")
    again = run_playbook(deploy_play(new))
    assert again.rc == 0, str(again)
    assert again.result("Copy", "dm1")["bytes"] == 0 and again.result("Copy", "dm1")["changed"] is False
    assert again.result("Switch", "dm1")["changed"] is False
    assert host.generation() == 2
    assert host.read_file("/boot/loader/ansinix-bootloader.log") == log_before


def test_each_action(host, run_ansible):
    base = build_system(name="base")
    booted_new, tested_new = v2(version="boot"), v2(version="test")
    for system in (booted_new, tested_new):
        host.import_closure(system)
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s action=boot" % booted_new])
    assert proc.returncode == 0, one_line(proc)
    assert host.readlink("/run/current-system") == base and host.default_boot_system() == booted_new
    assert host.generation() == 2
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s action=test" % tested_new])
    assert proc.returncode == 0, one_line(proc)
    assert host.readlink("/run/current-system") == tested_new
    assert host.default_boot_system() == booted_new and host.generation() == 2
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s action=dry-activate" % base])
    assert proc.returncode == 0 and '"changed": false' in proc.stdout, one_line(proc)
    assert "would restart" in proc.stdout or "would reload" in proc.stdout
    assert host.readlink("/run/current-system") == tested_new
    # install_bootloader reaches the boot loader.
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s install_bootloader=true confirm_timeout=0" % base])
    assert proc.returncode == 0, one_line(proc)
    assert host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()[-1].endswith("switch %s install_bootloader=1" % base)


def test_check_and_diff_mode_change_nothing(host, run_ansible):
    new = v2()
    host.import_closure(new)
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s" % new, "--check", "--diff"])
    assert proc.returncode == 0, one_line(proc)
    assert "~ nginx: 1.24.0 -> 1.25.0" in proc.stdout
    assert '"restarted": [\n' in proc.stdout and "nginx.service" in proc.stdout
    assert host.readlink("/run/current-system") == build_system(name="base") and host.generation() == 1


def test_rollback_and_generation(host, run_ansible):
    base, new = build_system(name="base"), v2()
    host.import_closure(new)
    assert run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s" % new]).returncode == 0
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "rollback=true"])
    assert proc.returncode == 0, one_line(proc)
    assert host.readlink("/run/current-system") == base and host.generation() == 1
    assert host.default_boot_system() == base
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "generation=2"])
    assert proc.returncode == 0, one_line(proc)
    assert host.readlink("/run/current-system") == new and host.generation() == 2
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "generation=9"])
    assert proc.returncode != 0 and "generation 9 does not exist in profile /nix/var/nix/profiles/system; it has: 1, 2" in proc.stdout
    assert host.generation() == 2


def test_failed_activation_rolls_back(host, run_ansible):
    base = build_system(name="base")
    failing = v2(version="fail", failUnits=["nginx.service"])
    host.import_closure(failing)
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s" % failing])
    assert proc.returncode != 0
    assert "failed units: nginx.service" in proc.stdout and "rolled back to %s" % base in proc.stdout
    assert '"rolled_back": true' in proc.stdout
    assert host.readlink("/run/current-system") == base
    assert host.generation() == 1 and not host.exists(PROFILE + "-2-link")
    assert host.default_boot_system() == base
    assert host.exists("/run/ansinix-units/nginx.service")


def test_config_that_breaks_ssh_is_rolled_back_by_the_host(host, run_ansible):
    base = build_system(name="base")
    broken = v2(version="nossh", breakSsh=True)
    host.import_closure(broken)
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s confirm_timeout=5" % broken], timeout=300)
    assert proc.returncode != 0
    assert "did not let a new SSH connection in" in proc.stdout and "rolled itself back to %s" % base in proc.stdout
    assert host.readlink("/run/current-system") == base
    assert host.generation() == 1 and host.default_boot_system() == base
    assert host.ssh(["hostname"]).stdout.strip() == "dm1"


def test_two_deploys_race(host, run_ansible):
    first, second = v2(version="race1"), v2(version="race2")
    for system in (first, second):
        host.import_closure(system)
    procs = []
    threads = [threading.Thread(target=lambda s=s: procs.append(run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s" % s])))
               for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.returncode for p in procs] == [0, 0], [one_line(p) for p in procs]
    # Both ran one after the other: two new generations, the current one is one of them and is the last set.
    gens = host.run("ls %s" % os.path.dirname(PROFILE)).stdout.split()
    assert sorted(g for g in gens if g.startswith("system-")) == ["system-1-link", "system-2-link", "system-3-link"]
    assert host.readlink("/run/current-system") == host.readlink(PROFILE + "-3-link") and host.generation() == 3


def test_non_root_user_with_become(host, run_playbook):
    new = v2(version="become")
    play = deploy_play(new, become=True)
    run = run_playbook(play, args=["-u", "deploy"])
    assert run.rc == 0, str(run)
    assert run.result("Copy", "dm1")["copied"] > 0
    assert host.readlink("/run/current-system") == new


def test_ssh_copy_method(host, run_ansible):
    new = v2(version="sshcopy", payloadMiB=1, payloadSeed="sshcopy")
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nix_copy_closure", "-a", "path=%s method=ssh" % new])
    assert proc.returncode == 0, one_line(proc)
    assert host.store_has(new) and host.store_has(new + "/payload")
    assert host.run("nix-store --verify-path %s" % new).returncode == 0


def test_nix_build_on_the_target_and_on_the_controller(host, run_playbook):
    play = """
- name: Build
  hosts: dm1
  gather_facts: false
  tasks:
    - name: On the target
      ansinix.nixos.nix_build:
        file: %s
        args: {name: built-on-target, version: "3"}
      register: on_target
    - name: On the controller, in check mode first
      ansinix.nixos.nix_build:
        flake: %s
        nixos_configuration: web1
        args: {version: "check-%s"}
      delegate_to: localhost
      check_mode: true
""" % ("/etc/ansinix-fixtures/nixos", FLAKE_DIR, os.getpid())
    # The host sees its own /tmp and /etc: send the fixture files through the harness.
    archive = subprocess.run(["tar", "-C", os.path.dirname(FIXTURES_DIR), "-c", "nixos"], capture_output=True, check=True).stdout
    host.run("mkdir -p /etc/ansinix-fixtures && tar -C /etc/ansinix-fixtures -x", input=archive)
    run = run_playbook(play)
    assert run.rc == 0, str(run)
    on_target = run.result("On the target", "dm1")
    assert on_target["changed"] and on_target["out_path"].endswith("-nixos-system-built-on-target-3")
    assert host.store_has(on_target["out_path"])
    assert on_target["out_link"].startswith("/nix/var/nix/gcroots/ansinix/") and on_target["out_link"].endswith("/result")
    assert host.readlink(on_target["out_link"]) == on_target["out_path"]
    assert not os.path.exists(on_target["out_path"])  # built there, not here
    checked = run.result("On the controller, in check mode first", "dm1")
    assert checked["changed"] and checked["out_path"].endswith("-nixos-system-web1-check-%s" % os.getpid())
    assert not os.path.exists(checked["out_path"])  # check mode built nothing


BAD_INPUTS = [
    ("nixos_switch", "path=/etc/passwd", "'/etc/passwd' is not a Nix store path"),
    ("nixos_switch", "path=/nix/store/00000000000000000000000000000000-nixos-system-x", "is not in this host's Nix store: copy it first"),
    ("nixos_switch", "rollback=true", "nothing to roll back to"),
    ("nixos_switch", "path=__NOT_NIXOS__", "is not a NixOS system: it has no bin/switch-to-configuration"),
    ("nix_copy_closure", "path=not-a-path", "'not-a-path' is not a Nix store path"),
    ("nix_copy_closure", "path=/nix/store/00000000000000000000000000000000-missing", "not in the Nix store of the controller"),
    ("nix_build", "file=__FIXTURES__/bad/eval-error.nix", "undefined variable 'nosuchthing'"),
    ("nix_build", "file=__FIXTURES__/bad/build-error.nix", "this build fails on purpose"),
    ("nix_build", "flake=__FIXTURES__#nixosConfigurations.nope.config.system.build.toplevel", "does not provide attribute"),
    ("nix_build", "flake=::bad::#x", "evaluating ::bad::#x failed: error:"),
]


@pytest.mark.parametrize("module,args,message", BAD_INPUTS, ids=[a for _m, a, _e in BAD_INPUTS])
def test_bad_input_gives_a_clear_message_and_changes_nothing(host, run_ansible, module, args, message):
    # A store path that is no system: the kernel-modules of the base system.
    not_nixos = os.path.realpath(build_system(name="base") + "/kernel-modules")
    host.import_closure(not_nixos)
    args = args.replace("__NOT_NIXOS__", not_nixos).replace("__FIXTURES__", os.path.dirname(FIXTURES_DIR))
    before = host.run("readlink -f /run/current-system %s; ls /nix/var/nix/profiles" % PROFILE).stdout
    where = ["dm1"] if module != "nix_build" else ["localhost", "-c", "local"]
    proc = run_ansible(where + ["-m", "ansinix.nixos." + module, "-a", args])
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert host.run("readlink -f /run/current-system %s; ls /nix/var/nix/profiles" % PROFILE).stdout == before


def test_no_nix_on_the_host(fresh_hosts, run_ansible):
    fresh_hosts("dmnonix", dmnonix={"nix": False, "system": None})
    for module, args in (("nix_copy_closure", "path=%s" % build_system(name="base")),
                         ("nixos_switch", "path=%s" % build_system(name="base")),
                         ("nix_build", "file=/nowhere.nix")):
        proc = run_ansible(["dmnonix", "-m", "ansinix.nixos." + module, "-a", args])
        assert proc.returncode != 0
        assert "was not found on" in proc.stdout and "apt-get install nix-bin" in proc.stdout, proc.stdout
        assert "Traceback" not in proc.stdout


def test_copy_from_a_builder_host_without_trust_between_hosts(fresh_hosts, run_ansible):
    builder, target = fresh_hosts("dmb", "dmt")
    # A store path only the builder has: built there, unknown to the controller.
    expr = 'derivation { name = "built-on-dmb"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo %d > $out" ]; }' % os.getpid()
    builder.run("cat > /root/only.nix", input=expr)
    path = builder.run("nix-build /root/only.nix --no-out-link").stdout.strip()
    assert not os.path.exists(path)
    assert builder.run("test -e /root/.ssh/id_ed25519", check=False).returncode != 0  # no key to reach dmt
    proc = run_ansible(["dmt", "-m", "ansinix.nixos.nix_copy_closure", "-a", "path=%s src_host=dmb" % path])
    assert proc.returncode == 0, one_line(proc)
    assert target.store_has(path) and target.read_file(path) == "%d\n" % os.getpid()
    assert builder.run("ls /tmp").stdout.strip() == ""  # its export is cleaned up


@pytest.mark.paramiko
def test_copy_check_mode_and_paramiko(host, run_ansible):
    new = v2(version="paramiko", payloadMiB=1, payloadSeed="paramiko")
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nix_copy_closure", "-a", "path=%s" % new, "--check"])
    assert proc.returncode == 0 and '"changed": true' in proc.stdout and new in proc.stdout, one_line(proc)
    assert not host.store_has(new)
    # paramiko reads no ssh options: it checks host keys against ~/.ssh/known_hosts, which the harness does not write.
    proc = run_ansible(["dm1", "-c", "paramiko", "-m", "ansinix.nixos.nix_copy_closure", "-a", "path=%s" % new],
                       env={"ANSIBLE_HOST_KEY_CHECKING": "False"})
    assert proc.returncode == 0, one_line(proc)
    assert host.store_has(new) and host.run("nix-store --verify-path %s/payload" % new).returncode == 0


def test_keep_generations_never_deletes_current_or_booted(host, run_ansible):
    systems = [v2(version="keep%d" % i) for i in range(4)]
    for system in systems:
        host.import_closure(system)
        proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s keep_generations=2 confirm_timeout=0" % system])
        assert proc.returncode == 0, one_line(proc)
    links = sorted(g for g in host.run("ls /nix/var/nix/profiles").stdout.split() if g.startswith("system-"))
    # Generation 1 is what the host booted: kept. 4 and 5 are the newest two.
    assert links == ["system-1-link", "system-4-link", "system-5-link"]
    assert host.readlink("/run/current-system") == systems[-1]


def test_connection_dropped_mid_switch_then_next_run_tells_the_truth(host, run_ansible, testhosts):
    slow = v2(version="slow", activationSeconds=4)
    host.import_closure(slow)
    play = subprocess.Popen(["ansible", "dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s confirm_timeout=0" % slow],
                            env=ansible_env(testhosts), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not host.run("ls -d /run/ansinix/switch-* 2>/dev/null", check=False).stdout:
        time.sleep(0.1)
    os.killpg(play.pid, signal.SIGKILL)  # the controller goes away mid-activation
    play.wait()
    assert host.readlink("/run/current-system") != slow  # still activating
    # The next run waits for the deploy lock the runner holds, then finds the switch done.
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s confirm_timeout=0" % slow])
    assert proc.returncode == 0, one_line(proc)
    result = json.loads(proc.stdout.split("=>", 1)[1])
    assert result["changed"] is False and result["current"] == slow
    assert result["last_activation"]["outcome"] == "done" and result["last_activation"]["rc"] == 0
    assert host.readlink("/run/current-system") == slow and host.generation() == 2


def test_specialisation_and_compressed_copy(host, run_ansible):
    spec_system = v2(version="spec", specialisations={"maintenance": {"version": "spec-maint", "units": {"sshd.service": "openssh 9.6"}}})
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nix_copy_closure", "-a", "path=%s compress=true" % spec_system])
    assert proc.returncode == 0, one_line(proc)
    result = json.loads(proc.stdout.split("=>", 1)[1])
    assert result["copied"] == len(result["missing"]) > 0 and host.store_has(spec_system)
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s specialisation=maintenance" % spec_system])
    assert proc.returncode == 0, one_line(proc)
    # The profile gets the system; the specialisation is what runs.
    assert host.readlink(PROFILE + "-2-link") == spec_system
    assert host.readlink("/run/current-system") == os.path.realpath(spec_system + "/specialisation/maintenance")
    assert sorted(host.run("ls /run/ansinix-units").stdout.split()) == ["sshd.service"]
    proc = run_ansible(["dm1", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s specialisation=nope" % spec_system])
    assert proc.returncode != 0 and "has no specialisation 'nope' (it has: maintenance)" in proc.stdout


def test_nix_build_ignores_the_callers_nix_path(run_ansible, tmp_path):
    pinned = tmp_path / "pinned"
    pinned.mkdir()
    (pinned / "default.nix").write_text('{ value = "from-the-pinned-path"; }')
    expr = tmp_path / "uses-search-path.nix"
    expr.write_text('{ args ? { } }: derivation { name = (import <pinme>).value; system = builtins.currentSystem;'
                    ' builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }')
    ambient = {"NIX_PATH": "pinme=%s" % pinned}
    proc = run_ansible(["localhost", "-c", "local", "-m", "ansinix.nixos.nix_build", "-a", "file=%s" % expr], env=ambient)
    assert proc.returncode != 0 and "file 'pinme' was not found in the Nix search path" in proc.stdout, proc.stdout
    proc = run_ansible(["localhost", "-c", "local", "-m", "ansinix.nixos.nix_build", "-a",
                        "file=%s nix_path=pinme=%s out_link=%s" % (expr, pinned, tmp_path / "result")], env=ambient)
    assert proc.returncode == 0 and "-from-the-pinned-path" in proc.stdout, proc.stdout
    proc = run_ansible(["localhost", "-c", "local", "-m", "ansinix.nixos.nix_build", "-a",
                        "file=%s use_environment_nix_path=true out_link=%s" % (expr, tmp_path / "result2")], env=ambient)
    assert proc.returncode == 0, proc.stdout
