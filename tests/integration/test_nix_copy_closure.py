"""ansinix.nixos.nix_copy_closure through real ansible and ansible-playbook, against test hosts.

Every test asserts what the host's store holds afterwards (validity, NAR hashes, owners, contents),
and what the module says it sent against `nix-store -q --size` of the controller.
"""
import contextlib
import json
import os
import shlex
import subprocess
import time

import pytest

from ansinix_test.ansible import ansible_env
from ansinix_test.procs import TreeMemory, kill_tree
from ansinix_test.systems import NIX_ENV, build_system, closure, nar_size

MODULE = "ansinix.nixos.nix_copy_closure"


def result_of(proc):
    """The JSON result of a one-host ad-hoc run."""
    assert "=>" in proc.stdout, proc.stdout + proc.stderr
    return json.loads(proc.stdout.split("=>", 1)[1])


def copy(run_ansible, host, args, *extra, env=None):
    return run_ansible([host, "-m", MODULE, "-a", args] + list(extra), env=env)


def hashes(host, paths):
    """{path: NAR hash} as the host's store records them (None where the path is not valid there)."""
    out = host.run("for p in %s; do nix-store -q --hash $p 2>/dev/null || echo none; done"
                   % " ".join(shlex.quote(p) for p in paths)).stdout.split()
    return {p: (None if h == "none" else h) for p, h in zip(paths, out)}


def controller_hashes(paths):
    out = subprocess.run(["nix-store", "-q", "--hash"] + list(paths), capture_output=True, text=True, check=True).stdout
    return dict(zip(paths, out.split()))


def invalid_on(host, paths):
    return host.run("nix-store --check-validity --print-invalid %s" % " ".join(paths)).stdout.split()


def store_listing(host):
    return host.run("ls /nix/store | sort; nix-store --check-validity --print-invalid $(ls -d /nix/store/*-* 2>/dev/null) 2>&1 | sort").stdout


def assert_arrived(host, paths):
    """Valid on the host, with the controller's NAR hashes, and the contents check out against them."""
    assert hashes(host, paths) == controller_hashes(paths)
    verify = host.run("nix-store --verify-path %s" % " ".join(paths), check=False)
    assert verify.returncode == 0, verify.stderr


def serve_processes(host):
    """The nix-store --serve processes running on the host (in its namespaces; the machine's PIDs are shared)."""
    found = []
    for pid in host.pids():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"nix-store") and b"--serve" in argv:
            found.append(pid)
    return found


def system(version, mib=1):
    return build_system(name="cc", version=version, payloadMiB=mib, payloadSeed="cc-" + version)


@pytest.fixture
def host(fresh_hosts):
    (h,) = fresh_hosts("cc1")
    return h


def new_paths(system_path):
    """What a host booted into the base system lacks of system_path, dependencies first."""
    base = set(closure(build_system(name="base")))
    return [p for p in closure(system_path) if p not in base]


def copy_play(*tasks):
    """A playbook for host cc1 with a nix_copy_closure task per (name, arguments)."""
    # JSON is YAML.
    return json.dumps([{"name": "Copy", "hosts": "cc1", "gather_facts": False,
                        "tasks": [{"name": name, MODULE: args} for name, args in tasks]}], indent=1)


# -- both methods: only what is missing, exactly its NAR size, then nothing --------------------------------

@pytest.mark.parametrize("method", ["stream", "ssh"])
def test_copies_only_the_missing_paths_then_nothing(host, run_playbook, method):
    target = system("both-" + method)
    missing = new_paths(target)
    assert len(missing) >= 3 and invalid_on(host, missing) == missing
    run = run_playbook(copy_play(("Copy", {"path": target, "method": method}),
                                 ("Copy again", {"path": [target, missing[0]], "method": method})))
    assert run.rc == 0, str(run)
    first = run.result("Copy", "cc1")
    assert first["changed"] is True and first["method"] == method
    assert first["missing"] == missing  # in the order the host adds them: dependencies first
    assert first["copied"] == len(missing)
    assert first["bytes"] == first["nar_bytes"] == nar_size(missing)
    assert first["closure_size"] == len(closure(target))
    assert_arrived(host, missing)
    assert host.read_file(target + "/nixos-version").strip() == "both-" + method
    second = run.result("Copy again", "cc1")
    assert second["changed"] is False and second["missing"] == [] and second["copied"] == 0 and second["bytes"] == 0
    assert serve_processes(host) == []
    assert host.run("ls -A /root/.ansible/tmp 2>/dev/null || true").stdout.strip() == ""


