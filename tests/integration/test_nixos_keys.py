"""nixos_keys on the test hosts: sources, owners and modes, idempotence, atomicity, pruning, and no leaks."""
import os
import subprocess
import textwrap
import time

import pytest

from ansinix_test import REPO_ROOT

SECRET = "ansinix-test-secret-%d" % os.getpid()
VAULT_PASSWORD = "vault-pass-for-tests"

WATCHER = textwrap.dedent("""
    import os, stat, sys, time
    d, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    seen = set()
    while not os.path.exists(stop):
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            try:
                st = os.lstat(os.path.join(d, n))
            except FileNotFoundError:
                continue
            seen.add((n, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))
    with open(out, "w") as f:
        for n, uid, gid, mode in sorted(seen):
            f.write("%s %d %d %o\\n" % (n, uid, gid, mode))
""")


def keys_play(keys_yaml, extra=""):
    return textwrap.dedent("""
        - name: Keys
          hosts: kh1
          gather_facts: false
          tasks:
            - name: Keys
              ansinix.nixos.nixos_keys:
                keys:
        %s
        %s
        """) % (textwrap.indent(textwrap.dedent(keys_yaml), " " * 10), textwrap.indent(textwrap.dedent(extra), " " * 8))


@pytest.fixture
def host(fresh_hosts):
    (h,) = fresh_hosts("kh1")
    h.run("useradd -r -M -p '*' svc")
    return h


@pytest.fixture
def vault_file(tmp_path):
    password_file = tmp_path / "vault-pass"
    password_file.write_text(VAULT_PASSWORD)
    secret_file = tmp_path / "tls.key"
    secret_file.write_text(SECRET + "-vault\n")
    subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", str(password_file), str(secret_file)],
                   check=True, capture_output=True)
    assert SECRET not in secret_file.read_text()
    return str(secret_file), str(password_file)


def test_each_source_owner_mode_and_idempotence(host, run_playbook, vault_file):
    src, password_file = vault_file
    play = keys_play("""
        db: {content: "%s-content", user: svc, permissions: "0400"}
        tls: {src: "%s", user: deploy, group: keys, permissions: "0440"}
        token: {command: "printf %%s %s-command"}
        """ % (SECRET, src, SECRET))
    run = run_playbook(play, args=["--vault-password-file", password_file])
    assert run.rc == 0, str(run)
    result = run.result("Keys", "kh1")
    assert result["changed"] and sorted(k["name"] for k in result["keys"]) == ["db", "tls", "token"]
    assert SECRET not in repr(result)
    assert host.stat("/run/keys")["mode"] == 0o750 and host.stat("/run/keys")["group"] == "keys"
    expected = {"db": ("svc", "svc", 0o400, SECRET + "-content"), "tls": ("deploy", "keys", 0o440, SECRET + "-vault\n"),
                "token": ("root", "root", 0o600, SECRET + "-command")}
    before = {}
    for name, (user, group, mode, content) in expected.items():
        st = host.stat("/run/keys/" + name)
        assert (st["user"], st["group"], st["mode"]) == (user, group, mode), name
        assert host.read_file("/run/keys/" + name) == content
        before[name] = (st["ino"], st["mtime"])
    time.sleep(0.05)
    again = run_playbook(play, args=["--vault-password-file", password_file])
    assert again.rc == 0 and again.result("Keys", "kh1")["changed"] is False, str(again)
    for name in expected:
        st = host.stat("/run/keys/" + name)
        assert (st["ino"], st["mtime"]) == before[name], name
    # Changing the owner rewrites that key only.
    changed = run_playbook(play.replace("user: svc", "user: deploy"), args=["--vault-password-file", password_file])
    assert changed.rc == 0
    assert [k["name"] for k in changed.result("Keys", "kh1")["keys"] if k["changed"]] == ["db"]
    assert host.stat("/run/keys/db")["user"] == "deploy"
    assert (host.stat("/run/keys/tls")["ino"], host.stat("/run/keys/tls")["mtime"]) == before["tls"]


def test_a_watcher_never_sees_a_wider_mode(host, run_playbook):
    host.run("mkdir -p /run/keys && chown root:keys /run/keys && chmod 0750 /run/keys")
    host.run("cat > /tmp/watcher.py", input=WATCHER)
    host.run("nohup python3 /tmp/watcher.py /run/keys /tmp/seen /tmp/stop >/dev/null 2>&1 &")
    time.sleep(0.3)
    keys = "\n".join("k%d: {content: \"%s-%d\", user: svc, permissions: \"0440\"}" % (i, SECRET, i) for i in range(30))
    for version in range(3):
        run = run_playbook(keys_play(keys.replace(SECRET, SECRET + "v%d" % version)))
        assert run.rc == 0, str(run)
    host.run("touch /tmp/stop")
    for _attempt in range(100):
        if host.exists("/tmp/seen"):
            break
        time.sleep(0.1)
    svc_uid = int(host.run("id -u svc").stdout)
    svc_gid = int(host.run("id -g svc").stdout)
    seen = [line.split() for line in host.read_file("/tmp/seen").splitlines()]
    temporaries = [s for s in seen if s[0].startswith(".ansinix-key-")]
    assert temporaries, "the watcher saw no temporary file: it proves nothing"
    for name, uid, gid, mode in seen:
        mode = int(mode, 8)
        if name == ".ansinix-keys.json":
            assert (int(uid), mode) == (0, 0o600)
        elif (int(uid), int(gid)) == (svc_uid, svc_gid):
            assert mode & ~0o440 == 0, (name, oct(mode))  # the final owner, never more than the final mode
        else:
            # Anything else must be root's alone: no group or other bits, and owned by root.
            assert int(uid) == 0 and mode & 0o077 == 0, (name, uid, gid, oct(mode))


