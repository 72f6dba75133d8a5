# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Writing secrets (keys) on a host: validation, atomic writes that never widen access, pruning.

Nothing here returns, logs or stores a key's content, nor a hash of it (a hash of a short password is
as good as the password): results carry names, paths, owners and modes.
"""

from __future__ import annotations

import grp
import hmac
import json
import os
import pwd
import re
import stat
import tempfile

DEFAULT_DEST_DIR = "/run/keys"
NIX_STORE = "/nix/store"
# Lists, per directory, the keys this module wrote there: prune removes only those.
MANIFEST = ".ansinix-keys.json"
TEMP_PREFIX = ".ansinix-key-"
# \Z, not $: `$` also matches before a final newline ("db\n" would become a file name).
NAME_RE = re.compile(r"^[A-Za-z0-9_@+=-][A-Za-z0-9_.@+=-]*\Z")
MODE_RE = re.compile(r"^0?[0-7]{3}\Z")
KEY_OPTIONS = ("content", "src", "command")
SETTINGS = ("user", "group", "permissions", "dest_dir", "defer_owner")


class KeysError(Exception):
    """A problem with the keys as declared; the message names the key and the fix."""

    def __init__(self, msg):
        super().__init__(msg)
        self.msg = msg


def parse_mode(name, value):
    """'0640' or 0o640 -> 0o640; anything else is an error naming the key."""
    if isinstance(value, bool):
        value = str(value)
    text = ("%o" % value) if isinstance(value, int) else str(value).strip()
    if not MODE_RE.match(text):
        raise KeysError("key %r: permissions %r is not an octal mode like '0600' or '0440' (quote it in YAML)"
                        % (name, value))
    return int(text, 8)


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise KeysError("key name %r: use letters, digits and . _ - @ + = (no '/'; not starting with '.'), "
                        "it becomes a file name" % (name,))


def _account_name(name, field, value):
    if not isinstance(value, str) or not value or ":" in value or "/" in value:
        raise KeysError("key %r: %s must be a user or group name, got %r" % (name, field, value))
    return value


def check_dest_dir(name, dest_dir):
    """An absolute directory outside the Nix store (which every user can read); returns it normalised."""
    if not isinstance(dest_dir, str) or not os.path.isabs(dest_dir):
        raise KeysError("key %r: dest_dir %r must be an absolute path" % (name, dest_dir))
    dest_dir = os.path.normpath(dest_dir)
    real = os.path.realpath(dest_dir)
    for path in (dest_dir, real):
        if path == NIX_STORE or path.startswith(NIX_STORE + "/"):
            raise KeysError("key %r: dest_dir %s is in the Nix store, which every user can read; use a directory "
                            "such as /run/keys" % (name, dest_dir))
    return dest_dir


def resolve_owner(user, group):
    """(uid, gid, group name); uid or gid is None where the user or group does not exist (yet).

    Without a group the key gets the user's primary group, whatever its name.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        entry = None
    uid = entry.pw_uid if entry else None
    if group is None:
        if entry is None:
            return None, None, None
        return uid, entry.pw_gid, _name(grp.getgrgid, entry.pw_gid)
    try:
        return uid, grp.getgrnam(group).gr_gid, group
    except KeyError:
        return uid, None, group


def _missing_owner_message(name, user, group, uid, gid):
    missing = []
    if uid is None:
        missing.append("user %r" % user)
    if gid is None and group is not None:
        missing.append("group %r" % group)
    return ("key %r: %s not exist on this host. Create %s first, or set defer_owner: true to write the key root-owned "
            "now and hand it to its owner on a run after the new system has created it (the deploy role runs "
            "nixos_keys again after the switch)"
            % (name, " and ".join(missing) + (" do" if len(missing) > 1 else " does"), "them" if len(missing) > 1 else "it"))