def logins(h):
    """The SSH logins the host's sshd accepted so far."""
    return h.run("grep -c 'Accepted publickey' /var/log/sshd-harness.log || true").stdout.strip()


@pytest.mark.parametrize("method", ["stream", "ssh"])
@pytest.mark.parametrize("ssh_args,connections", [("-o ControlMaster=auto -o ControlPersist=60s", 1),
                                                  ("-C -o ControlMaster=auto -o ControlPersist=60s", 2)],
                         ids=["master without compression", "compressing master"])
def test_a_copy_goes_over_ansibles_ssh_master_unless_that_compresses(host, run_playbook, method, ssh_args, connections):
    target = system("master-%s-%d" % (method, connections))
    missing = new_paths(target)
    before = int(logins(host))
    run = run_playbook(copy_play(("Copy", {"path": target, "method": method})), env={"ANSIBLE_SSH_ARGS": ssh_args})
    assert run.rc == 0, str(run)
    assert run.result("Copy", "cc1")["bytes"] == nar_size(missing)
    assert_arrived(host, missing)
    # The master the task's own commands opened, and with a compressing one a second, uncompressed connection.
    assert int(logins(host)) - before == connections


def test_check_mode_reports_and_sends_nothing(host, run_ansible):
    target = system("check")
    missing = new_paths(target)
    before = store_listing(host)
    for method in ("stream", "ssh"):
        result = result_of(copy(run_ansible, "cc1", "path=%s method=%s" % (target, method), "--check"))
        assert result["changed"] is True and result["missing"] == missing
        assert result["copied"] == 0 and result["bytes"] == 0 and result["nar_bytes"] == nar_size(missing)
    assert store_listing(host) == before
    assert invalid_on(host, missing) == missing


# -- through any connection, as any user --------------------------------------------------------------------

