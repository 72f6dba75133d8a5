# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing secrets (keys) on a host: validation, atomic writes that never widen access, pruning.

Nothing here returns, logs or stores a key's content: results carry names, paths, owners and modes.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import stat
import tempfile

DEFAULT_DEST_DIR = "/run/keys"
MANIFEST = ".ansinix-keys.json"
TEMP_PREFIX = ".ansinix-key-"
NAME_RE = re.compile(r"^[A-Za-z0-9_@+=-][A-Za-z0-9_.@+=-]*$")
MODE_RE = re.compile(r"^0?[0-7]{3}$")
KEY_OPTIONS = ("content", "src", "command")


class KeysError(Exception):
    """A problem with the keys as declared; the message names the key and the fix."""

    def __init__(self, msg):
        super().__init__(msg)
        self.msg = msg


def parse_mode(name, value):
    """'0640' or 0o640 -> 0o640; anything else is an error naming the key."""
    text = ("%o" % value) if isinstance(value, int) else str(value).strip()
    if not MODE_RE.match(text):
        raise KeysError("key %r: permissions %r is not an octal mode like '0600' or '0440'" % (name, value))
    return int(text, 8)


def check_name(name):
    if not NAME_RE.match(name or "") or name in (".", ".."):
        raise KeysError("key name %r: use letters, digits and . _ - @ + = (no '/'; not starting with '.'), "
                        "it becomes a file name" % name)


def resolve_owner(name, user, group):
    """(uid, gid), or None where the user or group does not exist (yet)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        uid = None
    if group is None:
        gid = pwd.getpwnam(user).pw_gid if uid is not None else None
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            gid = None
    return uid, gid


def plan(keys, default_dest_dir=DEFAULT_DEST_DIR):
    """Validate every key before anything is written; returns a list of dicts, one per key."""
    planned = []
    for name in sorted(keys):
        spec = keys[name]
        check_name(name)
        user = spec.get("user") or "root"
        group = spec.get("group")
        mode = parse_mode(name, spec.get("permissions") if spec.get("permissions") is not None else "0600")
        dest_dir = spec.get("dest_dir") or default_dest_dir
        if not os.path.isabs(dest_dir):
            raise KeysError("key %r: dest_dir %r must be an absolute path" % (name, dest_dir))
        uid, gid = resolve_owner(name, user, group)
        deferred = uid is None or gid is None
        if deferred and not spec.get("defer_owner"):
            missing = ("user %r" % user) if uid is None else ("group %r" % group)
            raise KeysError("key %r: %s does not exist on this host. Create it first, or set defer_owner: true to "
                            "write the key root-owned now and give it to its owner once the new system has made it "
                            "(the deploy role does that after activation)" % (name, missing))
        planned.append({
            "name": name, "dest_dir": os.path.normpath(dest_dir), "path": os.path.join(os.path.normpath(dest_dir), name),
            "user": user if not deferred else "root", "group": (group or user) if not deferred else "root",
            "uid": uid if not deferred else 0, "gid": gid if not deferred else 0, "mode": mode,
            "deferred": deferred, "wanted_owner": "%s:%s" % (user, group or user),
            "content": spec["content"].encode("utf-8"),
        })
    return planned


def is_up_to_date(key):
    try:
        st = os.lstat(key["path"])
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (key["uid"], key["gid"], key["mode"]):
        return False
    with open(key["path"], "rb") as f:
        return f.read() == key["content"]


def current_metadata(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return {"owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid),
            "mode": "%04o" % stat.S_IMODE(st.st_mode)}


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def ensure_dest_dir(path):
    """Create the key directory as NixOps does for /run/keys: root:keys (when that group exists), 0750."""
    if os.path.isdir(path):
        return False
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    os.mkdir(path, 0o700)
    try:
        gid = grp.getgrnam("keys").gr_gid
    except KeyError:
        gid = 0
    os.chown(path, 0, gid)
    os.chmod(path, 0o750)
    return True


def write_atomically(key):
    """Temporary file readable by root alone, filled, given owner and mode, then renamed over the key.

    The mode only ever narrows until the final chmod: 0600 root (mkstemp), 0000, then the owner and the
    final mode. Nobody the final file would not admit can open it at any moment.
    """
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=key["dest_dir"])
    try:
        os.fchmod(fd, 0)
        with os.fdopen(fd, "wb") as f:
            f.write(key["content"])
            f.flush()
            os.fchown(f.fileno(), key["uid"], key["gid"])
            os.fchmod(f.fileno(), key["mode"])
            os.fsync(f.fileno())
        os.rename(tmp, key["path"])
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_manifest(dest_dir):
    try:
        with open(os.path.join(dest_dir, MANIFEST)) as f:
            return set(json.load(f).get("keys", []))
    except (OSError, ValueError):
        return set()


def write_manifest(dest_dir, names):
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=dest_dir)
    with os.fdopen(fd, "w") as f:
        json.dump({"written_by": "ansinix.nixos.nixos_keys", "keys": sorted(names)}, f)
    os.rename(tmp, os.path.join(dest_dir, MANIFEST))


def apply(planned, prune, check_mode):
    """Write what differs, prune what this module wrote earlier and no longer declares. Returns the result."""
    results, removed, diff_before, diff_after = [], [], [], []
    by_dir = {}
    for key in planned:
        by_dir.setdefault(key["dest_dir"], []).append(key)
    changed = False
    for dest_dir, keys in sorted(by_dir.items()):
        if not check_mode:
            changed |= ensure_dest_dir(dest_dir)
        elif not os.path.isdir(dest_dir):
            changed = True
        for key in keys:
            up_to_date = is_up_to_date(key)
            before = current_metadata(key["path"])
            if not up_to_date and not check_mode:
                write_atomically(key)
            changed |= not up_to_date
            after = {"owner": key["user"], "group": key["group"], "mode": "%04o" % key["mode"]}
            diff_before.append("%s: %s" % (key["path"], _describe(before)))
            diff_after.append("%s: %s%s" % (key["path"], _describe(after), "" if up_to_date else " (new content or metadata)"))
            results.append(dict(name=key["name"], path=key["path"], changed=not up_to_date, deferred=key["deferred"],
                                wanted_owner=key["wanted_owner"], **after))
        declared = set(k["name"] for k in keys)
        if prune:
            for name in sorted(read_manifest(dest_dir) - declared):
                path = os.path.join(dest_dir, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    diff_before.append("%s: %s" % (path, _describe(current_metadata(path))))
                    if not check_mode:
                        os.unlink(path)
                    removed.append(path)
                    changed = True
        if not check_mode and os.path.isdir(dest_dir):
            kept = declared if prune else declared | read_manifest(dest_dir)
            if kept != read_manifest(dest_dir):
                write_manifest(dest_dir, kept)
    return {
        "changed": changed, "keys": results, "removed": removed,
        "diff": {"before": "\n".join(diff_before) + "\n", "after": "\n".join(diff_after) + "\n"},
    }


def _describe(meta):
    if not meta:
        return "absent"
    return "%s:%s %s" % (meta["owner"], meta["group"], meta["mode"])
