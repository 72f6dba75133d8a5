"""nixos_keys on the test hosts: sources, owners and modes, idempotence, atomicity, pruning, and no leaks."""
import json
import os
import shlex
import subprocess
import textwrap
import time

import pytest

from ansinix_test import REPO_ROOT

SECRET = "ansinix-test-secret-%d" % os.getpid()
VAULT_PASSWORD = "vault-pass-for-tests"

# Runs inside the host while keys are uploaded. Records every (name, uid, gid, mode) that appears in the
# directory; run as a user who must never read a key, it also records every file it managed to open.
WATCHER = textwrap.dedent("""
    import json, os, stat, sys
    d, out, stop, try_open = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] == ["try-open"]
    seen, opened, read, rounds = set(), set(), set(), 0
    while not os.path.exists(stop):
        rounds += 1
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            # Temporary files live for microseconds: look at them every round, at the keys every 20th.
            if not n.startswith(".") and rounds % 20:
                continue
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
                seen.add((n, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))
                if try_open:
                    with open(p, "rb") as f:
                        opened.add(n)
                        read.add((n, f.read()[-40:].decode(errors="replace")))
            except OSError:
                pass
    with open(out + ".tmp", "w") as f:
        json.dump({"seen": sorted(seen), "opened": sorted(opened), "read": sorted(read), "rounds": rounds}, f)
    os.rename(out + ".tmp", out)
""")


def keys_play(keys_yaml, extra="", play_extra=""):
    return textwrap.dedent("""
        - name: Keys
          hosts: kh1
          gather_facts: false
        %s
          tasks:
            - name: Keys
              ansinix.nixos.nixos_keys:
                keys:
        %s
        %s
        """) % (textwrap.indent(textwrap.dedent(play_extra), " " * 2),
                textwrap.indent(textwrap.dedent(keys_yaml), " " * 10),
                textwrap.indent(textwrap.dedent(extra), " " * 8))


def listing(host, path="/run/keys"):
    """Name, owner, group, mode, inode and mtime of everything under a directory: to prove nothing changed."""
    return host.run("find %s -mindepth 1 -printf '%%P %%u %%g %%m %%i %%T@\\n' | sort" % shlex.quote(path), check=False).stdout


@pytest.fixture
def host(fresh_hosts):
    (h,) = fresh_hosts("kh1")
    h.run("useradd -r -M -p '*' svc && useradd -r -M -p '*' -G keys spy")
    return h


@pytest.fixture
def vault(tmp_path):
    """A vault password file, a vault-encrypted key file, and a vars file with an inline !vault value."""
    password_file = tmp_path / "vault-pass"
    password_file.write_text(VAULT_PASSWORD)
    secret_file = tmp_path / "tls.key"
    secret_file.write_text(SECRET + "-vault-file\n")
    subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", str(password_file), str(secret_file)],
                   check=True, capture_output=True)
    inline = subprocess.run(["ansible-vault", "encrypt_string", "--vault-password-file", str(password_file),
                             "--name", "vault_db_password", SECRET + "-vault-var"], check=True, capture_output=True, text=True)
    vars_file = tmp_path / "vault-vars.yml"
    vars_file.write_text(inline.stdout)
    for path in (secret_file, vars_file):
        assert SECRET not in path.read_text()
    return {"src": str(secret_file), "vars": str(vars_file), "args": ["--vault-password-file", str(password_file)]}


