"""Key validation and the atomic write, on a temporary directory of this machine."""
import os
import stat

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.keys import KeysError, apply, check_name, parse_mode, plan


@pytest.mark.parametrize("value,mode", [("0600", 0o600), ("440", 0o440), (0o400, 0o400), ("0000", 0)])
def test_modes(value, mode):
    assert parse_mode("k", value) == mode


@pytest.mark.parametrize("value", ["0999", "rw-------", "06000", "", "0o600"])
def test_bad_modes(value):
    with pytest.raises(KeysError) as err:
        parse_mode("k", value)
    assert "key 'k': permissions" in err.value.msg


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", ".", ".."])
def test_bad_names(name):
    with pytest.raises(KeysError):
        check_name(name)


def test_write_prune_and_idempotence(tmp_path):
    d = str(tmp_path / "keys")
    keys = {"a": {"content": "one", "permissions": "0400"}, "b": {"content": "two"}}
    result = apply(plan(keys, d), prune=True, check_mode=False)
    assert result["changed"] and result["removed"] == []
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(os.path.join(d, "a")).st_mode) == 0o400
    assert open(os.path.join(d, "b")).read() == "two"
    ino = os.stat(os.path.join(d, "a")).st_ino
    assert apply(plan(keys, d), prune=True, check_mode=False)["changed"] is False
    assert os.stat(os.path.join(d, "a")).st_ino == ino
    open(os.path.join(d, "foreign"), "w").close()
    result = apply(plan({"a": keys["a"]}, d), prune=True, check_mode=False)
    assert result["removed"] == [os.path.join(d, "b")]
    assert sorted(os.listdir(d)) == [".ansinix-keys.json", "a", "foreign"]
    assert "one" not in repr(result) and "two" not in repr(result)


def test_check_mode_writes_nothing(tmp_path):
    d = str(tmp_path / "keys")
    result = apply(plan({"a": {"content": "one"}}, d), prune=True, check_mode=True)
    assert result["changed"] and not os.path.exists(d)
