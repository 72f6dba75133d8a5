# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Evaluating and building a Nix expression for ansinix.nixos.nix_build.

One evaluation answers everything (drvPath, outPath, output name) through a small Nix shim that
selects the attribute with messages naming what exists. args reach the expression purely:
- file: the file's function is called with { args = <data>; }, the data read with
  builtins.readFile from a private temporary file (no size limit, no environment variable);
- flake: the data sits in a temporary directory fetched with builtins.fetchTree, locked by the
  NAR hash computed here, which pure evaluation allows on every Nix with flakes. A flake output
  that is a function is applied to it; a NixOS configuration gets it as the module argument
  ansinixArgs (extendModules).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import (
    NIX_ARGUMENT_SPEC, NixError, check_store_path, error_block, error_summary, flat_directory_nar_hash, host_name,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.nix_source import source_warning

# The module's options: its argument_spec and the rules between them.
SPEC = dict(
    argument_spec=dict(
        flake=dict(type="str"),
        file=dict(type="path"),
        attr=dict(type="str"),
        nixos_configuration=dict(type="str"),
        nixos_configurations=dict(type="list", elements="str"),
        eval_chunk=dict(type="int", default=0),
        args=dict(type="dict", default={}),
        out_link=dict(type="path"),
        override_inputs=dict(type="dict", default={}),
        lock=dict(type="str", choices=["missing", "update"]),
        **NIX_ARGUMENT_SPEC
    ),
    mutually_exclusive=[("flake", "file"), ("attr", "nixos_configuration", "nixos_configurations"),
                        ("nixos_configuration", "nixos_configurations"), ("out_link", "nixos_configurations"),
                        ("lock", "file"), ("lock", "attr"), ("lock", "nixos_configuration"), ("lock", "nixos_configurations"),
                        ("lock", "out_link"), ("lock", "args"), ("lock", "override_inputs")],
    required_one_of=[("flake", "file")],
)
TOPLEVEL = ("config", "system", "build", "toplevel")
GCROOTS_DIR = "/nix/var/nix/gcroots"
CONFIGURATION_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# An attribute path as -A takes it: names separated by dots, a name with dots in double quotes.
ATTR_RE = re.compile(r'^(?:[A-Za-z0-9_\'-]+|"[^"\\$]+")(?:\.(?:[A-Za-z0-9_\'-]+|"[^"\\$]+"))*$')
FLAKE_HINT = "write a directory, path:DIR, git+file:DIR, git+https://HOST/REPO or github:OWNER/REPO, then #ATTRIBUTE"

# Gives a value its args: style "file" calls a file's function like nix-build does (with { args = ...; } when there
# are args); "flake" calls an output that is a function with the data, or extends a NixOS configuration with the
# module argument ansinixArgs.
APPLY = r"""
{ v, at, args, style, what }:
let
  inherit (builtins) concatStringsSep isAttrs isFunction;
  show = p: if p == [ ] then "the top level" else concatStringsSep "." p;
in
if style == "file" then
  (if isFunction v then v (if args == null then { } else { inherit args; })
   else if args == null then v
   else throw "${what} is not a function, so it cannot take args: start it with { args ? { }, ... }:")
else if isFunction v then v (if args == null then { } else args)
else if args == null then v
else if isAttrs v && v ? extendModules then v.extendModules { modules = [ { _module.args.ansinixArgs = args; } ]; }
else throw ("args were given, but ${show at} is neither a function nor a NixOS configuration "
  + "(it has no extendModules): make it a function of the data, or drop args")
"""

# Selects `head` below `value`, gives it args (APPLY), selects `rest` below that, and returns what building
# needs. Messages name what exists.
SELECT = r"""
{ value, at, head, rest, args, style, what }:
let
  inherit (builtins) attrNames concatStringsSep elemAt foldl' genList hasAttr isAttrs length typeOf;
  show = p: if p == [ ] then "the top level" else concatStringsSep "." p;
  names = v: let n = attrNames v; in
    if length n > 20 then concatStringsSep ", " (genList (elemAt n) 20) + ", ..." else concatStringsSep ", " n;
  step = acc: name:
    if !(isAttrs acc.v) then
      throw "${show acc.at} is a ${typeOf acc.v}, not an attribute set, so it has no attribute '${name}'"
    else if !(hasAttr name acc.v) then
      throw ((if style == "flake" then "${what} does not provide attribute '${show (acc.at ++ [ name ])}'"
              else "attribute '${show (acc.at ++ [ name ])}' not found in ${what}") + " (${show acc.at} has: ${names acc.v})")
    else { v = acc.v.${name}; at = acc.at ++ [ name ]; };
  reached = foldl' step { v = value; inherit at; } head;
  v = reached.v;
  applied = (@APPLY@) { inherit v args style what; at = reached.at; };
  found = foldl' step { v = applied; at = reached.at; } rest;
  d = found.v;
in
if isAttrs d && (d.type or null) == "derivation" then
  # Not outPath: toJSON would print a set with outPath as that string alone.
  { drv_path = d.drvPath; out_path = d.outPath; output_name = d.outputName or "out"; }
else
  throw "${show found.at} is a ${typeOf d}, not a derivation: name one to build, such as nixosConfigurations.NAME.config.system.build.toplevel"
""".replace("@APPLY@", APPLY)


def nix_string(text):
    """A Nix string literal holding text."""
    return json.dumps(text).replace("${", "\\${")


def nix_list(items):
    return "[ %s ]" % " ".join(nix_string(i) for i in items)


def attr_components(attr):
    """'a."b.c".d' -> ['a', 'b.c', 'd']; NixError for anything -A would not take."""
    if not attr:
        return []
    if not ATTR_RE.match(attr):
        raise NixError("attr %r is not an attribute path: write names separated by dots, a name holding a dot in "
                       "double quotes, e.g. nixosConfigurations.web1.config.system.build.toplevel" % attr)
    return [part.strip('"') for part in re.findall(r'"[^"]+"|[^.]+', attr)]


def attr_text(components):
    return ".".join(('"%s"' % c) if not re.match(r"^[A-Za-z0-9_'-]+$", c) else c for c in components)


def attribute(params, flake_attr=""):
    """The attribute path to build (a string as -A takes it), from attr, nixos_configuration or FLAKE#ATTR."""
    given = [name for name, value in (("attr", params.get("attr")), ("nixos_configuration", params.get("nixos_configuration")),
                                      ("flake '#ATTRIBUTE'", flake_attr)) if value]
    if len(given) > 1:
        raise NixError("give only one of attr, nixos_configuration and a flake's #ATTRIBUTE (got %s)" % " and ".join(given))
    if params.get("nixos_configuration"):
        name = params["nixos_configuration"]
        if not CONFIGURATION_NAME_RE.match(name):
            raise NixError("nixos_configuration %r is not a configuration name: use letters, digits, '_', '-' and '.'" % name)
        return attr_text(("nixosConfigurations", name) + TOPLEVEL)
    attr = params.get("attr") or flake_attr or ""
    attr_components(attr)
    return attr


def root_label(params, attr):
    """The name of the default GC root: the configuration's name, else the attribute, else 'result'."""
    parts = attr_components(attr)
    if params.get("nixos_configuration"):
        label = params["nixos_configuration"]
    elif len(parts) == 6 and parts[0] == "nixosConfigurations" and tuple(parts[2:]) == TOPLEVEL:
        label = parts[1]
    else:
        label = ".".join(parts) or "result"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label).lstrip(".") or "result"