def test_each_source_owner_mode_and_idempotence(host, run_playbook, vault):
    play = keys_play("""
        db: {content: "{{ vault_db_password }}", user: svc, permissions: "0400"}
        tls: {src: "%s", user: deploy, group: keys, permissions: "0440"}
        token: {command: "printf %%s %s-command"}
        """ % (vault["src"], SECRET), play_extra="vars_files: [%s]" % vault["vars"])
    run = run_playbook(play, args=vault["args"])
    assert run.rc == 0, str(run)
    result = run.result("Keys", "kh1")
    assert result["changed"] and sorted(k["name"] for k in result["keys"]) == ["db", "tls", "token"]
    assert SECRET not in json.dumps(run.events)
    directory = host.stat("/run/keys")
    assert (directory["user"], directory["group"], directory["mode"]) == ("root", "keys", 0o750)
    expected = {"db": ("svc", "svc", 0o400, SECRET + "-vault-var"),
                "tls": ("deploy", "keys", 0o440, SECRET + "-vault-file\n"),
                "token": ("root", "root", 0o600, SECRET + "-command")}
    before = {}
    for name, (user, group, mode, content) in expected.items():
        st = host.stat("/run/keys/" + name)
        assert (st["user"], st["group"], st["mode"]) == (user, group, mode), name
        assert host.read_file("/run/keys/" + name) == content
        before[name] = (st["ino"], st["mtime"])
    assert host.run("ls -A /run/keys").stdout.split() == [".ansinix-keys.json", "db", "tls", "token"]

    time.sleep(0.05)
    again = run_playbook(play, args=vault["args"])
    assert again.rc == 0 and again.result("Keys", "kh1")["changed"] is False, str(again)
    assert not any(k["changed"] for k in again.result("Keys", "kh1")["keys"])
    for name in expected:
        st = host.stat("/run/keys/" + name)
        assert (st["ino"], st["mtime"]) == before[name], name

    # Another owner rewrites that key only; the others keep inode and mtime.
    changed = run_playbook(play.replace("user: svc", "user: deploy"), args=vault["args"])
    assert changed.rc == 0, str(changed)
    assert [k["name"] for k in changed.result("Keys", "kh1")["keys"] if k["changed"]] == ["db"]
    assert (host.stat("/run/keys/db")["user"], host.stat("/run/keys/db")["group"]) == ("deploy", "deploy")
    for name in ("tls", "token"):
        assert (host.stat("/run/keys/" + name)["ino"], host.stat("/run/keys/" + name)["mtime"]) == before[name]


def test_a_watcher_never_sees_a_wider_mode(host, run_playbook):
    host.run("mkdir -p /run/keys && chown root:keys /run/keys && chmod 0750 /run/keys")
    host.run("cat > /tmp/watcher.py", input=WATCHER)
    # One watcher as root sees every file; one as `spy` (in group keys, so it may enter the directory,
    # but owns no key) tries to open every file that appears.
    host.run("nohup python3 /tmp/watcher.py /run/keys /tmp/seen-root /tmp/stop >/dev/null 2>&1 &")
    host.run("nohup setpriv --reuid=spy --regid=spy --init-groups python3 /tmp/watcher.py /run/keys /tmp/seen-spy /tmp/stop"
             " try-open >/dev/null 2>&1 &")
    time.sleep(0.5)
    # Some keys are large (a certificate chain, say): the longer a write takes, the likelier the watcher catches it.
    keys = "\n".join('k%d: {content: "%s-%d%s", user: svc, permissions: "0440"}' % (i, SECRET, i, "x" * (i % 6 == 0) * 2 ** 20)
                     for i in range(60))
    keys += '\nopen: {content: "%s-open", user: root, group: keys, permissions: "0640"}' % SECRET
    try:
        for version in range(3):
            run = run_playbook(keys_play(keys.replace(SECRET, SECRET + "v%d" % version)))
            assert run.rc == 0, str(run)
            assert len([k for k in run.result("Keys", "kh1")["keys"] if k["changed"]]) == 61
    finally:
        host.run("touch /tmp/stop")
    for _attempt in range(100):
        if host.exists("/tmp/seen-root") and host.exists("/tmp/seen-spy"):
            break
        time.sleep(0.1)
    root_view = json.loads(host.read_file("/tmp/seen-root"))
    spy_view = json.loads(host.read_file("/tmp/seen-spy"))
    svc = (int(host.run("id -u svc").stdout), int(host.run("id -g svc").stdout))
    keys_gid = int(host.run("getent group keys | cut -d: -f3").stdout)
    temporaries = [s for s in root_view["seen"] if s[0].startswith(".ansinix-key-")]
    assert temporaries, "the watcher saw no temporary file: it proves nothing (%d rounds)" % root_view["rounds"]
    for name, uid, gid, mode in root_view["seen"]:
        if name == ".ansinix-keys.json":
            assert (uid, mode) == (0, 0o600)
        elif name == "open":
            assert (uid, gid) in ((0, 0), (0, keys_gid)) and mode & ~0o640 == 0, (name, uid, gid, oct(mode))
            assert gid == keys_gid or mode & 0o077 == 0, (name, uid, gid, oct(mode))
        elif (uid, gid) == svc:
            assert mode & ~0o440 == 0, (name, oct(mode))  # the final owner, never more than the final mode
        elif name.startswith(".ansinix-key-") and (uid, gid) == (0, keys_gid):
            # `open`'s temporary file, in its final owner and mode just before it is renamed over `open` (the spy's
            # view below shows that no `k` key's temporary file was ever readable by the group).
            assert mode & ~0o640 == 0, (name, oct(mode))
        else:
            # Anything else is root's alone: owned by root, no group or other bits.
            assert uid == 0 and mode & 0o077 == 0, (name, uid, gid, oct(mode))
    # The spy could list the directory all along, and read exactly the one key its group may read.
    assert spy_view["rounds"] > 100 and any(s[0].startswith("k") for s in spy_view["seen"])
    # It read `open`, and never a `k` key. A temporary file it caught open can only be one of `open`'s, the one
    # file its group may read, already holding its final owner and mode (the loop above checked every state
    # root's watcher saw) just before it is renamed over `open`.
    assert "open" in spy_view["opened"], spy_view["opened"]
    assert [n for n in spy_view["opened"] if n != "open" and not n.startswith(".ansinix-key-")] == [], spy_view["opened"]
    # And every byte it read, temporary files included, was `open`'s whole content.
    assert spy_view["read"] and all(tail.endswith("-open") for _name, tail in spy_view["read"]), spy_view["read"]
    assert not host.run("ls -A /run/keys | grep '^.ansinix-key-'", check=False).stdout


