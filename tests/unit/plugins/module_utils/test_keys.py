"""Key validation, the atomic write and prune bookkeeping, on temporary directories of this machine (as root)."""
import grp
import json
import os
import pwd
import stat

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils import keys as K
from ansible_collections.ansinix.nixos.plugins.module_utils.keys import KeysError, apply, check_name, parse_mode, plan

SECRET = "s3cret-unit-%d" % os.getpid()
NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


def run(keys, dest_dir, prune=True, check_mode=False, prune_dirs=()):
    return apply(plan(keys, dest_dir), prune=prune, check_mode=check_mode, prune_dirs=prune_dirs)


def meta(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def d(tmp_path):
    os.chmod(str(tmp_path), 0o755)
    return str(tmp_path / "keys")


@pytest.mark.parametrize("value,mode", [("0600", 0o600), ("440", 0o440), (0o400, 0o400), ("0000", 0)])
def test_modes(value, mode):
    assert parse_mode("k", value) == mode


@pytest.mark.parametrize("value", ["0999", "rw-------", "06000", "", "0o600", 384 * 8, True])
def test_bad_modes(value):
    with pytest.raises(KeysError) as err:
        parse_mode("k", value)
    assert "key 'k': permissions" in err.value.msg


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", ".", "..", None, 3, "db\n"])
def test_bad_names(name):
    with pytest.raises(KeysError):
        check_name(name)


def test_group_defaults_to_the_users_primary_group(d):
    (key,) = plan({"k": {"content": "x", "user": "nobody"}}, d)
    assert (key["uid"], key["gid"], key["group"]) == (NOBODY.pw_uid, NOBODY.pw_gid, NOBODY_GROUP)
    assert key["wanted_owner"] == "nobody:" + NOBODY_GROUP and not key["deferred"]


@pytest.mark.parametrize("spec,missing", [
    ({"user": "no-such-user-x"}, "user 'no-such-user-x' does not exist"),
    ({"user": "nobody", "group": "no-such-group-x"}, "group 'no-such-group-x' does not exist"),
    ({"user": "no-such-user-x", "group": "no-such-group-x"}, "user 'no-such-user-x' and group 'no-such-group-x' do not exist"),
])
def test_unknown_owner_is_an_error_unless_deferred(d, spec, missing):
    with pytest.raises(KeysError) as err:
        plan({"k": dict(spec, content="x")}, d)
    assert missing in err.value.msg and "defer_owner: true" in err.value.msg
    (key,) = plan({"k": dict(spec, content="x", defer_owner=True)}, d)
    assert (key["uid"], key["gid"], key["user"], key["group"], key["deferred"]) == (0, 0, "root", "root", True)


@pytest.mark.parametrize("spec,message", [
    ({"user": 1000}, "user must be a user or group name"),
    ({"group": "a:b"}, "group must be a user or group name"),
    ({"defer_owner": "yes"}, "defer_owner must be true or false"),
    ({"dest_dir": "relative/dir"}, "must be an absolute path"),
    ({"dest_dir": "/nix/store/abc-keys"}, "is in the Nix store"),
    ({"dest_dir": "/nix/store"}, "is in the Nix store"),
])
def test_bad_settings(d, spec, message):
    with pytest.raises(KeysError) as err:
        plan({"k": dict(spec, content="x")}, d)
    assert message in err.value.msg


def test_a_link_into_the_store_is_the_store(tmp_path):
    link = tmp_path / "keys"
    os.symlink("/nix/store", str(link))
    with pytest.raises(KeysError) as err:
        plan({"k": {"content": "x"}}, str(link))
    assert "is in the Nix store" in err.value.msg


def test_writes_owner_mode_bytes_and_directory(d):
    result = run({"a": {"content": SECRET, "permissions": "0400"},
                  "b": {"content": SECRET + "\n", "user": "nobody", "permissions": "0440"}}, d)
    assert result["changed"] and result["removed"] == []
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750 and os.stat(d).st_uid == 0
    assert meta(os.path.join(d, "a")) == (0, 0, 0o400)
    assert meta(os.path.join(d, "b")) == (NOBODY.pw_uid, NOBODY.pw_gid, 0o440)
    with open(os.path.join(d, "b"), "rb") as f:
        assert f.read() == (SECRET + "\n").encode()
    assert sorted(os.listdir(d)) == [".ansinix-keys.json", "a", "b"]  # no temporary file left
    assert meta(os.path.join(d, K.MANIFEST)) == (0, 0, 0o600)
    assert [k["name"] for k in result["keys"]] == ["a", "b"]
    assert SECRET not in json.dumps(result)


def test_unchanged_keys_are_not_touched(d):
    keys = {"a": {"content": SECRET}, "b": {"content": SECRET, "user": "nobody"}}
    run(keys, d)
    before = dict((n, os.stat(os.path.join(d, n))) for n in ("a", "b", K.MANIFEST))
    os.utime(os.path.join(d, "a"), ns=(1, 1))  # any rewrite would move the mtime off this
    result = run(keys, d)
    assert result["changed"] is False and not any(k["changed"] for k in result["keys"])
    for name, st in before.items():
        now = os.stat(os.path.join(d, name))
        assert now.st_ino == st.st_ino
        assert now.st_mtime_ns == (1 if name == "a" else st.st_mtime_ns)


@pytest.mark.parametrize("change", [{"content": SECRET + "2"}, {"permissions": "0640"}, {"user": "nobody"}])
def test_each_difference_rewrites_only_that_key(d, change):
    keys = {"a": {"content": SECRET}, "b": {"content": SECRET}}
    run(keys, d)
    inodes = dict((n, os.stat(os.path.join(d, n)).st_ino) for n in keys)
    result = run(dict(keys, a=dict(keys["a"], **change)), d)
    assert [k["name"] for k in result["keys"] if k["changed"]] == ["a"]
    assert os.stat(os.path.join(d, "a")).st_ino != inodes["a"]
    assert os.stat(os.path.join(d, "b")).st_ino == inodes["b"]
    assert "(rewritten)" in result["diff"]["after"] and SECRET not in json.dumps(result)


def test_a_file_with_the_right_bytes_but_wider_mode_is_fixed(d):
    run({"a": {"content": SECRET}}, d)
    os.chmod(os.path.join(d, "a"), 0o644)
    assert run({"a": {"content": SECRET}}, d)["changed"]
    assert meta(os.path.join(d, "a")) == (0, 0, 0o600)


def test_a_link_in_place_of_a_key_is_replaced_not_followed(d, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    run({"a": {"content": SECRET}}, d)
    os.unlink(os.path.join(d, "a"))
    os.symlink(str(target), os.path.join(d, "a"))
    assert run({"a": {"content": SECRET}}, d)["changed"]
    assert not os.path.islink(os.path.join(d, "a")) and target.read_text() == "untouched"


def test_a_failed_write_leaves_no_temporary_file(d):
    os.makedirs(os.path.join(d, "a"))  # a directory where the key should go: the rename fails
    with pytest.raises(OSError):
        run({"a": {"content": SECRET}}, d)
    assert not [n for n in os.listdir(d) if n.startswith(K.TEMP_PREFIX)]
    # The key was recorded before the write: a later prune still knows it is this module's.
    assert K.read_manifest(d) == {"a"}


def test_prune_removes_only_its_own_stale_keys(d):
    run({"a": {"content": "1"}, "b": {"content": "2"}}, d)
    with open(os.path.join(d, "foreign"), "w") as f:
        f.write("not mine")
    result = run({"a": {"content": "1"}}, d)
    assert result["removed"] == [os.path.join(d, "b")] and result["changed"]
    assert sorted(os.listdir(d)) == [".ansinix-keys.json", "a", "foreign"]
    assert "%s/b: absent (pruned)" % d in result["diff"]["after"]
    assert run({"a": {"content": "1"}}, d)["changed"] is False


def test_without_prune_keys_stay_and_stay_known(d):
    run({"a": {"content": "1"}}, d)
    run({"b": {"content": "2"}}, d, prune=False)
    assert K.read_manifest(d) == {"a", "b"}
    assert run({"b": {"content": "2"}}, d)["removed"] == [os.path.join(d, "a")]


def test_no_keys_at_all_empties_the_directory_of_its_keys(d):
    run({"a": {"content": "1"}, "b": {"content": "2"}}, d)
    open(os.path.join(d, "foreign"), "w").close()
    result = apply([], prune=True, check_mode=False, prune_dirs=[d])
    assert sorted(result["removed"]) == [os.path.join(d, "a"), os.path.join(d, "b")]
    assert os.listdir(d) == ["foreign"]
    assert apply([], prune=True, check_mode=False, prune_dirs=[d])["changed"] is False
    assert apply([], prune=True, check_mode=False, prune_dirs=[d + "-never-made"])["changed"] is False


def test_a_manifest_cannot_lead_prune_out_of_its_directory(d, tmp_path):
    run({"a": {"content": "1"}}, d)
    outside = tmp_path / "outside"
    outside.write_text("keep")
    with open(os.path.join(d, K.MANIFEST), "w") as f:
        json.dump({"keys": ["a", "../outside", "/etc/hostname", ".ansinix-keys.json"]}, f)
    assert K.read_manifest(d) == {"a"}
    run({}, d, prune_dirs=[d])
    assert outside.read_text() == "keep"


def test_a_manifest_someone_else_wrote_is_ignored(d):
    run({"a": {"content": "1"}}, d)
    os.chown(os.path.join(d, K.MANIFEST), NOBODY.pw_uid, NOBODY.pw_gid)
    assert K.read_manifest(d) == set()
    assert apply([], prune=True, check_mode=False, prune_dirs=[d])["removed"] == []


def test_a_directory_others_may_write_to_is_refused(d):
    os.makedirs(d)
    os.chmod(d, 0o777)
    with pytest.raises(KeysError) as err:
        run({"a": {"content": SECRET}}, d)
    assert "writable by others" in err.value.msg and os.listdir(d) == []


def test_check_mode_writes_nothing_and_says_what_would_change(d):
    result = run({"a": {"content": SECRET}}, d, check_mode=True)
    assert result["changed"] and not os.path.exists(d)
    assert result["diff"]["after"] == "%s/: directory\n%s/a: root:root 0600 (written)\n" % (d, d)
    run({"a": {"content": SECRET}, "b": {"content": SECRET}}, d)
    snapshot = sorted((n, os.stat(os.path.join(d, n)).st_ino) for n in os.listdir(d))
    result = run({"a": {"content": SECRET + "x"}}, d, check_mode=True)
    assert result["changed"] and result["removed"] == [os.path.join(d, "b")]
    assert sorted((n, os.stat(os.path.join(d, n)).st_ino) for n in os.listdir(d)) == snapshot
    assert run({"a": {"content": SECRET}, "b": {"content": SECRET}}, d, check_mode=True)["changed"] is False


def test_without_root_giving_keys_away_is_refused_up_front(d, monkeypatch):
    monkeypatch.setattr(K.os, "geteuid", lambda: 4242)
    with pytest.raises(KeysError) as err:
        plan({"a": {"content": "x", "user": "nobody"}}, d)
    assert "needs root; run the task with become: true" in err.value.msg


@pytest.mark.parametrize("owner,mode,message", [
    ("nobody", 0o755, "is owned by uid %d (mode 0755)" % NOBODY.pw_uid),
    ("root", 0o777, "is writable by other users (mode 0777)"),
    ("root", 0o775, "is writable by other users (mode 0775)"),
])
def test_a_parent_someone_else_may_change_is_refused(tmp_path, owner, mode, message):
    """A user who owns (or may write to) a directory above dest_dir could rename dest_dir away and put their own
    in its place: the keys would land in it. Refused for an existing and for a new dest_dir, nothing written."""
    os.chmod(str(tmp_path), 0o755)
    parent = tmp_path / "foo"
    (parent / "below").mkdir(parents=True)
    os.chown(str(parent), pwd.getpwnam(owner).pw_uid, 0)
    os.chmod(str(parent), mode)
    (parent / "below" / "keys").mkdir(mode=0o750)
    for dest in (parent / "below" / "keys", parent / "below" / "new" / "keys"):
        for check_mode in (True, False):
            with pytest.raises(KeysError) as err:
                run({"a": {"content": SECRET}}, str(dest), check_mode=check_mode)
            assert err.value.msg == ("dest_dir %s is under %s, which %s, who could swap it for a directory of their own; "
                                     "use a directory whose parents only root may write to, such as /run/keys"
                                     % (dest, parent, message))
            assert "\n" not in err.value.msg
    assert sorted(str(p.relative_to(parent)) for p in parent.rglob("*")) == ["below", "below/keys"]
    assert os.listdir(str(parent / "below" / "keys")) == []


def test_a_parent_reached_through_a_link_is_checked_too(tmp_path):
    os.chmod(str(tmp_path), 0o755)
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir(mode=0o777)
    os.chmod(str(unsafe), 0o777)
    (unsafe / "keys").mkdir(mode=0o750)
    link = tmp_path / "link"
    link.symlink_to(unsafe)
    with pytest.raises(KeysError) as err:
        run({"a": {"content": SECRET}}, str(link / "keys"))
    assert "is under %s, which is writable by other users (mode 0777)" % unsafe in err.value.msg
    assert os.listdir(str(unsafe / "keys")) == []


def test_a_sticky_root_directory_above_is_fine(d, tmp_path):
    # tmp_path is under /tmp (root, 1777): only an entry's owner may rename it there.
    os.chmod(str(tmp_path), 0o755)
    assert run({"a": {"content": SECRET}}, d)["changed"]
    with open(os.path.join(d, "a")) as f:
        assert f.read() == SECRET
