# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evaluating and building a Nix expression for ansinix.nixos.nix_build."""

from __future__ import annotations

import json
import os
import re
import tempfile

from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, error_summary, build_log_tail

TOPLEVEL = "nixosConfigurations.%s.config.system.build.toplevel"
DEFAULT_GCROOT_DIR = "/nix/var/nix/gcroots/ansinix"
ATTR_RE = re.compile(r'^[A-Za-z0-9_\'"-]+(\.[A-Za-z0-9_\'"-]+)*$')


def nix_string(text):
    """A Nix string literal holding text."""
    return json.dumps(text).replace("${", "\\${")


def attribute(params):
    """The attribute path to build, from attr or nixos_configuration."""
    if params.get("nixos_configuration"):
        if params.get("attr"):
            raise NixError("give either attr or nixos_configuration, not both")
        name = params["nixos_configuration"]
        if not re.match(r"^[A-Za-z0-9_.-]+$", name):
            raise NixError("nixos_configuration %r is not a configuration name: use letters, digits, '_', '-' and '.'" % name)
        return TOPLEVEL % (('"%s"' % name) if "." in name else name)
    attr = params.get("attr") or ""
    if attr and not ATTR_RE.match(attr):
        raise NixError("attr %r is not an attribute path like nixosConfigurations.web1.config.system.build.toplevel" % attr)
    return attr


def default_out_link(params, attr):
    label = params.get("nixos_configuration") or (attr.split(".")[-1] if attr else "") or "result"
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
    return os.path.join(DEFAULT_GCROOT_DIR, label)


def split_flake_ref(flake):
    """'path#attr' -> ('path', 'attr'); a plain reference has no attribute."""
    if "#" in flake:
        ref, attr = flake.split("#", 1)
        return ref, attr
    return flake, ""


def flake_reference(ref):
    """A local directory is given as path:<absolute dir>, which needs no git and copies only it."""
    if ref.startswith(("/", "./", "../")) or ref == ".":
        return "path:" + os.path.abspath(ref)
    return ref


class Builder:
    """Evaluates (always) and builds (unless check mode) one installable."""

    def __init__(self, nix, params):
        self.nix = nix
        self.params = params
        self.args = params.get("args") or {}
        self._tmpdir = None

    def close(self):
        if self._tmpdir:
            self._tmpdir.cleanup()

    # -- classic files -------------------------------------------------------------------------

    def _args_file(self):
        self._tmpdir = self._tmpdir or tempfile.TemporaryDirectory(prefix="ansinix-args-")
        path = os.path.join(self._tmpdir.name, "args.json")
        with open(path, "w") as f:
            json.dump(self.args, f, sort_keys=True)
        return path

    def _instantiate_file(self, attr):
        if self.params.get("override_inputs"):
            raise NixError("override_inputs is for flakes; with file, use nix_path to choose where <nixpkgs> comes from")
        path = os.path.abspath(os.path.expanduser(self.params["file"]))
        if not os.path.exists(path):
            raise NixError("file %s does not exist on %s" % (path, "this host"))
        argv = [path]
        if attr:
            argv += ["-A", attr]
        if self.args:
            # Read from a file outside the store: pure evaluation, and no limit on the size of args.
            argv += ["--arg", "args", "builtins.fromJSON (builtins.readFile %s)" % nix_string(self._args_file())]
        rc, out, err = self.nix.run("nix-instantiate", argv, check=False)
        if rc != 0:
            raise NixError("evaluating %s%s failed: %s" % (path, " -A " + attr if attr else "", error_summary(err)))
        drvs = [line for line in out.split() if line.endswith(".drv")]
        if len(drvs) != 1:
            raise NixError("%s%s evaluates to %d derivations; name one with attr or nixos_configuration" % (path, " -A " + attr if attr else "", len(drvs)))
        return drvs[0]

    # -- flakes --------------------------------------------------------------------------------

    def _flake_drv(self, attr):
        ref, ref_attr = split_flake_ref(self.params["flake"])
        if ref_attr and attr:
            raise NixError("flake %r already names an attribute; drop attr/nixos_configuration or the '#...' part" % self.params["flake"])
        attr = ref_attr or attr
        if not attr:
            raise NixError("flake %r names no attribute: use flake: '<ref>#<attr>', attr, or nixos_configuration" % self.params["flake"])
        ref = flake_reference(ref)
        argv = self.nix.experimental("nix-command", "flakes") + ["eval", "--raw", "--no-write-lock-file"]
        for name, target in sorted((self.params.get("override_inputs") or {}).items()):
            argv += ["--override-input", name, flake_reference(target)]
        if not self.args:
            rc, out, err = self.nix.run("nix", argv + ["%s#%s.drvPath" % (ref, attr)], check=False)
        else:
            head, _sep, rest = attr.partition(".config.")
            # args reach the configuration purely, as a literal in the applied function: an output that is a
            # function is applied to them, a NixOS configuration gets them as the module argument
            # `ansinixArgs` (extendModules).
            apply = (
                "v: let args = builtins.fromJSON %s; applied = if builtins.isFunction v then v args "
                "else if v ? extendModules then v.extendModules { modules = [ { _module.args.ansinixArgs = args; } ]; } "
                "else v; in (applied%s).drvPath"
            ) % (nix_string(json.dumps(self.args, sort_keys=True)), (".config." + rest) if rest else "")
            rc, out, err = self.nix.run("nix", argv + ["%s#%s" % (ref, head), "--apply", apply], check=False)
        if rc != 0:
            raise NixError("evaluating %s#%s failed: %s" % (ref, attr, error_summary(err)))
        return out.strip()

    # -- both ------------------------------------------------------------------------------------

    def evaluate(self):
        """(drv_path, out_path) without building anything."""
        self.nix.version()  # no nix here: say so before anything else
        attr = attribute(self.params)
        drv = self._flake_drv(attr) if self.params.get("flake") else self._instantiate_file(attr)
        _rc, out, _err = self.nix.run("nix-store", ["--query", "--outputs", drv])
        outputs = out.split()
        if not outputs:
            raise NixError("%s has no outputs" % drv)
        return drv, outputs[0], attr

    def build(self, check_mode):
        drv, out_path, attr = self.evaluate()
        result = {
            "drv_path": drv,
            "out_path": out_path,
            "changed": not self.nix.is_valid(out_path),
            "nix_version": self.nix.version(),
        }
        out_link = self.params.get("out_link") or default_out_link(self.params, attr)
        result["out_link"] = out_link
        if check_mode:
            return result
        parent = os.path.dirname(out_link)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755)
        rc, out, err = self.nix.run("nix-store", ["--realise", drv, "--add-root", out_link, "--indirect"] + self.nix.option_args(), check=False)
        if rc != 0:
            summary = error_summary(err)
            raise NixError("building %s failed: %s" % (out_path, summary), log_tail=build_log_tail(err))
        built = [line for line in out.split() if line.startswith("/")]
        if built and os.path.realpath(built[-1]) != out_path and built[-1] != out_link:
            result["out_path"] = os.path.realpath(built[-1])
        return result
