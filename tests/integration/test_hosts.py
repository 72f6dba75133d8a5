"""The test hosts are separate machines as far as the deploy tools can tell, and leave nothing behind."""
import os
import socket
import subprocess
import sys

import pytest

from ansinix_test import ansible, systems
from ansinix_test.hosts import HostError, TestHosts

# A set of its own, next to the session's hosts (and to other suites, which have other prefixes).
OWN_PREFIX = (os.environ.get("ANSINIX_TESTHOSTS_PREFIX") or "ax")[:3] + "hosts"


@pytest.fixture
def own_hosts():
    """A set of hosts with a prefix of its own, so stop and crash recovery can be tested in isolation."""
    hosts = TestHosts(prefix=OWN_PREFIX)
    hosts.stop()
    yield hosts
    hosts.stop()


def alive(pid):
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def machine_state(prefix):
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounts = [line for line in f if "/ansinix-testhosts/%s/" % prefix in line or line.split()[4].endswith("/" + prefix)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {
        "netns": [line for line in netns.splitlines() if line.startswith(prefix + "-")],
        "mounts": mounts,
        "links": [line for line in links.splitlines() if ": %s" % prefix in line],
        "state_dir": os.path.exists("/srv/ansinix-testhosts/" + prefix),
    }


def test_hosts_are_separate_machines(own_hosts):
    web1, web2 = own_hosts.start(["web1", "web2"])
    assert web1.address != web2.address
    assert web1.run("hostname").stdout.strip() == "web1"
    assert web2.run("hostname").stdout.strip() == "web2"
    assert web1.boot_id() != web2.boot_id()
    # /etc, /run and /nix of one host are its own.
    web1.run("echo one > /etc/only-web1 && echo one > /run/only-web1 && mkdir -p /nix/var/only-web1")
    for path in ("/etc/only-web1", "/run/only-web1", "/nix/var/only-web1"):
        assert web1.exists(path)
        assert not web2.exists(path)
        assert not os.path.exists(path)
    # The harness (keys, other hosts' stores) is hidden from the hosts.
    assert web1.run("ls -A /srv/ansinix-testhosts").stdout.strip() == ""


def test_ssh_as_root_and_deploy_with_host_key_checking(own_hosts):
    web1, web2 = own_hosts.start(["web1", "web2"])
    assert web1.ssh(["hostname"]).stdout.strip() == "web1"
    proc = web2.ssh(["sudo", "-n", "id", "-u"], user="deploy")
    assert proc.returncode == 0 and proc.stdout.strip() == "0"
    assert web2.ssh(["id", "-un"], user="deploy").stdout.strip() == "deploy"
    # The known_hosts file pins each host's own key: a wrong entry is refused.
    with open(own_hosts.known_hosts_path, encoding="utf-8") as f:
        entries = f.read().splitlines()
    swapped = [line.replace(web1.address + " ", "X ").replace(web2.address + " ", web1.address + " ").replace("X ", web2.address + " ") for line in entries]
    with open(own_hosts.known_hosts_path, "w", encoding="utf-8") as f:
        f.write("\n".join(swapped) + "\n")
    proc = web1.ssh(["true"])
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr
    with open(own_hosts.known_hosts_path, "w", encoding="utf-8") as f:
        f.write("\n".join(entries) + "\n")
    # Hosts reach each other: web1 talks to web2's sshd.
    probe = "exec 3<>/dev/tcp/%s/22 && head -c 4 <&3" % web2.address
    assert web1.run("bash -c %r" % probe).stdout == "SSH-"


def test_hosts_reach_the_controller(own_hosts):
    (web1,) = own_hosts.start(["web1"])
    with socket.socket() as listener:
        listener.bind((own_hosts.gateway, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        web1.run("bash -c 'exec 3<>/dev/tcp/%s/%d && echo from-$(hostname) >&3'" % (own_hosts.gateway, port))
        listener.settimeout(10)
        conn, peer = listener.accept()
        with conn:
            assert conn.recv(100) == b"from-web1\n"
    assert peer[0] == web1.address


def test_ansible_reaches_every_host(own_hosts):
    own_hosts.start(["web1", "web2", "mon"])
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True")
    proc = subprocess.run(["ansible", "-i", own_hosts.inventory_path, "testhosts", "-m", "ansible.builtin.command",
                           "-a", "hostname", "-o"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("web1", "web2", "mon"):
        assert "%s | CHANGED | rc=0 | (stdout) %s" % (name, name) in proc.stdout
    proc = ansible.run_ansible(["all", "-m", "ansible.builtin.ping", "-o"], hosts=own_hosts)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(line.split(" | ")[0] for line in proc.stdout.splitlines()) == ["mon", "web1", "web2"]
    assert all('"ping": "pong"' in line for line in proc.stdout.splitlines())
    # The deploy user becomes root with sudo, as a deploy through a non-root account would.
    proc = ansible.run_ansible(["web2", "-u", "deploy", "-b", "-m", "ansible.builtin.command", "-a", "id -un", "-o"],
                               hosts=own_hosts)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(stdout) root" in proc.stdout


def test_host_without_nix_and_host_not_nixos(own_hosts):
    plain, nonix = own_hosts.start(["plain", "nonix"], options={"plain": {"nixos": False}, "nonix": {"nix": False}})
    assert nonix.run("command -v nix-store", check=False).returncode != 0
    assert plain.run("command -v nix-store").stdout.strip() == "/usr/bin/nix-store"
    assert not plain.exists("/etc/NIXOS")
    assert nonix.exists("/etc/NIXOS")
    assert os.path.exists("/usr/bin/nix-store")  # the machine keeps its nix


def test_reboot_gives_new_boot_id_and_empty_run(own_hosts):
    (web1,) = own_hosts.start(["web1"])
    before = web1.boot_id()
    old_sshd = web1.read_file("/run/sshd.pid").strip()
    web1.run("touch /run/marker /tmp/marker /etc/kept")
    after = web1.reboot()
    assert after != before and after == web1.boot_id()
    assert not web1.exists("/run/marker") and not web1.exists("/tmp/marker")
    assert web1.exists("/etc/kept")
    assert web1.read_file("/run/sshd.pid").strip() != old_sshd
    assert web1.ssh(["true"]).returncode == 0


def test_host_boots_its_system_and_reset_makes_it_new(own_hosts):
    base = systems.build_system(name="base")
    web1, web2 = own_hosts.start(["web1", "web2"], options={"web1": {"system": base}})
    # Installed as NixOS does: profile generation 1, boot loader installed, the default entry booted.
    assert web1.generation() == 1
    assert web1.readlink("/nix/var/nix/profiles/system-1-link") == base
    assert web1.readlink("/run/current-system") == base
    assert web1.readlink("/run/booted-system") == base
    assert "default nixos-generation-1.conf" in web1.read_file("/boot/loader/loader.conf")
    assert "options init=%s/init" % base in web1.read_file("/boot/loader/entries/nixos-generation-1.conf")
    assert web1.read_file("/boot/loader/ansinix-bootloader.log").strip().endswith("boot %s install_bootloader=1" % base)
    assert web1.store_has(base)
    # The other host's store is its own: empty, no profile.
    assert not web2.store_has(base)
    assert web2.generation() is None and not web2.exists("/run/current-system")
    # Reboot runs the default entry again.
    web1.run("rm /run/current-system")
    web1.reboot()
    assert web1.readlink("/run/current-system") == base == web1.readlink("/run/booted-system")
    # Reset: a new machine with the same name, address and host key, booted into its system again.
    boot_id = web1.boot_id()
    web1.run("mkdir -p /nix/var/leftover && touch /root/leftover")
    web1.reset()
    assert not web1.exists("/nix/var/leftover") and not web1.exists("/root/leftover")
    assert web1.boot_id() != boot_id
    assert web1.generation() == 1 and web1.readlink("/run/booted-system") == base
    assert web1.ssh(["hostname"]).stdout.strip() == "web1"


def test_two_prefixes_side_by_side(own_hosts):
    other = TestHosts(prefix=OWN_PREFIX[:3] + "other")
    other.stop()
    try:
        (mine,) = own_hosts.start(["web1"])
        (theirs,) = other.start(["web1"])
        assert mine.address.rsplit(".", 1)[0] != theirs.address.rsplit(".", 1)[0]
        assert mine.netns != theirs.netns
        assert mine.ssh(["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip() == mine.boot_id()
        assert theirs.ssh(["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip() == theirs.boot_id()
        other.stop()
        assert machine_state(other.prefix) == {"netns": [], "mounts": [], "links": [], "state_dir": False}
        assert mine.ssh(["hostname"]).stdout.strip() == "web1"
    finally:
        other.stop()


def test_bad_host_names_are_refused_before_anything_starts(own_hosts):
    for names, options in ((["Web1"], None), (["web/1"], None), (["web1"], {"web2": {"nix": False}})):
        with pytest.raises(HostError) as error:
            own_hosts.start(names, options=options)
        assert "\n" not in str(error.value)
    assert machine_state(OWN_PREFIX)["netns"] == []
    assert not os.path.exists(own_hosts.state_dir)


def test_command_line(own_hosts):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ansinix_test.hosts", "--prefix", OWN_PREFIX] + list(args),
                              capture_output=True, text=True, check=False, timeout=300)

    proc = cli("start", "web1", "bare", "--no-nix", "bare")
    assert proc.returncode == 0, proc.stderr
    assert "inventory: %s" % own_hosts.inventory_path in proc.stdout
    subnet = TestHosts(prefix=OWN_PREFIX).subnet
    assert cli("status").stdout.split() == ["web1", subnet + ".10", "running", "bare", subnet + ".11", "running"]
    assert cli("exec", "web1", "--", "hostname").stdout == "web1\n"
    assert cli("exec", "web1", "--", "sh", "-c", "exit 3").returncode == 3
    proc = cli("exec", "bare", "--", "nix-build", "--version")
    assert proc.returncode == 127 and "not found" in proc.stderr
    proc = cli("exec", "ghost", "--", "true")
    assert proc.returncode == 1 and proc.stderr.startswith("error: no test host ghost")
    assert cli("inventory").stdout.strip() == own_hosts.inventory_path
    assert cli("stop").returncode == 0
    assert machine_state(OWN_PREFIX) == {"netns": [], "mounts": [], "links": [], "state_dir": False}


def test_start_is_idempotent(own_hosts):
    (web1,) = own_hosts.start(["web1"])
    boot_id, pids = web1.boot_id(), sorted(web1.pids())
    again = TestHosts(prefix=OWN_PREFIX)
    again.start(["web1"])
    assert again["web1"].boot_id() == boot_id
    assert sorted(again["web1"].pids()) == pids


def test_stop_leaves_nothing_and_start_recovers_from_a_crash(own_hosts):
    own_hosts.start(["web1", "web2"])
    assert machine_state(OWN_PREFIX)["netns"]
    # A crash: every process of the hosts killed, namespaces and mounts left as they were.
    for host in own_hosts:
        subprocess.run(["kill", "-9"] + [str(p) for p in host.pids()], check=True)
    recovered = TestHosts(prefix=OWN_PREFIX)
    web1, web2 = recovered.start(["web1", "web2"])
    assert web1.ssh(["hostname"]).stdout.strip() == "web1"
    assert web2.ssh(["hostname"]).stdout.strip() == "web2"
    pids = [pid for host in recovered for pid in host.pids()]
    assert pids
    recovered.stop()
    state = machine_state(OWN_PREFIX)
    assert state == {"netns": [], "mounts": [], "links": [], "state_dir": False}, state
    assert not [pid for pid in pids if alive(pid)]
    recovered.stop()  # stopping twice is fine


def test_start_removes_namespaces_no_host_owns(own_hosts):
    # What a run that crashed before recording its hosts leaves behind.
    subprocess.run(["ip", "netns", "add", OWN_PREFIX + "-ghost"], check=True)
    own_hosts.start(["web1"])
    assert [line.split()[0] for line in machine_state(OWN_PREFIX)["netns"]] == [OWN_PREFIX + "-web1"]