def test_prune_removes_only_its_own_stale_keys(host, run_playbook):
    assert run_playbook(keys_play('a: {content: "%s-a"}\nb: {content: "%s-b"}' % (SECRET, SECRET))).rc == 0
    host.run("echo mine > /run/keys/manual")
    run = run_playbook(keys_play('a: {content: "%s-a"}' % SECRET))
    assert run.rc == 0
    assert run.result("Keys", "kh1")["removed"] == ["/run/keys/b"]
    assert not host.exists("/run/keys/b") and host.exists("/run/keys/a")
    assert host.read_file("/run/keys/manual") == "mine\n"
    kept = run_playbook(keys_play('c: {content: "%s-c"}' % SECRET, "prune: false"))
    assert kept.rc == 0 and host.exists("/run/keys/a") and host.exists("/run/keys/c")


def test_unknown_owner_fails_before_writing_unless_deferred(host, run_playbook):
    run = run_playbook(keys_play('ok: {content: "%s"}\nlater: {content: "%s", user: grafana}' % (SECRET, SECRET)))
    assert run.rc != 0
    assert "user 'grafana' does not exist on this host" in run.result("Keys", "kh1")["msg"]
    assert not host.exists("/run/keys/ok") and not host.exists("/run/keys/later")
    deferred = run_playbook(keys_play('later: {content: "%s", user: grafana, permissions: "0400", defer_owner: true}' % SECRET))
    assert deferred.rc == 0, str(deferred)
    assert deferred.result("Keys", "kh1")["keys"][0]["deferred"] is True
    st = host.stat("/run/keys/later")
    assert (st["user"], st["group"], st["mode"]) == ("root", "root", 0o400)
    host.run("useradd -r -M -p '*' grafana")  # what the new system's activation would do
    owned = run_playbook(keys_play('later: {content: "%s", user: grafana, permissions: "0400", defer_owner: true}' % SECRET))
    assert owned.rc == 0 and owned.result("Keys", "kh1")["changed"]
    assert host.stat("/run/keys/later")["user"] == "grafana"


BAD = [
    ('x: {content: "s", src: /etc/hostname}', "give exactly one of content, src or command (got content, src)"),
    ("x: {user: root}", "give exactly one of content, src or command (got none)"),
    ('x: {content: "s", permissions: "0999"}', "permissions '0999' is not an octal mode"),
    ("x: {src: /nonexistent/secret}", "cannot read src /nonexistent/secret"),
    ('x: {command: "exit 3"}', "failed on the controller (exit 3)"),
    ('"../x": {content: "s"}', "key name '../x'"),
    ('x: {content: "s", colour: blue}', "unknown setting(s) colour"),
]


@pytest.mark.parametrize("keys,message", BAD, ids=[m for _k, m in BAD])
def test_bad_input_writes_nothing(host, run_playbook, keys, message):
    run = run_playbook(keys_play(keys))
    assert run.rc != 0
    assert message in run.result("Keys", "kh1")["msg"]
    assert "Traceback" not in run.stdout + run.stderr
    assert not host.exists("/run/keys")


def test_secret_appears_in_no_output_and_no_store(host, run_playbook, vault_file):
    src, password_file = vault_file
    run = run_playbook(keys_play('db: {content: "%s-content"}\ntls: {src: "%s"}\ntok: {command: "echo %s-command"}'
                                 % (SECRET, src, SECRET)), args=["-vvvv", "--vault-password-file", password_file])
    assert run.rc == 0, str(run)
    assert host.read_file("/run/keys/db") == SECRET + "-content"
    assert SECRET not in run.stdout + run.stderr
    # Nothing under any Nix store, on the host or on the controller; nothing left in temporary places.
    assert host.run("grep -rlF %s /nix/store /tmp /root/.ansible /home/deploy 2>/dev/null" % SECRET, check=False).stdout == ""
    assert subprocess.run(["grep", "-rlF", SECRET, "/nix/store"], capture_output=True, text=True, check=False).stdout == ""
    assert host.run("ls -A /run/keys").stdout.split() == [".ansinix-keys.json", "db", "tls", "tok"]


def test_nixos_module_gives_each_key_a_unit():
    """nix/keys.nix evaluated against a minimal stand-in of nixpkgs' lib (there is no nixpkgs here)."""
    expr = os.path.join(REPO_ROOT, "tests", "fixtures", "keys-module.nix")
    proc = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", expr], capture_output=True, text=True, check=True)
    units = __import__("json").loads(proc.stdout)
    assert sorted(units) == ["db-password-key", "tls-key"]
    assert "/run/keys/db-password" in units["db-password-key"]["script"]
    assert units["tls-key"]["serviceConfig"]["Restart"] == "always"