def default_gcroot_dir(uid=None, environ=None, writable=None):
    """Where default roots go: Nix's own gcroots when this user may write there (root, single-user
    installs), else the user's state directory (Nix registers the root indirectly)."""
    uid = os.geteuid() if uid is None else uid
    environ = os.environ if environ is None else environ
    writable = writable or (lambda path: os.access(path, os.W_OK))
    ours = os.path.join(GCROOTS_DIR, "ansinix")
    if uid == 0 or writable(ours if os.path.isdir(ours) else GCROOTS_DIR):
        return ours
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "ansinix", "gcroots")


def source_label(params):
    """The directory of a source's default roots: its last two path components (or the flake reference) and a
    hash of where it is, so a configuration `web` of two projects (or two checkouts) on one machine gets two roots
    instead of re-pointing one root back and forth."""
    if params.get("flake"):
        ref = split_flake_ref(params["flake"])[0]
        where = os.path.abspath(os.path.expanduser(ref)) if is_local_ref(ref) else ref
    elif params.get("file"):
        where = os.path.dirname(os.path.abspath(os.path.expanduser(params["file"])))
    else:
        return ""
    name = "-".join(part for part in re.split(r"[/:]+", where)[-2:] if part)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".-")[:48] or "source"
    return "%s-%s" % (name, hashlib.sha256(where.encode("utf-8")).hexdigest()[:8])


def default_out_link(params, attr, uid=None, environ=None):
    return os.path.join(default_gcroot_dir(uid, environ), source_label(params), root_label(params, attr))


def current_root(out_link):
    """The store path out_link points to now (None without one); NixError when something else is in its place."""
    if not os.path.lexists(out_link):
        return None
    if not os.path.islink(out_link):
        raise NixError("out_link %s exists and is no symlink: remove it or choose another out_link" % out_link)
    return os.path.realpath(out_link)


def make_parent(out_link):
    parent = os.path.dirname(out_link)
    try:
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755)
    except OSError as exc:
        raise NixError("cannot create %s for out_link: %s; choose an out_link this user may write" % (parent, exc.strerror)) from None