def test_prune_removes_only_its_own_stale_keys(host, run_playbook):
    assert run_playbook(keys_play('a: {content: "%s-a"}\nb: {content: "%s-b"}' % (SECRET, SECRET))).rc == 0
    host.run("echo mine > /run/keys/manual && mkdir -p /run/keys/sub && echo deeper > /run/keys/sub/b")
    run = run_playbook(keys_play('a: {content: "%s-a"}' % SECRET))
    assert run.rc == 0, str(run)
    assert run.result("Keys", "kh1")["removed"] == ["/run/keys/b"]
    assert not host.exists("/run/keys/b") and host.read_file("/run/keys/a") == SECRET + "-a"
    assert host.read_file("/run/keys/manual") == "mine\n" and host.read_file("/run/keys/sub/b") == "deeper\n"
    kept = run_playbook(keys_play('c: {content: "%s-c"}' % SECRET, "prune: false"))
    assert kept.rc == 0 and kept.result("Keys", "kh1")["removed"] == []
    assert host.exists("/run/keys/a") and host.exists("/run/keys/c")
    # No keys at all: every key it wrote goes, the others stay.
    emptied = run_playbook(keys_play("{}"))
    assert emptied.rc == 0, str(emptied)
    assert sorted(emptied.result("Keys", "kh1")["removed"]) == ["/run/keys/a", "/run/keys/c"]
    assert host.run("ls -A /run/keys").stdout.split() == ["manual", "sub"]


def test_unknown_owner_fails_before_writing_unless_deferred(host, run_playbook):
    run = run_playbook(keys_play('ok: {content: "%s"}\nlater: {content: "%s", user: grafana}' % (SECRET, SECRET)))
    assert run.rc != 0
    assert "key 'later': user 'grafana' does not exist on this host" in run.result("Keys", "kh1")["msg"]
    assert not host.exists("/run/keys")
    bad_group = run_playbook(keys_play('ok: {content: "%s", user: svc, group: grafana}' % SECRET))
    assert "group 'grafana' does not exist" in bad_group.result("Keys", "kh1")["msg"] and not host.exists("/run/keys")

    play = keys_play('later: {content: "%s", user: grafana, permissions: "0440", defer_owner: true}' % SECRET)
    deferred = run_playbook(play)
    assert deferred.rc == 0, str(deferred)
    (key,) = deferred.result("Keys", "kh1")["keys"]
    assert (key["deferred"], key["wanted_owner"], key["owner"]) == (True, "grafana", "root")
    st = host.stat("/run/keys/later")
    assert (st["user"], st["group"], st["mode"]) == ("root", "root", 0o440)
    assert run_playbook(play).result("Keys", "kh1")["changed"] is False  # still nobody to hand it to
    host.run("useradd -r -M -p '*' grafana")  # what the new system's activation does
    owned = run_playbook(play)
    assert owned.rc == 0 and owned.result("Keys", "kh1")["changed"]
    assert owned.result("Keys", "kh1")["keys"][0]["deferred"] is False
    st = host.stat("/run/keys/later")
    assert (st["user"], st["group"], st["mode"]) == ("grafana", "grafana", 0o440)
    assert host.read_file("/run/keys/later") == SECRET


