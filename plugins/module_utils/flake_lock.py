# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""A flake's lock, resolved on one host and brought to the controller (nix_build's lock, the filter flake_lock).

The host's Nix computes the lock it would write (`nix flake metadata --json --no-write-lock-file`, whose `locks`
is that lock) without writing anything: the controller, which may have no Nix, writes flake.lock beside the
user's flake.nix, and every host builds from that one lock. What the host returns is data from another machine,
so the controller checks it (check_lock) before it becomes a file.
"""

from __future__ import annotations

import json
import os

from ansible_collections.ansinix.nixos.plugins.module_utils.build import check_local_flake, is_local_ref, split_flake_ref
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, error_block, error_summary, host_name

# A lock of a few hundred inputs is some hundred KiB; more is not a lock.
MAX_LOCK_BYTES = 1024 * 1024
# The lock file versions Nix 2.4 and newer write.
LOCK_VERSIONS = (5, 6, 7)
LOCK_MODES = ("missing", "update")


def lock_text(lock):
    """The bytes Nix writes for a lock (nlohmann's dump(2): sorted keys, two spaces, a final newline)."""
    return json.dumps(lock, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _scalars(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (str, int, bool)) for k, v in value.items())


def _check_node(name, node):
    """NixError unless node is a lock node: inputs, and for every node but the root a locked reference with a NAR hash."""
    if not isinstance(node, dict):
        raise NixError("node %r is a %s, not an object" % (name, type(node).__name__))
    inputs = node.get("inputs", {})
    if not isinstance(inputs, dict) or not all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(p, str) for p in v)) for v in inputs.values()):
        raise NixError("the inputs of node %r are not names of nodes or paths of inputs" % name)
    if "locked" in node or "original" in node:
        if not (_scalars(node.get("locked")) and _scalars(node.get("original"))):
            raise NixError("node %r has no locked and original reference" % name)
        locked = node["locked"]
        # A relative path input (newer Nix) is part of its parent's tree, locked with it.
        relative = locked.get("type") == "path" and not str(locked.get("path", "/")).startswith("/")
        if not relative and not str(locked.get("narHash", "")).startswith("sha256-"):
            raise NixError("input %r is not locked (no narHash): give it a reference Nix can pin (a git or github URL, a "
                           "path), not a dirty git tree" % name)


def check_lock(text, what="the lock"):
    """text if it is a flake.lock (JSON, at most MAX_LOCK_BYTES, Nix's shape), else NixError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise NixError("%s is empty or not text: run the lock again" % what)
    if len(text.encode("utf-8")) > MAX_LOCK_BYTES:
        raise NixError("%s is larger than %d bytes: that is no flake.lock" % (what, MAX_LOCK_BYTES))
    try:
        lock = json.loads(text)
    except ValueError as exc:
        raise NixError("%s is not JSON (%s): that is no flake.lock" % (what, exc)) from None
    try:
        if not isinstance(lock, dict) or lock.get("version") not in LOCK_VERSIONS:
            raise NixError("it has no lock file version Nix writes (%s)" % ", ".join(map(str, LOCK_VERSIONS)))
        nodes, root = lock.get("nodes"), lock.get("root")
        if not isinstance(nodes, dict) or not isinstance(root, str) or root not in nodes:
            raise NixError("it has no nodes with its root node")
        for name, node in nodes.items():
            _check_node(name, node)
        for name, node in nodes.items():
            for target in node.get("inputs", {}).values():
                if isinstance(target, str) and target not in nodes:
                    raise NixError("node %r names node %r, which is not in the lock" % (name, target))
    except NixError as exc:
        raise NixError("%s is no flake.lock: %s" % (what, exc.msg)) from None
    return text


def read_lock(directory):
    """The flake.lock of a flake directory as text, or None when it has none."""
    path = os.path.join(directory, "flake.lock")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(MAX_LOCK_BYTES + 1)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise NixError("cannot read %s: %s; make it a readable flake.lock, or delete it to lock afresh" % (path, exc)) from None


def resolved_lock(old_text, new_lock):
    """The lock to write: old_text itself when it holds the same lock (its bytes stay as they are, whatever Nix wrote
    them), else Nix's text of new_lock."""
    if old_text is not None:
        try:
            if json.loads(old_text) == new_lock:
                return old_text
        except ValueError:
            pass
    return lock_text(new_lock)


def lock_flake(nix, directory, mode, check=check_lock):
    """{'lock': text, 'lock_changed': bool} of the flake in directory: the lock Nix would write, with the inputs
    flake.lock lacks locked (mode missing, as `nix flake lock`) or every input at its newest (update, as
    `nix flake update`). Writes nothing."""
    if mode not in LOCK_MODES:
        raise NixError("lock is %r: use missing (lock what flake.lock lacks) or update (every input to its newest)" % (mode,))
    ref = "path:" + directory
    argv = nix.experimental("nix-command", "flakes") + ["flake", "metadata", "--json"]
    old_text = read_lock(directory)
    if mode == "missing" and old_text is not None:
        # A lock Nix finds complete stays byte for byte, whatever Nix wrote it (Nix itself would not rewrite it).
        # Alone: Nix 2.8 ignores --no-update-lock-file next to --no-write-lock-file.
        if nix.run("nix", argv + ["--no-update-lock-file", ref], check=False)[0] == 0:
            return {"lock": check(old_text, "the lock of %s" % ref), "lock_changed": False}
    argv.append("--no-write-lock-file")
    if mode == "update":
        argv.append("--recreate-lock-file")
    rc, out, err = nix.run("nix", argv + [ref], check=False)
    if rc != 0:
        raise NixError("locking the inputs of %s failed: %s" % (ref, error_summary(err) or "nix exited with %d" % rc),
                       nix_error=error_block(err))
    try:
        new_lock = json.loads(out)["locks"]
    except (ValueError, KeyError, TypeError):
        raise NixError("nix flake metadata printed no lock for %s: this Nix is too old to lock a flake this way; "
                       "use Nix 2.4 or newer" % ref) from None
    text = check(resolved_lock(old_text, new_lock), "the lock of %s" % ref)
    return {"lock": text, "lock_changed": text != old_text}


def flake_directory(flake):
    """The directory of a local flake given as DIR or path:DIR, or NixError: a remote flake's lock is its repository's."""
    ref, attr = split_flake_ref(flake)
    if attr:
        raise NixError("flake %r names an attribute: with lock give the flake's directory alone" % flake)
    if not (is_local_ref(ref) or ref.startswith("path:/")):
        raise NixError("lock needs a flake directory on %s, got %r: a remote flake is locked in its own repository" % (host_name(), ref))
    check_local_flake(ref)
    return os.path.abspath(os.path.expanduser(ref[len("path:"):].split("?", 1)[0] if ref.startswith("path:") else ref))


def lock(nix, params):
    """nix_build's result with lock: the lock, and whether it differs from the flake's flake.lock; nothing written."""
    directory = flake_directory(params["flake"])
    result = lock_flake(nix, directory, params["lock"])
    result.update(changed=False, nix_version=nix.version())
    return result