@pytest.mark.paramiko
def test_paramiko_sends_batches_through_file_transfers(host, run_ansible):
    target = system("paramiko", mib=3)
    missing = new_paths(target)
    # paramiko reads no ssh options: it checks host keys against ~/.ssh/known_hosts, which the harness does not write.
    env = {"ANSIBLE_HOST_KEY_CHECKING": "False"}
    proc = copy(run_ansible, "cc1", "path=%s batch_size=1 compress=true" % target, "-c", "paramiko", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = result_of(proc)
    assert result["copied"] == len(missing) and result["bytes"] == nar_size(missing)
    assert_arrived(host, missing)
    assert host.run("ls -A /root/.ansible/tmp").stdout.strip() == ""  # each batch file removed
    again = result_of(copy(run_ansible, "cc1", "path=%s" % target, "-c", "paramiko", env=env))
    assert again["changed"] is False and again["bytes"] == 0


@pytest.mark.parametrize("how", ["stream over ssh", pytest.param("stream over paramiko", marks=pytest.mark.paramiko), "ssh method"])
def test_a_non_root_ssh_user_with_become_adds_paths_as_root(host, run_ansible, how):
    target = system("become-" + how.split()[-1] + how.split()[0])
    missing = new_paths(target)
    args = ["-e", "ansible_user=deploy"]
    env = None
    if how == "stream over paramiko":
        args += ["-c", "paramiko"]
        env = {"ANSIBLE_HOST_KEY_CHECKING": "False"}
    method = "ssh" if how == "ssh method" else "stream"
    # Without become, the deploy user may not write the store: a clear message, and nothing changed.
    before = store_listing(host)
    denied = copy(run_ansible, "cc1", "path=%s method=%s" % (target, method), *args, env=env)
    assert denied.returncode != 0 and "Traceback" not in denied.stdout + denied.stderr
    assert "use become: true" in result_of(denied)["msg"]
    assert store_listing(host) == before
    proc = copy(run_ansible, "cc1", "path=%s method=%s" % (target, method), "-b", *args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result_of(proc)["bytes"] == nar_size(missing)
    assert_arrived(host, missing)
    owners = host.run("stat -c %%u %s" % " ".join(missing)).stdout.split()
    assert owners == ["0"] * len(missing)


def test_ssh_options_with_spaces_reach_ssh_intact(host, run_ansible, testhosts, tmp_path):
    """A ProxyCommand (here: through the host itself) in ansible_ssh_common_args, for both methods."""
    proxy = "ssh %s -W %%h:%%p root@%s" % (" ".join(testhosts.ssh_options()), host.address)
    extra = tmp_path / "proxy.yml"
    extra.write_text("all:\n  hosts:\n    cc1:\n      ansible_ssh_common_args: %s\n" % json.dumps(
        "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ProxyCommand=%s" % (testhosts.known_hosts_path, json.dumps(proxy))))
    inventory = ["-i", testhosts.inventory_path, "-i", str(extra)]
    for method in ("stream", "ssh"):
        target = system("proxy-" + method)
        proc = copy(run_ansible, "cc1", "path=%s method=%s" % (target, method), *inventory)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert_arrived(host, new_paths(target))


def test_use_substitutes_lets_the_host_fetch_from_its_cache(host, run_ansible, tmp_path):
    """The host's own binary cache has the payload: only the rest is sent, for both methods."""
    for method in ("stream", "ssh"):
        host.reset()
        target = system("subst-" + method, mib=2)
        missing = new_paths(target)
        payload = [p for p in missing if "-payload-" in p]
        cache = tmp_path / ("cache-" + method)
        subprocess.run(["nix", "--extra-experimental-features", "nix-command", "copy", "--to", "file://%s" % cache] + payload,
                       env=NIX_ENV, check=True, capture_output=True)
        archive = subprocess.run(["tar", "-C", str(cache), "-c", "."], capture_output=True, check=True).stdout
        host.run("mkdir -p /var/cache/nixcache && tar -C /var/cache/nixcache -x", input=archive)
        host.run("printf 'substituters = file:///var/cache/nixcache\\nrequire-sigs = false\\n' >> /etc/nix/nix.conf")
        result = result_of(copy(run_ansible, "cc1", "path=%s method=%s use_substitutes=true" % (target, method)))
        assert result["missing"] == missing and result["nar_bytes"] == nar_size(missing)
        sent = [p for p in missing if p not in payload]
        assert result["copied"] == len(sent) and result["bytes"] == nar_size(sent)
        assert_arrived(host, missing)


# -- from another host, relayed by the controller -----------------------------------------------------------

@pytest.mark.parametrize("source_connection", ["ssh", pytest.param("paramiko", marks=pytest.mark.paramiko)])
def test_copy_from_a_builder_host_without_trust_between_the_hosts(fresh_hosts, run_ansible, testhosts, tmp_path, source_connection):
    builder, target = fresh_hosts("ccb", "cct")
    expr = ('derivation { name = "built-on-ccb-%d"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";'
            ' args = [ "-c" "mkdir $out; echo %d > $out/id; head -c 2000000 /dev/urandom > $out/blob; ln -s id $out/link" ]; }'
            % (os.getpid(), os.getpid()))
    builder.run("cat > /root/only.nix", input=expr)
    path = builder.run("nix-build /root/only.nix --no-out-link 2>/dev/null").stdout.strip()
    assert not os.path.exists(path)  # unknown to the controller
    assert builder.run("ls /root/.ssh/id_* 2>/dev/null || true").stdout.strip() == ""  # no key to reach cct
    inventory = []
    env = None
    if source_connection == "paramiko":
        extra = tmp_path / "paramiko.yml"
        extra.write_text("all:\n  hosts:\n    ccb:\n      ansible_connection: paramiko\n")
        inventory = ["-i", testhosts.inventory_path, "-i", str(extra)]
        env = {"ANSIBLE_HOST_KEY_CHECKING": "False"}
    proc = copy(run_ansible, "cct", "path=%s src_host=ccb compress=true" % path, *inventory, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = result_of(proc)
    size = int(builder.run("nix-store -q --size %s" % path).stdout)
    assert result["missing"] == [path] and result["copied"] == 1 and result["bytes"] == size
    assert target.run("nix-store -q --hash %s" % path).stdout == builder.run("nix-store -q --hash %s" % path).stdout
    assert target.run("nix-store --verify-path %s" % path, check=False).returncode == 0
    assert target.read_file(path + "/id") == "%d\n" % os.getpid() and target.readlink(path + "/link") == "id"
    assert builder.run("ls -A /tmp").stdout.strip() == ""  # nothing left on the builder
    again = result_of(copy(run_ansible, "cct", "path=%s src_host=ccb" % path, *inventory, env=env))
    assert again["changed"] is False and again["bytes"] == 0


# -- killed half-way, then run again ------------------------------------------------------------------------

@contextlib.contextmanager
def throttled(host, rate="400mbit"):
    """Traffic to the host at this rate (a token bucket on its link), so a copy takes long enough to be cut."""
    subprocess.run(["tc", "qdisc", "add", "dev", host.veth, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms"],
                   check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", host.veth, "root"], check=False, capture_output=True)


@pytest.mark.parametrize("method", ["stream", "ssh"])
def test_a_copy_killed_half_way_leaves_a_valid_store_and_the_next_run_completes_it(host, run_ansible, testhosts, method):
    target = system("kill-" + method, mib=384)
    missing = new_paths(target)
    payload = next(p for p in missing if "-payload-" in p)
    with throttled(host):
        proc = subprocess.Popen(["ansible", "cc1", "-m", MODULE, "-a", "path=%s method=%s" % (target, method)],
                                env=ansible_env(testhosts), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        # The host writes the payload into its store as it arrives: kill the controller once some of it is there.
        deadline = time.monotonic() + 120
        written = 0
        while time.monotonic() < deadline and proc.poll() is None:
            written = int(host.run("du -sm %s 2>/dev/null | cut -f1 || echo 0" % payload).stdout or 0)
            if written >= 32:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the copy ended before it could be killed"
        kill_tree(proc.pid)
        proc.wait()
    assert 32 <= written < 384
    # The host's side notices the connection is gone and ends; the store is valid without the cut path.
    deadline = time.monotonic() + 30
    while serve_processes(host) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert serve_processes(host) == []
    assert payload in invalid_on(host, missing) and target in invalid_on(host, missing)
    verify = host.run("nix-store --verify --check-contents", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    still_missing = invalid_on(host, missing)
    rerun = result_of(copy(run_ansible, "cc1", "path=%s method=%s" % (target, method)))
    assert rerun["missing"] == still_missing and rerun["bytes"] == nar_size(still_missing)
    assert_arrived(host, missing)


# -- memory ---------------------------------------------------------------------------------------------------

def test_controller_memory_does_not_grow_with_the_closure(host, testhosts):
    peaks = {}
    for mib in (16, 512):
        host.reset()
        target = system("memory-%d" % mib, mib=mib)
        proc = subprocess.Popen(["ansible", "cc1", "-m", MODULE, "-a", "path=%s" % target], env=ansible_env(testhosts),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with TreeMemory(proc.pid) as memory:
            out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out + err
        assert result_of(subprocess.CompletedProcess([], 0, out, err))["bytes"] >= mib * 1024 * 1024
        peaks[mib] = memory.peak
    # 32 times the data, the same memory (within what a sample's timing can change).
    assert peaks[512] - peaks[16] < 16 * 1024 * 1024, peaks


# -- bad input: one clear line, nothing changed --------------------------------------------------------------

BAD_INPUTS = [
    ("path=/etc/passwd", "'/etc/passwd' is not a Nix store path"),
    ("path=/nix/store/00000000000000000000000000000000-missing", "not in the Nix store of the controller: "
                                                                 "/nix/store/00000000000000000000000000000000-missing"),
    ("path=__SYSTEM__ src_host=nowhere", "src_host 'nowhere' is not a host of the inventory"),
    ("path=__SYSTEM__ src_host=cc1 method=ssh", "only method=stream does: use method=stream"),
    ("path=__SYSTEM__ batch_size=0", "batch_size must be at least 1"),
    ("path=__SYSTEM__ method=rsync", "value of method must be one of: auto, ssh, stream, got: rsync"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[a for a, _m in BAD_INPUTS])
def test_bad_input_gives_a_clear_message_and_changes_nothing(host, run_ansible, args, message):
    before = store_listing(host)
    proc = copy(run_ansible, "cc1", args.replace("__SYSTEM__", system("bad")))
    assert proc.returncode != 0
    msg = result_of(proc)["msg"]
    assert message in msg and "\n" not in msg, msg
    assert "Traceback" not in proc.stdout + proc.stderr
    assert store_listing(host) == before


@pytest.mark.parametrize("how", [("stream",), ("ssh",), pytest.param(("stream", "-c", "paramiko"), marks=pytest.mark.paramiko)],
                         ids=["stream", "ssh", "paramiko"])
def test_no_nix_on_the_host(fresh_hosts, run_ansible, how):
    fresh_hosts("ccnonix", ccnonix={"nix": False, "system": None})
    proc = copy(run_ansible, "ccnonix", "path=%s method=%s" % (system("nonix"), how[0]), *how[1:],
                env={"ANSIBLE_HOST_KEY_CHECKING": "False"} if "paramiko" in how else None)
    assert proc.returncode != 0
    msg = result_of(proc)["msg"]
    assert "`nix-store` was not found on" in msg and "apt-get install nix-bin" in msg, msg
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_unreachable_host_is_reported_unreachable(host, run_ansible):
    proc = copy(run_ansible, "cc1", "path=%s" % system("unreachable"), "-e", "ansible_port=1")
    assert proc.returncode == 4 and "UNREACHABLE" in proc.stdout, proc.stdout + proc.stderr
    assert "Connection refused" in proc.stdout