BAD = [
    ('x: {content: "bad-input-secret", src: /etc/hostname}', "key 'x': give exactly one of content, src or command (got content, src)"),
    ("x: {user: root}", "key 'x': give exactly one of content, src or command (got none)"),
    ('x: {content: "bad-input-secret", permissions: "0999"}', "key 'x': permissions '0999' is not an octal mode"),
    ("x: {src: /nonexistent/secret}", "key 'x': cannot read src /nonexistent/secret"),
    ("x: {src: /root}", "key 'x': cannot read src /root"),
    ('x: {command: "echo %s; exit 3"}' % SECRET, "key 'x': command 'echo' failed on the controller (exit 3)"),
    ('"../x": {content: "bad-input-secret"}', "key name '../x'"),
    ('x: {content: "bad-input-secret", colour: blue}', "key 'x': unknown setting(s) colour"),
    ("x: {content: 42}", "key 'x': content must be text, got a number; quote numbers in YAML"),
    ("x: [a, b]", "key 'x': give a dictionary with one of content, src or command, got a list"),
    ('x: {content: "bad-input-secret", dest_dir: /nix/store/keys}', "dest_dir /nix/store/keys is in the Nix store"),
    ('x: {content: "bad-input-secret", user: svc, group: "a:b"}', "key 'x': group must be a user or group name"),
]


def test_bad_input_writes_nothing(host, run_playbook):
    assert run_playbook(keys_play('good: {content: "%s-good"}' % SECRET)).rc == 0
    before = listing(host)
    assert "good root root 600" in before
    problems = []
    for keys, message in BAD:
        # The bad key comes after a new and a changed good one: nothing of the task may be written.
        run = run_playbook(keys_play('a-new: {content: "%s-new"}\ngood: {content: "%s-changed"}\n%s' % (SECRET, SECRET, keys)))
        msg = run.result("Keys", "kh1").get("msg", "") if run.events else run.stdout[-500:]
        if run.rc == 0 or message not in msg or "\n" in msg:
            problems.append("%s: rc=%d, message %r" % (keys, run.rc, msg))
        if "Traceback" in run.stdout + run.stderr or SECRET in run.stdout + run.stderr:
            problems.append("%s: a traceback or the secret in the output" % keys)
        if listing(host) != before:
            problems.append("%s: /run/keys changed:\n%s" % (keys, listing(host)))
    assert not problems, "\n".join(problems)
    assert host.read_file("/run/keys/good") == SECRET + "-good"


def test_not_root_without_become_is_refused_before_writing(host, run_playbook):
    run = run_playbook(keys_play('x: {content: "%s", user: svc}' % SECRET, "dest_dir: /home/deploy/keys"),
                       args=["-e", "ansible_user=deploy"])
    assert run.rc != 0
    assert "key 'x': giving it to svc:svc needs root; run the task with become: true" in run.result("Keys", "kh1")["msg"]
    assert not host.exists("/home/deploy/keys")


def test_a_become_method_that_cannot_pipeline_is_refused_before_anything_is_written(host, run_playbook):
    """su cannot take the module over stdin: Ansible would write it, keys and all, to a file on the host. Refused
    with one line, even with pipelining on and remote files kept; no file on the host ever held the secret."""
    play = keys_play('x: {content: "%s-su"}' % SECRET, play_extra="become: true\nbecome_method: su")
    run = run_playbook(play, args=["-vvv"], env={"ANSIBLE_PIPELINING": "True", "ANSIBLE_KEEP_REMOTE_FILES": "1"})
    assert run.rc != 0
    assert run.result("Keys", "kh1")["msg"] == (
        "nixos_keys will not run with become method su, which cannot pipeline; use a become method that pipelines "
        "(sudo, doas) or log in as root without become, so that the keys travel over the connection and never rest in a "
        "file on the host")
    assert not host.exists("/run/keys/x")
    assert "AnsiballZ_nixos_keys" not in run.stdout
    found = host.run("grep -rlF %s /nix /tmp /var/tmp /root /home /run 2>/dev/null" % SECRET, check=False).stdout.split()
    assert found == []
    # Logged in as root without become, the same key is written.
    play = keys_play('x: {content: "%s-su"}' % SECRET)
    assert run_playbook(play).rc == 0
    assert host.read_file("/run/keys/x") == SECRET + "-su"