def plan(keys, default_dest_dir=DEFAULT_DEST_DIR):
    """Validate every key before anything is written; returns a list of dicts, one per key (sorted by name)."""
    planned = []
    for name in sorted(keys):
        spec = keys[name]
        check_name(name)
        user = _account_name(name, "user", spec.get("user") or "root")
        group = spec.get("group")
        if group is not None:
            group = _account_name(name, "group", group)
        mode = parse_mode(name, spec.get("permissions") if spec.get("permissions") is not None else "0600")
        dest_dir = check_dest_dir(name, spec.get("dest_dir") or default_dest_dir)
        defer = spec.get("defer_owner", False)
        if not isinstance(defer, bool):
            raise KeysError("key %r: defer_owner must be true or false, got %r" % (name, defer))
        content = spec.get("content")
        if not isinstance(content, str):
            raise KeysError("key %r: its content is missing or not text" % name)
        uid, gid, group_name = resolve_owner(user, group)
        deferred = uid is None or gid is None
        if deferred and not defer:
            raise KeysError(_missing_owner_message(name, user, group, uid, gid))
        planned.append({
            "name": name, "dest_dir": dest_dir, "path": os.path.join(dest_dir, name),
            "user": "root" if deferred else user, "group": "root" if deferred else group_name,
            "uid": 0 if deferred else uid, "gid": 0 if deferred else gid, "mode": mode, "deferred": deferred,
            "wanted_owner": user + (":" + group_name if group_name else ""),
            "content": content.encode("utf-8"),
        })
    check_privileges(planned)
    return planned


def check_privileges(planned):
    """Giving files to other users needs root: say so before anything is written, not with EPERM half-way."""
    euid, egid = os.geteuid(), os.getegid()
    if euid == 0:
        return
    for key in planned:
        if key["uid"] != euid or key["gid"] not in (egid,) + tuple(os.getgroups()):
            raise KeysError("key %r: giving it to %s:%s needs root; run the task with become: true"
                            % (key["name"], key["user"], key["group"]))


def check_dest_dir_safe(path):
    """Anyone who may write in the key directory could replace keys: only its owner (us, or root) may."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise KeysError("dest_dir %s exists but is not a directory" % path)
    if st.st_uid not in (0, os.geteuid()) or stat.S_IMODE(st.st_mode) & 0o022:
        raise KeysError("dest_dir %s is writable by others (owner uid %d, mode %04o), who could replace keys; "
                        "use a directory only root can write to" % (path, st.st_uid, stat.S_IMODE(st.st_mode)))


def _ancestors(path):
    """'/a/b/c' -> ['/', '/a', '/a/b']."""
    parts = path.strip("/").split("/")[:-1] if path.strip("/") else []
    return ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def check_dest_dir_parents(path):
    """Whoever may rename an entry in any directory above dest_dir could swap dest_dir itself (a user owning
    /run/foo swaps /run/foo/keys). Every existing parent, as written and after symlinks, must be owned by
    root (or us) and writable by nobody else; a sticky directory such as /tmp counts as safe, since there
    only an entry's owner may rename it."""
    path = os.path.normpath(path)
    real = os.path.realpath(path)
    for parent in _ancestors(path) + [p for p in _ancestors(real) if p not in _ancestors(path)]:
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in (0, os.geteuid()):
            who = "is owned by uid %d (mode %04o)" % (st.st_uid, mode)
        elif stat.S_ISDIR(st.st_mode) and mode & 0o022 and not (mode & stat.S_ISVTX and st.st_uid == 0):
            who = "is writable by other users (mode %04o)" % mode
        else:
            continue
        raise KeysError("dest_dir %s is under %s, which %s, who could swap it for a directory of their own; use a "
                        "directory whose parents only root may write to, such as /run/keys" % (path, parent, who))


def is_up_to_date(key):
    """True when the key file is a regular file with the wanted content, owner and mode."""
    try:
        fd = os.open(key["path"], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, OSError):
        return False
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return False
        if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (key["uid"], key["gid"], key["mode"]):
            return False
        if st.st_size != len(key["content"]):
            return False
        return hmac.compare_digest(f.read(), key["content"])


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
    if os.path.lexists(path):
        check_dest_dir_safe(path)
        return False
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    check_dest_dir_parents(path)  # again: parents made just now, in a sticky directory someone else may have made first
    os.mkdir(path, 0o700)
    try:
        gid = grp.getgrnam("keys").gr_gid
    except KeyError:
        gid = os.getegid()
    os.chown(path, os.geteuid(), gid)
    os.chmod(path, 0o750)
    return True