def split_flake_ref(flake):
    """'path#attr' -> ('path', 'attr'); a plain reference has no attribute."""
    ref, _sep, attr = flake.partition("#")
    return ref, attr


def is_local_ref(ref):
    return ref.startswith(("/", "./", "../", "~")) or ref in (".", "..")


def flake_reference(ref):
    """A local directory is given as path:<absolute dir>, which needs no git and copies only it."""
    if is_local_ref(ref):
        return "path:" + os.path.abspath(os.path.expanduser(ref))
    return ref


def check_local_flake(ref, what="flake"):
    """A local flake must be a directory with flake.nix on this host; NixError says which part is missing."""
    directory = None
    if is_local_ref(ref):
        directory = os.path.abspath(os.path.expanduser(ref))
    elif ref.startswith("path:"):
        directory = ref[len("path:"):].split("?", 1)[0]
    if directory is None or not directory.startswith("/"):
        return
    if not os.path.isdir(directory):
        raise NixError("%s directory %s does not exist on %s: give a path on the host the task runs on "
                       "(with delegate_to: localhost, the controller)" % (what, directory, host_name()))
    if not os.path.isfile(os.path.join(directory, "flake.nix")):
        raise NixError("%s directory %s has no flake.nix: point at the directory that holds it, or use file "
                       "for a classic Nix file" % (what, directory))


def flake_parts(attr):
    """(installable, head, rest) of a flake attribute: Nix resolves the first name (searching
    packages.SYSTEM and legacyPackages.SYSTEM as it does), args go where `config` starts."""
    parts = attr_components(attr)
    cut = next((i for i, part in enumerate(parts) if i and part == "config"), len(parts))
    return parts[0], parts[1:cut], parts[cut:]


def select(value, at, head, rest, args, style, what, function=None):
    """The expression that applies SELECT (or function, a name bound to it)."""
    return "(%s) { value = (%s); at = %s; head = %s; rest = %s; args = %s; style = %s; what = %s; }" % (
        function or SELECT, value, nix_list(at), nix_list(head), nix_list(rest), args, nix_string(style), nix_string(what))


def args_from_file(path):
    return "builtins.fromJSON (builtins.readFile %s)" % nix_string(path)


def args_from_locked_directory(directory, nar_hash):
    """Pure evaluation reads a directory fetched by fetchTree when its NAR hash locks it."""
    return ('builtins.fromJSON (builtins.readFile "${builtins.fetchTree { type = "path"; path = %s; narHash = %s; }}/args.json")'
            % (nix_string(directory), nix_string(nar_hash)))