def test_a_dest_dir_under_a_directory_others_control_is_refused(host, run_playbook):
    """A user who owns /run/app could rename /run/app/keys away and put a directory of their own there."""
    # Under the host's own /run (a tmpfs of its own), not a directory of this machine.
    host.run("mkdir -m 0755 -p /run/app/keys /run/open/keys && chown deploy /run/app && chmod 0777 /run/open")
    for parent, why in (("/run/app", "is owned by uid %s (mode 0755)" % host.run("id -u deploy").stdout.strip()),
                        ("/run/open", "is writable by other users (mode 0777)")):
        for extra in ([], ["--check"]):
            run = run_playbook(keys_play('x: {content: "%s"}' % SECRET, "dest_dir: %s/keys" % parent), args=extra)
            assert run.rc != 0
            assert run.result("Keys", "kh1")["msg"] == (
                "dest_dir %s/keys is under %s, which %s, who could swap it for a directory of their own; use a directory "
                "whose parents only root may write to, such as /run/keys" % (parent, parent, why))
            assert host.run("ls -A %s/keys" % parent).stdout == ""
    host.run("rm -rf /run/app /run/open")


def test_check_mode_and_diff_show_metadata_only(host, run_playbook):
    play = keys_play('a: {content: "%s-a", user: svc, permissions: "0400"}\nb: {content: "%s-b"}' % (SECRET, SECRET))
    check = run_playbook(play, args=["--check", "--diff"])
    assert check.rc == 0, str(check)
    assert check.result("Keys", "kh1")["changed"] and not host.exists("/run/keys")
    assert "+/run/keys/a: svc:svc 0400 (written)" in check.stdout and "-/run/keys/a: absent" in check.stdout
    assert run_playbook(play).rc == 0
    before = listing(host)
    shrink = keys_play('a: {content: "%s-a2", user: svc, permissions: "0400"}' % SECRET)
    check = run_playbook(shrink, args=["--check", "--diff"])
    assert check.rc == 0 and check.result("Keys", "kh1")["removed"] == ["/run/keys/b"]
    assert "+/run/keys/a: svc:svc 0400 (rewritten)" in check.stdout
    assert "-/run/keys/b: root:root 0600" in check.stdout and "+/run/keys/b: absent (pruned)" in check.stdout
    assert listing(host) == before
    assert SECRET not in check.stdout + check.stderr + json.dumps(check.events)


def test_secret_appears_in_no_output_no_file_and_no_store(host, run_playbook, vault, testhosts):
    """At -vvvv, with pipelining switched off and remote files kept, through sudo from a plain user."""
    play = keys_play('db: {content: "{{ vault_db_password }}"}\ntls: {src: "%s"}\ntok: {command: "echo %s-command"}'
                     % (vault["src"], SECRET), play_extra="become: true\nvars_files: [%s]" % vault["vars"])
    env = {"ANSIBLE_PIPELINING": "False", "ANSIBLE_KEEP_REMOTE_FILES": "1"}
    outputs = []
    for extra in (["--check", "--diff"], ["--diff"]):
        run = run_playbook(play, args=["-vvvv", "-e", "ansible_user=deploy"] + extra + vault["args"], env=env)
        assert run.rc == 0, str(run)
        outputs += [run.stdout, run.stderr, json.dumps(run.events)]
    # The run really went through a plain user and sudo, and kept its other remote files as asked.
    assert "ESTABLISH SSH CONNECTION FOR USER: deploy" in outputs[3] and "sudo" in outputs[3]
    assert "AnsiballZ_nixos_keys" not in outputs[3], "the module went through a file on the host"
    assert host.read_file("/run/keys/db") == SECRET + "-vault-var"
    assert host.read_file("/run/keys/tls") == SECRET + "-vault-file\n"
    assert host.read_file("/run/keys/tok") == SECRET + "-command\n"
    for text in outputs:
        assert SECRET not in text
    # On the host only the key files hold it: not its Nix store, not any temporary or home directory.
    found = host.run("grep -rlF %s /nix /tmp /var/tmp /root /home /run 2>/dev/null" % SECRET, check=False).stdout.split()
    assert sorted(found) == ["/run/keys/db", "/run/keys/tls", "/run/keys/tok"]
    # On the controller: not in the Nix store, nor in Ansible's local temporary directory (decrypted vault files).
    local_tmp = os.path.join(testhosts.state_dir, "ansible-local")
    found = subprocess.run(["grep", "-rlF", SECRET, "/nix/store", local_tmp], capture_output=True, text=True, check=False)
    assert found.stdout == "", found.stdout


