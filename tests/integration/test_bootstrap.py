"""Bootstrapping NixOS: the rescue_install role on test machines with loop-device disks, reset into a
rescue system through the fake Hetzner Robot and Cloud APIs, and the infect role on a Debian host."""
import json
import os
import shlex
import shutil
import subprocess

import pytest

from ansinix_test import REPO_ROOT
from ansinix_test.ansible import path_without_nix
from ansinix_test.fakehetzner import CLOUD_TOKEN, ROBOT_PASSWORD, ROBOT_USER, FakeHetzner
from ansinix_test.hosts import INSTALL_NIX_COMMAND, REBOOT_COMMAND
from ansinix_test.systems import FIXTURES_DIR

BOOTSTRAP = os.path.join(REPO_ROOT, "playbooks", "bootstrap.yml")
BIOS_BOOT_TYPE = "21686148-6449-6e6f-744e-656564454649"

# A fleet whose configurations import the facts the roles write (hosts/NAME/hardware.json) and carry them
# in their /etc, so a test can read what the installed system was built with.
CONFIGURATION = """\
{ args ? { } }:
let
  system = name: {
    config.system.build.toplevel = import ./nixos/system.nix {
      inherit name;
      etcFiles."ansinix/hardware.json" = builtins.readFile (./hosts + "/${name}/hardware.json");
    };
    # What disko's diskoScript does, for the one disk args.disk: a GPT, a file system, mounted at /mnt.
    config.system.build.diskoScript = derivation {
      name = "disko-${name}";
      system = builtins.currentSystem;
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      args = [ "-ec" ''
        mkdir -p $out/bin
        cat > $out/bin/disko-${name} <<'EOF'
        #!/bin/sh
        # ${args.nonce or ""}
        set -eu
        export PATH=/usr/sbin:/usr/bin:/sbin:/bin
        disk=${args.disk or "/dev/null"}
        sgdisk --zap-all "$disk" >/dev/null
        sgdisk -n 1:0:+1M -t 1:ef02 -c 1:disk-main-boot -n 2:0:0 -t 2:8300 -c 2:disk-main-root "$disk" >/dev/null
        partx --update "$disk"
        i=0; while [ ! -b "$disk"p2 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        mkfs.ext4 -q -F -L disk-main-root "$disk"p2
        mkdir -p /mnt
        mount "$disk"p2 /mnt
        EOF
        chmod +x $out/bin/disko-${name}
      '' ];
    };
  };
in
{ nixosConfigurations = builtins.listToAttrs (map (name: { inherit name; value = system name; }) [ "bm1" "bm2" "bm3" "deb1" ]); }
"""


@pytest.fixture
def fleet_dir(tmp_path):
    """The fleet's source, self-contained (the fixture systems inside), so that a host can build it too."""
    shutil.copytree(FIXTURES_DIR, tmp_path / "nixos")
    (tmp_path / "default.nix").write_text(CONFIGURATION)
    return tmp_path


def machine(fresh_hosts, name, disks):
    """A machine that runs a Debian (no Nix, no /etc/NIXOS) and has blank disks of these sizes (MiB)."""
    host, = fresh_hosts(name, **{name: {"disks": disks, "system": None, "nix": False, "nixos": False}})
    return host


def inventory(tmp_path, testhosts, name, **hostvars):
    base = {
        "nixos_nix_install_command": INSTALL_NIX_COMMAND, "nixos_reboot_command": REBOOT_COMMAND,
        "nixos_known_hosts_file": testhosts.known_hosts_path, "nixos_reboot_timeout": 120, "nixos_rescue_timeout": 120,
    }
    base.update(hostvars)
    path = tmp_path / ("%s-vars.yml" % name)
    # In the nixos group, as the hosts to be are in a real inventory (bootstrap.yml's default target).
    path.write_text(json.dumps({"all": {"children": {"nixos": {"hosts": {name: base}}}}}))
    return ["-i", testhosts.inventory_path, "-i", str(path), "-l", name]


def harness_key(testhosts):
    with open(testhosts.ssh_key_path + ".pub", encoding="utf-8") as f:
        return f.read().strip()


def layout(disks, **extra):
    value = {"disks": disks, "boot": "bios", "raid": "btrfs", "partitions": [{"label": "root", "fs": "btrfs", "mount": "/"}]}
    value.update(extra)
    return value


def assert_installed(host, fleet_dir, disks_expected):
    """The machine booted from its disks the system the role built with the facts it gathered."""
    assert host.mode == "disk" and host.disk_root[0] in disks_expected
    system = host.readlink("/run/current-system")
    assert system and system.endswith("-nixos-system-%s-1" % host.name)
    assert host.readlink("/run/booted-system") == system
    assert host.generation() == 1 and host.readlink("/nix/var/nix/profiles/system-1-link") == system
    assert host.exists("/etc/NIXOS")
    # The boot loader was installed in the chroot of the new root, for this system.
    log = host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()
    assert log == [log[0]] and log[0].endswith(" boot %s install_bootloader=1" % system)
    assert host.read_file("/var/lib/ansinix/installed-system").strip() == system
    # The configuration was built with the facts the role wrote.
    facts = json.loads((fleet_dir / "hosts" / host.name / "hardware.json").read_text())
    assert json.loads(host.read_file("/etc/static/ansinix/hardware.json")) == facts
    assert facts["network"]["ipv4"]["address"] == host.address and facts["network"]["interface"] == "eth0"
    return system, facts