def write_atomically(key):
    """Temporary file readable by root alone, filled, given owner and mode, then renamed over the key.

    The mode only narrows until the final chmod: 0600 root (mkstemp), 0000, then the owner and then the
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
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _sync_dir(path):
    """Make renames and removals durable where dest_dir is on a disk (a no-op cost on tmpfs)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(dest_dir):
    """Names this module wrote into dest_dir. A manifest that is not ours (owner, link) counts as empty."""
    try:
        fd = os.open(os.path.join(dest_dir, MANIFEST), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return set()
    with os.fdopen(fd) as f:
        if os.fstat(f.fileno()).st_uid not in (0, os.geteuid()):
            return set()
        try:
            names = json.load(f).get("keys", [])
        except (ValueError, AttributeError):
            return set()
    # Only plain names: a manifest must never lead prune out of its directory.
    return set(n for n in names if isinstance(n, str) and NAME_RE.match(n))


def write_manifest(dest_dir, names):
    path = os.path.join(dest_dir, MANIFEST)
    if not names:
        if os.path.lexists(path):
            os.unlink(path)
        return
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=dest_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"written_by": "ansinix.nixos.nixos_keys", "keys": sorted(names)}, f)
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _describe(meta):
    if not meta:
        return "absent"
    return "%s:%s %s" % (meta["owner"], meta["group"], meta["mode"])


def apply(planned, prune, check_mode, prune_dirs=()):
    """Write what differs, prune what this module wrote earlier and no longer declares. Returns the result.

    prune looks at the directories of the declared keys and at prune_dirs (the task's dest_dir when it
    declares no key at all, to remove every key written there).
    """
    by_dir = {}
    for key in planned:
        by_dir.setdefault(key["dest_dir"], []).append(key)
    dirs = set(by_dir) | (set(os.path.normpath(d) for d in prune_dirs) if prune else set())
    for dest_dir in dirs:
        check_dest_dir_parents(dest_dir)
        if os.path.lexists(dest_dir):
            check_dest_dir_safe(dest_dir)
    state = {"changed": False, "keys": [], "removed": [], "before": [], "after": []}
    for dest_dir in sorted(dirs):
        _apply_dir(dest_dir, by_dir.get(dest_dir, []), prune, check_mode, state)
    return {
        "changed": state["changed"], "keys": state["keys"], "removed": state["removed"],
        "diff": {"before": "".join(line + "\n" for line in state["before"]),
                 "after": "".join(line + "\n" for line in state["after"])},
    }


def _apply_dir(dest_dir, keys, prune, check_mode, state):
    exists = os.path.isdir(dest_dir)
    if keys and not exists:
        state["changed"] = True
        state["before"].append("%s/: absent" % dest_dir)
        state["after"].append("%s/: directory" % dest_dir)
        if not check_mode:
            ensure_dest_dir(dest_dir)
    old = read_manifest(dest_dir) if os.path.isdir(dest_dir) else set()
    declared = set(k["name"] for k in keys)
    if not check_mode and not declared <= old:
        # Recorded before writing: a failure half-way must not leave keys that a later prune forgets.
        write_manifest(dest_dir, old | declared)
    for key in keys:
        up_to_date = is_up_to_date(key)
        before = current_metadata(key["path"])
        if not up_to_date and not check_mode:
            write_atomically(key)
        state["changed"] |= not up_to_date
        after = {"owner": key["user"], "group": key["group"], "mode": "%04o" % key["mode"]}
        state["before"].append("%s: %s" % (key["path"], _describe(before)))
        state["after"].append("%s: %s%s" % (key["path"], _describe(after),
                                            "" if up_to_date else " (written)" if before is None else " (rewritten)"))
        state["keys"].append(dict(name=key["name"], path=key["path"], changed=not up_to_date,
                                  deferred=key["deferred"], wanted_owner=key["wanted_owner"], **after))
    kept = old | declared
    if prune:
        for name in sorted(old - declared):
            path = os.path.join(dest_dir, name)
            kept.discard(name)
            try:
                is_file = stat.S_ISREG(os.lstat(path).st_mode)
            except FileNotFoundError:
                is_file = False
            if not is_file:
                continue  # gone already, or no longer a file of ours: forget it, touch nothing
            state["before"].append("%s: %s" % (path, _describe(current_metadata(path))))
            state["after"].append("%s: absent (pruned)" % path)
            if not check_mode:
                os.unlink(path)
            state["removed"].append(path)
            state["changed"] = True
    if not check_mode and os.path.isdir(dest_dir):
        if kept != read_manifest(dest_dir):
            write_manifest(dest_dir, kept)
        _sync_dir(dest_dir)