def test_nixos_module_parses_and_gives_each_key_units():
    """nix/keys.nix, evaluated against a minimal stand-in of nixpkgs' lib (there is no nixpkgs here)."""
    module = os.path.join(REPO_ROOT, "nix", "keys.nix")
    subprocess.run(["nix-instantiate", "--parse", module], check=True, capture_output=True)
    config = evaluate_keys_module()
    assert config["keys"]["db-password"]["path"] == "/run/keys/db-password"
    assert config["keys"]["tls"]["path"] == "/run/keys/nginx/tls"
    services, paths = config["systemd"]["services"], config["systemd"]["paths"]
    assert sorted(services) == sorted(paths) == ["db-password-key", "quoted-key", "tls-key"]
    assert paths["tls-key"]["pathConfig"] == {"PathExists": "/run/keys/nginx/tls"}
    assert paths["tls-key"]["wantedBy"] == ["paths.target"]
    assert "wantedBy" not in services["tls-key"], "a boot or switch must not wait for a key that is not there"
    assert services["tls-key"]["serviceConfig"]["TimeoutStartSec"] == "infinity"
    assert services["tls-key"]["serviceConfig"]["Restart"] == "always"
    assert "'/srv/it'\\''s a key'" in services["quoted-key"]["script"]
    assert config["users"]["groups"] == {"keys": {}}
    failed = subprocess.run(["nix-instantiate", "--eval", "--strict", "-E",
                             "import %s { keys.x.pth = \"/x\"; }" % os.path.join(REPO_ROOT, "tests", "fixtures", "keys-module.nix")],
                            capture_output=True, text=True, check=False)
    assert failed.returncode != 0 and "ansinix.keys.x: no option pth" in failed.stderr


def evaluate_keys_module(keys=None):
    expr = "import %s { %s }" % (os.path.join(REPO_ROOT, "tests", "fixtures", "keys-module.nix"),
                                 "keys = builtins.fromJSON %s;" % json.dumps(json.dumps(keys)) if keys else "")
    proc = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def wait_for_exit(proc, timeout):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_nixos_key_unit_scripts_follow_the_file(tmp_path):
    """The unit's start-up waits for the file, its main process lives exactly as long as the file exists,
    and a key replaced by a rename (how nixos_keys rewrites) does not end it."""
    path = str(tmp_path / "my key")
    unit = evaluate_keys_module({"k": {"path": path}})["systemd"]["services"]["k-key"]
    procs = []
    try:
        start = subprocess.Popen(["/bin/sh", "-ec", unit["preStart"]])
        procs.append(start)
        assert wait_for_exit(start, 1.5) is None, "the unit finished starting without its key"
        with open(path, "w") as f:
            f.write("v1")
        assert wait_for_exit(start, 5) == 0

        main = subprocess.Popen(["/bin/sh", "-ec", unit["script"]], stdout=subprocess.PIPE, text=True)
        procs.append(main)
        with open(path + ".new", "w") as f:
            f.write("v2")
        os.rename(path + ".new", path)
        assert wait_for_exit(main, 2.5) is None, "a key replaced by a rename stopped the unit"
        os.unlink(path)
        assert wait_for_exit(main, 5) == 0
        assert main.stdout.read().splitlines() == ["key k is present", "key k was removed"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