def test_rescue_install_through_robot_on_raid1(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir):
    host = machine(fresh_hosts, "bm1", [700, 700])
    disks = host.disks()
    boot_id = host.boot_id()

    def robot_inventory(api):
        """bm1 through this fake Robot API (each FakeHetzner has its own endpoint)."""
        return inventory(tmp_path, testhosts, "bm1", nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="robot",
                         nixos_rescue_server=str(server["server_number"]), nixos_rescue_ssh_keys=[key["fingerprint"]],
                         nixos_hetzner_robot={"endpoint": api.robot_url, "user": ROBOT_USER, "password": ROBOT_PASSWORD},
                         nixos_disks=layout(disks))

    with FakeHetzner() as api:
        server = api.robot.add_server(name="bm1")
        key = api.robot.add_key("harness", harness_key(testhosts))
        # Robot tells the rescue system's host key: the role pins it (StrictHostKeyChecking=yes).
        api.robot.rescue_host_keys = True
        booted = []

        def on_reset(kind, srv, rescue):
            booted.append((kind, srv["server_number"], rescue and rescue["authorized_keys"]))
            host.power_cycle(rescue_keys=rescue["authorized_keys"] if rescue else None,
                             rescue_host_key=rescue and rescue["host_private_key"])
        api.on_reset = on_reset
        args = robot_inventory(api)
        with testhosts.serve_reboots():
            run = run_playbook(BOOTSTRAP, args=args)
        assert run.rc == 0, str(run)
        assert booted == [("robot", server["server_number"], [harness_key(testhosts)])]
        assert api.robot.resets == [(server["server_number"], "hw")]
        assert not api.robot.rescue[server["server_number"]]["active"]  # one-shot: the boot into it ended it
    assert run.result("Pin the rescue system's host keys the Hetzner API gave", "bm1")["changed"] is True
    assert host.boot_id() != boot_id
    parts = [d + "p2" for d in disks]
    system, facts = assert_installed(host, fleet_dir, parts)
    # RAID1 across both disks' second partitions, a BIOS boot partition first on each.
    assert "Data, RAID1" in host.run("btrfs filesystem df /nix").stdout  # /nix is on the installed root
    for disk in disks:
        probe = host.run("blkid -p -o export %sp1" % disk).stdout
        assert "PART_ENTRY_TYPE=%s" % BIOS_BOOT_TYPE in probe and "PART_ENTRY_NAME=BIOS" in probe
    assert facts["hardware"]["file_systems"]["/"] == {"device": "/dev/disk/by-label/root", "fsType": "btrfs", "options": []}
    assert facts["hardware"]["grub_devices"] == disks and facts["hardware"]["raid"] == "btrfs"
    # The new system's host key was trusted before its first boot: the harness checks host keys strictly.
    pub = host.read_file("/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    with open(testhosts.known_hosts_path, encoding="utf-8") as f:
        assert [line.split()[2] for line in f if line.startswith(host.address + " ")] == [pub]
    assert host.ssh(["readlink", "/run/current-system"]).stdout.strip() == system

    # Again: the host runs NixOS, so nothing happens at all (no API call, no reset, no wipe).
    boot_id = host.boot_id()
    with FakeHetzner() as api:
        again = run_playbook(BOOTSTRAP, args=args)
        assert again.rc == 0, str(again)
        assert api.requests == []
    assert again.changed() == {"bm1": 0}
    assert host.boot_id() == boot_id and host.generation() == 1

    # Named for this run, the installed server is reset into the rescue system and installed again.
    with FakeHetzner() as api:
        assert api.robot.add_server(name="bm1")["server_number"] == server["server_number"]
        api.robot.add_key("harness", harness_key(testhosts))
        api.robot.rescue_host_keys = True
        booted = []
        api.on_reset = on_reset
        args = robot_inventory(api)
        with testhosts.serve_reboots():
            reinstall = run_playbook(BOOTSTRAP, args=args + ["-e", "nixos_bootstrap_reinstall=bm1"])
        assert reinstall.rc == 0, str(reinstall)
        assert api.robot.resets == [(server["server_number"], "hw")] and len(booted) == 1
    assert host.boot_id() != boot_id
    # Built again with the facts gathered now, installed, and booted.
    again_system = host.readlink("/run/current-system")
    assert again_system.endswith("-nixos-system-bm1-1") and host.readlink("/run/booted-system") == again_system
    assert host.read_file("/var/lib/ansinix/installed-system").strip() == again_system


def install_through_cloud(host, testhosts, run_playbook, tmp_path, fleet_dir, env=None, **hostvars):
    """The bootstrap playbook on host through the fake Cloud API: one reset into the rescue system, the rescue ended."""
    with FakeHetzner() as api:
        server = api.cloud.add_server(name=host.name)
        api.cloud.add_ssh_key("harness", harness_key(testhosts))
        api.on_reset = lambda kind, srv, rescue: host.power_cycle(rescue_keys=rescue["authorized_keys"] if rescue else None)
        args = inventory(tmp_path, testhosts, host.name, nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="cloud",
                         nixos_rescue_server=host.name, nixos_rescue_ssh_keys=["harness"],
                         nixos_hetzner_cloud={"endpoint": api.cloud_url, "token": CLOUD_TOKEN}, **hostvars)
        with testhosts.serve_reboots():
            run = run_playbook(BOOTSTRAP, args=args, env=env)
        assert run.rc == 0, str(run)
        assert api.cloud.resets == [(server["id"], "reset")]
        assert not api.cloud.server(server["id"])["rescue_enabled"]
    return run


def test_rescue_install_through_cloud_on_one_disk(fresh_hosts, testhosts, run_playbook, tmp_path, tmp_path_factory, fleet_dir):
    """Built in the rescue system itself (nixos_build_on: target) from a controller without Nix, with a host key
    kept in a vault."""
    host = machine(fresh_hosts, "bm2", [600])
    disk, = host.disks()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bm2", "-f", str(tmp_path / "bm2-key")], check=True)
    laptop = {"PATH": path_without_nix(tmp_path_factory.mktemp("laptop") / "bin")}  # not in fleet_dir, which is sent
    run = install_through_cloud(host, testhosts, run_playbook, tmp_path, fleet_dir, env=laptop, nixos_build_on="target",
                                nixos_ssh_host_key=(tmp_path / "bm2-key").read_text(),
                                nixos_disks={"disks": [disk], "boot": "bios",
                                             "partitions": [{"label": "swap", "size": "64M", "fs": "swap"},
                                                            {"label": "nixos", "fs": "ext4", "mount": "/"}]})
    system, facts = assert_installed(host, fleet_dir, [disk + "p3"])
    # Built in the rescue system: the controller's store never had the system.
    assert run.result("Build on the host itself (the controller needs no Nix)", "bm2")["out_path"] == system
    assert subprocess.run(["nix-store", "--check-validity", system], capture_output=True, check=False).returncode != 0
    assert host.read_file("/etc/ssh/ssh_host_ed25519_key.pub").split()[1] == (tmp_path / "bm2-key.pub").read_text().split()[1]
    assert host.run("blkid -p -o export %sp2" % disk).stdout.count("TYPE=swap") == 1
    assert facts["hardware"]["swap_devices"] == [{"device": "/dev/disk/by-label/swap"}]
    assert facts["hardware"]["file_systems"]["/"]["fsType"] == "ext4"


def test_interlock_refuses_a_disk_with_a_file_system(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir):
    host = machine(fresh_hosts, "bm1", [300, 300])
    disks = host.disks()
    host.run("mkfs.ext4 -q -F -L precious %s && blkid -p -o value -s LABEL %s" % (disks[1], disks[1]))
    # Booted into a rescue system already (nixos_rescue_api none), as after ordering one by hand.
    host.power_cycle(rescue_keys=[harness_key(testhosts)])
    args = inventory(tmp_path, testhosts, "bm1", nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="none",
                     nixos_disks=layout(disks))
    plan = run_playbook(BOOTSTRAP, args=args + ["--check"])
    assert plan.rc == 2, str(plan)
    refused = plan.result("Partition, format and mount the disks", "bm1")
    assert refused["msg"].startswith("refusing to wipe %s: %s holds ext4 labelled precious." % (", ".join(disks), disks[1]))
    run = run_playbook(BOOTSTRAP, args=args)
    assert run.rc != 0 and run.result("Partition, format and mount the disks", "bm1")["msg"] == refused["msg"]
    assert "Traceback" not in run.stdout + run.stderr
    # Nothing changed: the file system is there, the other disk is still blank, Nix was not even installed.
    assert host.run("blkid -p -o value -s LABEL %s" % disks[1]).stdout.strip() == "precious"
    assert host.run("blkid -p %s" % disks[0], check=False).returncode == 2
    assert not host.exists("/usr/bin/nix-store")

    # With wipe allowed, check mode shows the plan and still changes nothing.
    wipe = args + ["-e", "nixos_wipe_disks=true", "-e", "nixos_bootstrap_reinstall=bm1"]
    plan = run_playbook(BOOTSTRAP, args=wipe + ["--check"])
    assert plan.rc == 0, str(plan)
    steps = plan.result("Partition, format and mount the disks", "bm1")["plan"]
    assert steps[0] == "wipefs --all --force %s" % disks[1]
    assert "mkfs.btrfs -q -f -L root -d raid1 -m raid1 %sp2 %sp2" % tuple(disks) in steps
    assert host.run("blkid -p -o value -s LABEL %s" % disks[1]).stdout.strip() == "precious"


@pytest.mark.parametrize("build_on", ["controller", "target"])
def test_rescue_install_with_the_configurations_disk_script(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir, build_on):
    """disko's way: the configuration's diskoScript lays the disk out, behind the same interlock; built on the
    controller and copied, or built in the rescue system from the source sent there."""
    host = machine(fresh_hosts, "bm3", [400])
    disk, = host.disks()
    host.run("mkfs.ext4 -q -F -L precious %s" % disk)
    host.power_cycle(rescue_keys=[harness_key(testhosts)])
    args = inventory(tmp_path, testhosts, "bm3", nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="none",
                     nixos_disks={"disks": [disk]}, nixos_disk_script="config.system.build.diskoScript",
                     nixos_args={"disk": disk, "nonce": str(tmp_path)}, nixos_build_on=build_on)
    run = run_playbook(BOOTSTRAP, args=args)
    assert run.rc != 0
    refused = run.result("Check the disks the script is to lay out", "bm3")["msg"]
    assert refused.startswith("refusing to wipe %s: %s holds ext4 labelled precious. Nothing was changed." % (disk, disk))
    # Checked before anything was built or installed: no Nix in the rescue system, the file system untouched.
    assert not host.exists("/usr/bin/nix-store")
    assert host.run("blkid -p -o value -s LABEL %s" % disk).stdout.strip() == "precious"
    # The plan with wiping allowed: the disk would be wiped by the script; still nothing changes.
    wipe = ["-e", "nixos_wipe_disks=true", "-e", "nixos_bootstrap_reinstall=bm3"]
    plan = run_playbook(BOOTSTRAP, args=args + wipe + ["--check"])
    assert plan.rc == 0, str(plan)
    assert plan.result("Check the disks the script is to lay out", "bm3")["wiped"] == [disk]
    assert not host.exists("/usr/bin/nix-store")
    assert host.run("blkid -p -o value -s LABEL %s" % disk).stdout.strip() == "precious"

    with testhosts.serve_reboots():
        run = run_playbook(BOOTSTRAP, args=args + wipe)
    assert run.rc == 0, str(run)
    script = run.result("Build the attribute of the configuration", "bm3")["out_path"]
    assert script.endswith("-disko-bm3")
    # Built where the system was: a build on the target left the controller's store without the script.
    on_controller = subprocess.run(["nix-store", "--check-validity", script], capture_output=True, check=False).returncode == 0
    assert on_controller == (build_on == "controller")
    assert run.result("Lay the disks out with the script", "bm3")["plan"] == ["%s/bin/disko-bm3" % script]
    system, facts = assert_installed(host, fleet_dir, [disk + "p2"])
    assert host.run("blkid -p -o value -s LABEL %sp2" % disk).stdout.strip() == "disk-main-root"
    assert facts["hardware"]["raid"] == "script" and facts["hardware"]["file_systems"]["/"]["device"] == disk + "p2"
    assert facts["hardware"]["file_systems"]["/"]["fsType"] == "ext4" and facts["hardware"]["grub_devices"] == [disk]

    # Installed: a rerun without consent leaves the host alone, the script is not run again.
    again = run_playbook(BOOTSTRAP, args=args + ["-e", "nixos_wipe_disks=true"])
    assert again.rc == 0, str(again)
    assert again.changed() == {"bm3": 0}
    assert host.readlink("/run/current-system") == system and host.generation() == 1


@pytest.mark.parametrize("script, args, message", [
    ("exit 3", "", "the disk script /root/disko failed (exit 3): "),
    ("echo 'disk-main not found' >&2; exit 1", "", "the disk script /root/disko failed (exit 1): disk-main not found"),
    ("true", "", "the disk script /root/disko ran, but nothing is mounted at /mnt: it must mount the new root there"),
    (None, "", "script /root/disko is not an executable on this host: copy it there first"),
    ("true", " partitions=[]", "parameters are mutually exclusive: partitions|script"),
])
def test_a_disk_script_that_lays_out_nothing_says_so(fresh_hosts, run_ansible, script, args, message):
    host = machine(fresh_hosts, "bm4", [100])
    disk, = host.disks()
    if script is not None:
        host.run("printf '#!/bin/sh\\n%s\\n' %s > /root/disko && chmod +x /root/disko" % ("%s", shlex.quote(script)))
    proc = run_ansible(["bm4", "-m", "ansinix.nixos.nixos_disks", "-a", "disks=%s script=/root/disko%s" % (disk, args)])
    assert proc.returncode == 2 and message in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert host.run("blkid -p %s" % disk, check=False).returncode == 2  # still blank


def test_infect_converts_a_debian_host(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir):
    host, = fresh_hosts("deb1", deb1={"system": None, "nix": False, "nixos": False})
    host.run("mkdir -p /boot/grub && echo 'old grub' > /boot/grub/grub.cfg && echo 'nameserver 10.0.0.53' > /etc/resolv.conf")
    key_before = host.read_file("/etc/ssh/ssh_host_ed25519_key.pub")
    # The old /boot goes under /root: a test host's / is the machine's own (only /etc, /var, /nix, /boot, /root ... are its).
    args = inventory(tmp_path, testhosts, "deb1", nixos_file=str(fleet_dir / "default.nix"), nixos_bootstrap="infect",
                     nixos_boot_backup_dir="/root/boot.bak")
    # A test host's / is on no disk of its own: a BIOS system NixOS would refuse (no disk for GRUB) stops the
    # role before anything on the host changes, and says what to set.
    refused = run_playbook(BOOTSTRAP, args=args)
    assert refused.rc != 0 and "set nixos_grub_devices to the disk(s) GRUB goes on" in refused.stdout, str(refused)
    assert not host.exists("/etc/NIXOS") and not host.exists("/etc/NIXOS_LUSTRATE") and host.exists("/boot/grub/grub.cfg")
    args = inventory(tmp_path, testhosts, "deb1", nixos_file=str(fleet_dir / "default.nix"), nixos_bootstrap="infect",
                     nixos_boot_backup_dir="/root/boot.bak", nixos_grub_devices=["/dev/vda"])
    with testhosts.serve_reboots():
        run = run_playbook(BOOTSTRAP, args=args)
    assert run.rc == 0, str(run)
    system = host.readlink("/run/current-system")
    assert system.endswith("-nixos-system-deb1-1") and host.readlink("/run/booted-system") == system
    assert host.generation() == 1 and host.exists("/etc/NIXOS")
    lustrate = host.read_file("/etc/NIXOS_LUSTRATE").splitlines()
    assert "etc/ssh/ssh_host_ed25519_key" in lustrate and "etc/resolv.conf" in lustrate
    assert all(host.exists("/" + path) for path in lustrate)
    assert host.read_file("/root/boot.bak/grub/grub.cfg") == "old grub\n" and not host.exists("/boot/grub")
    log = host.read_file("/boot/loader/ansinix-bootloader.log").splitlines()
    assert len(log) == 1 and log[0].endswith(" boot %s install_bootloader=1" % system)
    # Same host key: the controller keeps checking it.
    assert host.read_file("/etc/ssh/ssh_host_ed25519_key.pub") == key_before
    facts = json.loads((fleet_dir / "hosts" / "deb1" / "hardware.json").read_text())
    assert json.loads(host.read_file("/etc/static/ansinix/hardware.json")) == facts
    assert facts["hardware"]["boot"] == "bios" and facts["hardware"]["grub_devices"] == ["/dev/vda"]

    boot_id = host.boot_id()
    again = run_playbook(BOOTSTRAP, args=args)
    assert again.rc == 0, str(again)
    assert again.changed() == {"deb1": 0}
    assert host.boot_id() == boot_id and host.generation() == 1


def test_bootstrap_roles_refuse_bad_variables(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir):
    host = machine(fresh_hosts, "bm1", [100])
    args = inventory(tmp_path, testhosts, "bm1", nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="robotic",
                     nixos_disks=layout(host.disks()))
    run = run_playbook(BOOTSTRAP, args=args)
    assert run.rc != 0
    assert "nixos_rescue_api" in run.stdout and "Traceback" not in run.stdout + run.stderr


# -- consent: nothing is reset or wiped by accident -------------------------------------------------------------

def robot_args(tmp_path, testhosts, fleet_dir, api, host, **extra):
    """The inventory of a Robot server for `host`, whose resets power-cycle it (into its rescue system)."""
    server = api.robot.add_server(name=host.name)
    key = api.robot.add_key("harness", harness_key(testhosts))

    # The rescue system makes a host key of its own: what Robot told of it (rescue_host_keys) is not passed on.
    api.on_reset = lambda kind, srv, rescue: host.power_cycle(rescue_keys=rescue["authorized_keys"] if rescue else None)
    disk, = host.disks()
    return inventory(tmp_path, testhosts, host.name, nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="robot",
                     nixos_rescue_server=str(server["server_number"]), nixos_rescue_ssh_keys=[key["fingerprint"]],
                     nixos_hetzner_robot={"endpoint": api.robot_url, "user": ROBOT_USER, "password": ROBOT_PASSWORD},
                     nixos_disks={"disks": [disk], "boot": "bios", "partitions": [{"label": "nixos", "fs": "ext4", "mount": "/"}]},
                     **extra)


SILENCES = {
    # sshd gone: the connection is refused.
    "down": "kill $(cat /run/sshd.pid)",
    # A new host key: the controller's known_hosts no longer matches (as after someone else reinstalled it).
    "host key changed": "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key",
}


@pytest.mark.parametrize("silence", sorted(SILENCES))
def test_a_host_that_does_not_answer_is_reset_only_with_consent(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir, silence):
    host = machine(fresh_hosts, "bm2", [300])
    disk, = host.disks()
    boot_id = host.boot_id()
    host.run(SILENCES[silence])
    with FakeHetzner() as api:
        args = robot_args(tmp_path, testhosts, fleet_dir, api, host)
        left = run_playbook(BOOTSTRAP, args=args)
        assert left.rc == 0, str(left)
        # Not a single call to the API, no reset; the machine still runs what it ran, its disk untouched.
        assert api.requests == [] and api.robot.resets == []
        msg = left.result("Say why the host is left alone", "bm2")["msg"]
        assert msg.startswith("bm2 did not answer over SSH (") and "\n" not in msg
        assert msg.endswith("nothing was done. To reset it into the rescue system and reinstall it, run again with "
                            "-e nixos_bootstrap_reinstall=bm2"), msg
        assert host.boot_id() == boot_id and host.mode == "os"
        assert host.run("blkid -p %s" % disk, check=False).returncode == 2

        # Consent for another host of the inventory changes nothing for this one.
        (tmp_path / "spare.ini").write_text("spare ansible_host=192.0.2.99\n")
        other = run_playbook(BOOTSTRAP, args=args + ["-i", str(tmp_path / "spare.ini"), "-e", "nixos_bootstrap_reinstall=spare"])
        assert other.rc == 0 and api.requests == [] and api.robot.resets == [], str(other)
        assert other.result("Say why the host is left alone", "bm2")["msg"] == msg

        with testhosts.serve_reboots():
            run = run_playbook(BOOTSTRAP, args=args + ["-e", "nixos_bootstrap_reinstall=bm2"])
        assert run.rc == 0, str(run)
        assert api.robot.resets == [(args_server(api), "hw")]
    assert_installed(host, fleet_dir, [disk + "p2"])


def args_server(api):
    return api.robot.servers[0]["server_number"]


def test_wiping_needs_consent_for_this_run(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir):
    """nixos_wipe_disks from the inventory wipes nothing; consent from the inventory is refused."""
    host = machine(fresh_hosts, "bm1", [300])
    disk, = host.disks()
    host.run("mkfs.ext4 -q -F -L precious %s" % disk)
    host.power_cycle(rescue_keys=[harness_key(testhosts)])
    args = inventory(tmp_path, testhosts, "bm1", nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="none",
                     nixos_disks=layout([disk]), nixos_wipe_disks=True)
    for extra, message in [
        ([], "nixos_wipe_disks is true for bm1, but wiping needs consent for this run; nothing was done. "
             "Run again with -e nixos_bootstrap_reinstall=bm1"),
        (["--check"], "nixos_wipe_disks is true for bm1, but wiping needs consent for this run"),
    ]:
        run = run_playbook(BOOTSTRAP, args=args + extra)
        assert run.rc == 2, str(run)
        assert run.result("Check that wiping disks has consent for this run", "bm1")["msg"].startswith(message)
        assert host.run("blkid -p -o value -s LABEL %s" % disk).stdout.strip() == "precious"

    # Consent written into the inventory is no consent for this run: refused before anything is asked.
    standing = inventory(tmp_path, testhosts, "bm1", nixos_file=str(fleet_dir / "default.nix"), nixos_rescue_api="none",
                         nixos_disks=layout([disk]), nixos_wipe_disks=True, nixos_bootstrap_reinstall="bm1")
    run = run_playbook(BOOTSTRAP, args=standing)
    assert run.rc == 2, str(run)
    msg = run.result("Check the consent names hosts of the inventory and comes from the command line", "bm1")["msg"]
    assert msg.startswith("nixos_bootstrap_reinstall is set in the inventory") and "-e nixos_bootstrap_reinstall=" in msg
    assert host.run("blkid -p -o value -s LABEL %s" % disk).stdout.strip() == "precious"
    # Names only: 'all' and names that are no inventory host are refused.
    for given, words in [("all", "'all' is not accepted"), ("bm1,nosuchhost", "names nosuchhost, not a host of the inventory")]:
        run = run_playbook(BOOTSTRAP, args=args + ["-e", "nixos_bootstrap_reinstall=" + given])
        assert run.rc == 2 and words in run.result(
            "Check the consent names hosts of the inventory and comes from the command line", "bm1")["msg"], str(run)
    assert host.run("blkid -p -o value -s LABEL %s" % disk).stdout.strip() == "precious"
    assert not host.exists("/usr/bin/nix-store")


LYING_KEYGEN = """#!/bin/sh
/usr/bin/ssh-keygen "$@" || exit
if [ "$1" = -y ]; then echo "@cert-authority * $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)"; fi
"""
HOST_KEY_PLAY = """
- hosts: bm4
  gather_facts: false
  # A host that prints more than its key: ssh-keygen -y adds a CA line that would vouch for every host.
  environment:
    PATH: /root/bin:/usr/sbin:/usr/bin:/sbin:/bin
  tasks:
    - name: Give the installed system its SSH host key
      ansible.builtin.include_role:
        name: ansinix.nixos.rescue_install
        tasks_from: host_key
      vars:
        __nixos_root: /root/newroot
        nixos_known_hosts_file: %s
"""


def test_a_host_key_with_a_cert_authority_line_is_refused(fresh_hosts, run_playbook, tmp_path):
    host, = fresh_hosts("bm4")
    host.run("mkdir -p /root/bin /root/newroot && cat > /root/bin/ssh-keygen && chmod +x /root/bin/ssh-keygen", input=LYING_KEYGEN)
    assert host.run("/root/bin/ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key").stdout.count("\n") == 2
    known = tmp_path / "known_hosts"
    known.write_text("192.0.2.7 %s\n" % " ".join(harness_key_text().split()[:2]))
    before = known.read_text()
    run = run_playbook(HOST_KEY_PLAY % known, args=["-l", "bm4"])
    assert run.rc == 2, str(run)
    msg = run.result("Check the public host key the host printed", "bm4")["msg"]
    assert "bm4 gave 2 lines where one SSH public key line was expected" in msg and "refusing to trust it" in msg, msg
    assert "Traceback" not in run.stdout + run.stderr
    assert known.read_text() == before
    assert "cert-authority" not in host.read_file("/root/newroot/etc/ssh/ssh_host_ed25519_key.pub")


def harness_key_text():
    from ansinix_test.fakehetzner import make_public_key
    return make_public_key("other-host")


def test_a_rescue_system_that_shows_another_host_key_than_robot_told_is_refused(fresh_hosts, testhosts, run_playbook, tmp_path,
                                                                                fleet_dir):
    host = machine(fresh_hosts, "bm3", [300])
    disk, = host.disks()
    with open(testhosts.known_hosts_path, encoding="utf-8") as f:
        known_before = f.read()
    with FakeHetzner() as api:
        api.robot.rescue_host_keys = True
        # The hook boots a rescue system with a host key of its own, not the one Robot told: a machine in the middle.
        args = robot_args(tmp_path, testhosts, fleet_dir, api, host, nixos_rescue_timeout=15)
        run = run_playbook(BOOTSTRAP, args=args)
        assert run.rc == 2, str(run)
        assert api.robot.resets == [(args_server(api), "hw")]
    failed = run.result("Wait for the rescue system", "bm3")
    assert "Host key verification failed" in failed["msg"], failed
    assert run.result("Pin the rescue system's host keys the Hetzner API gave", "bm3")["changed"] is True
    # Nothing was done in the rescue system: the disk is blank, no facts were gathered, nothing was trusted.
    assert host.run("blkid -p %s" % disk, check=False).returncode == 2
    with open(testhosts.known_hosts_path, encoding="utf-8") as f:
        assert f.read() == known_before


CHECK_PLAY = """
- hosts: bm4
  gather_facts: false
  roles:
    - ansinix.nixos.rescue_install
  tasks:
    - name: After the role
      ansible.builtin.debug:
        msg: the play goes on
"""


def test_check_mode_ends_the_role_for_the_host_not_the_play(fresh_hosts, testhosts, run_playbook, tmp_path, fleet_dir):
    host = machine(fresh_hosts, "bm4", [100])
    disk, = host.disks()
    with FakeHetzner() as api:
        args = robot_args(tmp_path, testhosts, fleet_dir, api, host)
        plan = run_playbook(CHECK_PLAY, args=args + ["--check"])
        assert plan.rc == 0, str(plan)
        assert plan.result("Say what the rest would do (check mode cannot look at disks it has not rebooted into)", "bm4")["msg"] == (
            "would reset bm4 into the robot rescue system, then lay out %s (wiping: False), install Nix, build bm4 and "
            "install it with its boot loader" % disk)
        assert plan.result("After the role", "bm4")["msg"] == "the play goes on"
        assert "Wait for the rescue system" not in [e["task"] for e in plan.events]
        assert api.robot.resets == [] and [r for r in api.requests if r.method != "GET"] == []
    assert host.mode == "os" and host.run("blkid -p %s" % disk, check=False).returncode == 2


# The bootstrap example's facts.nix, through the stand-in nixpkgs: what a user's configuration makes of the facts.
EXAMPLE_CONFIGURATION = """\
{ args ? { } }:
let
  server = name: import ./mini-nixpkgs/nixos/lib/eval-config.nix {
    modules = [
      (import ./facts.nix (builtins.fromJSON (builtins.readFile (./hosts + "/${name}/hardware.json"))))
      { networking.hostName = name; system.nixos.label = args.label or "1"; system.stateVersion = "26.11"; }
    ];
  };
in
{ nixosConfigurations.bm5 = server "bm5"; }
"""


def fat_files(device, *paths):
    """The files at paths of the FAT file system on device (None for a missing one), read from the device itself."""
    script = ('d=$(mktemp -d) && fusefat -o ro "$0" "$d" >/dev/null && for p in "$@"; do echo "== $p"; cat "$d/$p" 2>/dev/null || '
              'echo "(missing)"; done; umount "$d"')
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, device] + list(paths),
                         capture_output=True, text=True, check=True).stdout
    files = {}
    for chunk in out.split("== ")[1:]:
        path, _nl, text = chunk.partition("\n")
        files[path] = None if text == "(missing)\n" else text
    return files