class Builder:
    """Evaluates (always) and builds (unless check mode) one derivation."""

    def __init__(self, nix, params):
        self.nix = nix
        self.params = params
        self.args = params.get("args") or {}
        self._tmpdir = None
        self.warnings = []

    def close(self):
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _write_args(self):
        """args.json in a private temporary directory; returns (directory, its NAR hash)."""
        data = json.dumps(self.args, sort_keys=True).encode()
        try:
            self._tmpdir = self._tmpdir or tempfile.mkdtemp(prefix="ansinix-args-")
            with open(os.path.join(self._tmpdir, "args.json"), "wb") as f:
                f.write(data)
        except OSError as exc:
            raise NixError("cannot write args to a temporary file: %s; set TMPDIR to a writable directory" % exc) from None
        return self._tmpdir, flat_directory_nar_hash({"args.json": data})

    # -- classic files -----------------------------------------------------------------------------

    def _evaluate_file(self, check_mode, attr, expression):
        """The JSON of expression(value, args, what), the file imported as value and its args (or null)."""
        if self.params.get("override_inputs"):
            raise NixError("override_inputs is for flakes; with file, use nix_path to choose where <nixpkgs> comes from")
        path = os.path.abspath(os.path.expanduser(self.params["file"]))
        if not os.path.exists(path):
            raise NixError("file %s does not exist on %s: give a path on the host the task runs on "
                           "(with delegate_to: localhost, the controller)" % (path, host_name()))
        self._check_source(os.path.dirname(path), "the directory of file")
        args = args_from_file(os.path.join(self._write_args()[0], "args.json")) if self.args else "null"
        expr = expression("import %s" % nix_string(path), args, path)
        # --eval is read-only: check mode writes not even a .drv; a build needs the .drv in the store.
        argv = ["--eval", "--strict", "--json", "--expr", expr] + ([] if check_mode else ["--read-write-mode"])
        rc, out, err = self.nix.run("nix-instantiate", argv, check=False)
        if rc != 0:
            raise NixError("evaluating %s%s failed: %s" % (path, " -A " + attr if attr else "", error_summary(err)),
                           nix_error=error_block(err))
        return json.loads(out)

    # -- flakes ------------------------------------------------------------------------------------

    def _evaluate_flake(self, check_mode, attr, expression):
        """The JSON of expression(value, installable, args, what), value being the flake's output that attr starts with."""
        ref = split_flake_ref(self.params["flake"])[0]
        if not ref:
            raise NixError("flake %r has no reference before '#': %s" % (self.params["flake"], FLAKE_HINT))
        if not attr:
            raise NixError("flake %r names no attribute: use flake: '<ref>#<attr>', attr, or nixos_configuration" % self.params["flake"])
        check_local_flake(ref)
        ref = flake_reference(ref)
        if ref.startswith(("path:", "git+file:")):
            # A path: flake is copied whole; a git one with its tracked files only.
            self._check_source(ref.split(":", 1)[1].split("?", 1)[0], "flake directory", git=ref.startswith("git+"))
        argv = self.nix.experimental("nix-command", "flakes") + ["eval", "--json", "--no-write-lock-file"]
        if check_mode:
            argv.append("--read-only")
        for name, target in sorted((self.params.get("override_inputs") or {}).items()):
            check_local_flake(str(target), what="override_inputs.%s" % name)
            argv += ["--override-input", str(name), flake_reference(str(target))]
        installable = flake_parts(attr)[0]
        args = args_from_locked_directory(*self._write_args()) if self.args else "null"
        apply = "v: " + expression("v", installable, args, "flake '%s'" % ref)
        rc, out, err = self.nix.run("nix", argv + ["%s#%s" % (ref, attr_text([installable])), "--apply", apply], check=False)
        if rc != 0:
            summary = error_summary(err)
            hint = ("; " + FLAKE_HINT) if re.search(r"not a valid URL|unsupported|input '.*' is unsupported|cannot find flake", summary) else ""
            block = error_block(err)
            source = self._flake_source(ref, argv)
            if source:
                # Positions in the store copy of a local flake: show them in the directory the user edits.
                store_copy, directory = source
                summary = summary.replace(store_copy, directory)
                block = [line.replace(store_copy, directory) for line in block]
            raise NixError("evaluating %s#%s failed: %s%s" % (ref, attr, summary, hint), nix_error=block)
        return json.loads(out)

    def _check_source(self, directory, what, git=False):
        message = source_warning(directory, what, git) if os.path.isdir(directory) else None
        if message and message not in self.warnings:
            self.warnings.append(message)

    def _flake_source(self, ref, argv):
        """(store copy, directory) of a local path: flake, or None."""
        if not ref.startswith("path:"):
            return None
        features = argv[:2]
        rc, out, _err = self.nix.run("nix", features + ["flake", "metadata", "--json", "--no-write-lock-file", ref], check=False)
        if rc != 0:
            return None
        store_copy = json.loads(out).get("path")
        return (store_copy, ref[len("path:"):].split("?", 1)[0]) if store_copy else None

    # -- both ----------------------------------------------------------------------------------------

    def evaluate(self, check_mode=False):
        """({'drv_path', 'out_path', 'output_name'}, attribute), without building anything."""
        self.nix.version()  # no nix here: say so before anything else
        flake_attr = split_flake_ref(self.params["flake"])[1] if self.params.get("flake") else ""
        attr = attribute(self.params, flake_attr)
        if self.params.get("flake"):
            # flake_parts only once _evaluate_flake has checked that there is an attribute.
            evaluated = self._evaluate_flake(check_mode, attr, lambda value, installable, args, what: select(
                value, [installable], flake_parts(attr)[1], flake_parts(attr)[2], args, "flake", what))
        else:
            parts = attr_components(attr)
            evaluated = self._evaluate_file(check_mode, attr, lambda value, args, what: select(
                value, [], [], parts, args, "file", what))
        check_store_path(evaluated["out_path"], "the evaluated outPath")
        return evaluated, attr

    def build(self, check_mode):
        evaluated, attr = self.evaluate(check_mode)
        out_path, drv = evaluated["out_path"], evaluated["drv_path"]
        out_link = self.params.get("out_link") or default_out_link(self.params, attr)
        already_valid = self.nix.is_valid(out_path)
        root_before = current_root(out_link)
        result = {
            "changed": not already_valid or root_before != out_path,
            "out_path": out_path,
            "drv_path": drv,
            "out_link": out_link,
            "already_valid": already_valid,
            "nix_version": self.nix.version(),
        }
        if check_mode:
            return result
        make_parent(out_link)
        self.nix.realise("%s!%s" % (drv, evaluated["output_name"]), out_link=out_link, what=out_path)
        if not self.nix.is_valid(out_path):
            raise NixError("building %s succeeded, but the path is not valid in the store afterwards" % out_path)
        # Not checked: where out_link points now. Another run building the same configuration on this machine at the
        # same moment may have pointed it at its own result since; the last one keeps the link, both builds are valid.
        return result