def test_rescue_install_on_two_disks_with_efi_puts_the_boot_loader_on_both_esps(
        fresh_hosts, testhosts, run_playbook, run_ansible, tmp_path, fleet_dir):
    """UEFI and two disks: each disk's ESP, by its own name, holds the boot loader at the firmware's removable path
    and the entries of the current generation, after the install and after every deploy; either disk boots alone."""
    host = machine(fresh_hosts, "bm5", [400, 400])
    disks = host.disks()
    shutil.copytree(os.path.join(REPO_ROOT, "tests", "fixtures", "mini-nixpkgs"), fleet_dir / "mini-nixpkgs")
    shutil.copy(os.path.join(REPO_ROOT, "examples", "bootstrap", "nix", "facts.nix"), fleet_dir / "facts.nix")
    (fleet_dir / "default.nix").write_text(EXAMPLE_CONFIGURATION)
    install_through_cloud(host, testhosts, run_playbook, tmp_path, fleet_dir, nixos_disks=layout(disks, boot="efi", esp_size="64M"))
    esps = [d + "p1" for d in disks]
    # Each disk's ESP has a name and a FAT label of its own, and a mount point of its own.
    for index, esp in enumerate(esps):
        probe = host.run("blkid -p -o export %s" % esp).stdout.splitlines()
        assert {"TYPE=vfat", "PART_ENTRY_NAME=ESP%d" % index, "LABEL=ESP%d" % index} <= set(probe)
    facts = json.loads((fleet_dir / "hosts" / "bm5" / "hardware.json").read_text())["hardware"]
    assert facts["esp_devices"] == esps and facts["esp_mounts"] == ["/boot", "/boot-fallback"]
    assert facts["file_systems"]["/boot"]["device"] == "/dev/disk/by-partlabel/ESP0"
    assert facts["file_systems"]["/boot-fallback"]["device"] == "/dev/disk/by-partlabel/ESP1"
    # The machine booted from its disks, with each ESP where the installed system's fstab mounts it.
    system = host.readlink("/run/current-system")
    assert host.mode == "disk" and system.endswith("-nixos-system-bm5-1") and host.readlink("/run/booted-system") == system
    assert host.disk_fat == [("/boot", esps[0]), ("/boot-fallback", esps[1])]

    def assert_both_esps_boot(system, generation):
        entry = "loader/entries/nixos-generation-%d.conf" % generation
        for esp in esps:
            files = fat_files(esp, "EFI/BOOT/BOOTX64.EFI", "loader/loader.conf", entry)
            assert files["EFI/BOOT/BOOTX64.EFI"] == "systemd-boot (fixture)\n", esp
            assert "default nixos-generation-%d.conf\n" % generation in files["loader/loader.conf"], esp
            assert "options init=%s/init " % system in files[entry], esp

    assert_both_esps_boot(system, 1)

    # A deploy of a new generation writes its entry to both ESPs, not only to the one at /boot.
    new = subprocess.run(["nix-build", str(fleet_dir / "default.nix"), "--no-out-link", "--arg", "args", '{ label = "2"; }',
                          "-A", "nixosConfigurations.bm5.config.system.build.toplevel"],
                         capture_output=True, text=True, check=True).stdout.strip()
    host.import_closure(new)
    proc = run_ansible(["bm5", "-m", "ansinix.nixos.nixos_switch", "-a", "path=%s" % new])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert host.readlink("/run/current-system") == new and host.generation() == 2
    assert_both_esps_boot(new, 2)

    # The first disk fails: the firmware finds the boot loader on the second disk's ESP, which boots the new generation.
    # (The root is a btrfs RAID1 the harness mounts degraded, as an mdadm RAID1 would start; this kernel has no md.)
    host.pull_disk(0)
    host.power_cycle()
    assert host.disks() == disks[1:] and host.mode == "disk"
    assert host.firmware_boot_dir() == "/boot-fallback" and host.disk_fat == [("/boot-fallback", esps[1]), ("/boot", None)]
    assert host.readlink("/run/booted-system") == new and host.readlink("/run/current-system") == new
