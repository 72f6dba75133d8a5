# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Building several NixOS configurations in one evaluation and one build (nix_build's nixos_configurations).

One evaluator evaluates imports the configurations share (nixpkgs, common modules) once; one build lets Nix
schedule every system's derivations together (max-jobs). An evaluation error in one configuration aborts the
whole evaluation, and a build that fails names a derivation, not a configuration: only after such a failure are
the configurations of that evaluation or build taken one by one, each for its own error, so the normal case
pays nothing for finding the culprit.
"""

from __future__ import annotations

import os
import tempfile

from ansible_collections.ansinix.nixos.plugins.module_utils.build import (
    APPLY, CONFIGURATION_NAME_RE, GCROOTS_DIR, SELECT, TOPLEVEL, Builder, attr_text, current_root, default_out_link,
    make_parent, nix_string, select, split_flake_ref,
)
from ansible_collections.ansinix.nixos.plugins.module_utils.flake_lock import lock
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError, check_store_path, nix_for, one_line


def configuration_parts(name):
    if not isinstance(name, str) or not CONFIGURATION_NAME_RE.match(name):
        raise NixError("nixos_configurations holds %r, which is not a configuration name: use letters, digits, '_', '-' "
                       "and '.'" % (name,))
    return ["nixosConfigurations", name] + list(TOPLEVEL)


def chunks(items, size):
    """items in lists of size (all in one for size 0 or less)."""
    if size <= 0 or size >= len(items):
        return [list(items)]
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def file_expression(value, args, what, names):
    """A file's value given its args once (a top-level `let pkgs = import <nixpkgs> { }` is then shared), and
    each configuration's derivation selected from it."""
    selects = " ".join("%s = %s;" % (nix_string(name), select("top", [], [], configuration_parts(name), "null", "file", what,
                                                              function="select")) for name in names)
    return "let select = %s; top = (%s) { v = %s; at = [ ]; args = %s; style = \"file\"; what = %s; }; in { %s }" % (
        SELECT, APPLY, value, args, nix_string(what), selects)


def flake_expression(value, installable, args, what, names):
    """Each configuration of the flake's nixosConfigurations, each extended with the same args."""
    selects = " ".join("%s = %s;" % (nix_string(name), select(value, [installable], [name], list(TOPLEVEL), "args", "flake", what,
                                                              function="select")) for name in names)
    return "let select = %s; args = %s; in { %s }" % (SELECT, args, selects)


def checked(evaluated, names):
    """nix's JSON for names: each a derivation with a store path, or NixError."""
    if not isinstance(evaluated, dict) or sorted(evaluated) != sorted(names):
        raise NixError("the evaluation returned something else than the configurations %s" % ", ".join(names))
    for name in names:
        if not isinstance(evaluated[name], dict):
            raise NixError("the evaluation of %s returned no derivation" % name)
        check_store_path(evaluated[name].get("out_path"), "the evaluated outPath of %s" % name)
    return evaluated


def failure_message(errors):
    each = "; ".join("%s: %s" % (name, one_line(msg)) for name, msg in sorted(errors.items()))
    return "%d configuration%s failed: %s" % (len(errors), "" if len(errors) == 1 else "s", each)


class FleetBuilder(Builder):
    """Evaluates and builds the configurations nixos_configurations lists, each with its default root."""

    def _evaluate_names(self, names, check_mode):
        # The attribute in messages: the whole path for one configuration, as a single build names it.
        attr = attr_text(configuration_parts(names[0])) if len(names) == 1 else "nixosConfigurations"
        if self.params.get("flake"):
            evaluated = self._evaluate_flake(check_mode, attr, lambda value, installable, args, what: flake_expression(
                value, installable, args, what, names))
        else:
            evaluated = self._evaluate_file(check_mode, attr, lambda value, args, what: file_expression(value, args, what, names))
        return checked(evaluated, names)

    def evaluate_many(self, names, check_mode):
        """({name: evaluated}, {name: NixError}): evaluations of eval_chunk configurations each (all at once for 0)."""
        evaluated, errors = {}, {}
        for chunk in chunks(names, self.params.get("eval_chunk") or 0):
            try:
                evaluated.update(self._evaluate_names(chunk, check_mode))
            except NixError as exc:
                if len(chunk) == 1:
                    errors[chunk[0]] = exc
                    continue
                for name in chunk:
                    try:
                        evaluated.update(self._evaluate_names([name], check_mode))
                    except NixError as one:
                        errors[name] = one
        return evaluated, errors

    def _root(self, out_path, out_link):
        """out_link -> out_path as a garbage collector root. Under Nix's gcroots a symlink is a root by itself (no
        nix-store start per configuration); elsewhere Nix registers it."""
        make_parent(out_link)
        if os.path.realpath(os.path.dirname(out_link)).startswith(GCROOTS_DIR + "/"):
            temporary = "%s.%d.tmp" % (out_link, os.getpid())
            try:
                os.symlink(out_path, temporary)
                os.replace(temporary, out_link)  # atomic: the old root stays until the new one is in place
            except OSError as exc:
                raise NixError("cannot point %s at %s: %s; choose an out_link this user may write" % (out_link, out_path, exc.strerror)) from None
        else:
            self.nix.add_root(out_path, out_link)

    def realise_many(self, evaluated, links):
        """{name: NixError} for the configurations that did not build; every other one built and rooted at its link."""
        names = sorted(evaluated)
        targets = ["%s!%s" % (evaluated[n]["drv_path"], evaluated[n]["output_name"]) for n in names]
        roots = tempfile.mkdtemp(prefix="ansinix-roots-")
        try:
            try:
                # Temporary roots keep the results from a garbage collection until each has its own root.
                self.nix.realise(targets, out_link=os.path.join(roots, "result"), keep_going=True)
                failed = False
            except NixError:
                failed = True
            errors = {}
            for name, target in zip(names, targets):
                out_path = evaluated[name]["out_path"]
                try:
                    if failed and not self.nix.is_valid(out_path):
                        # Again alone, for this configuration's own error (or the root, if it failed only for another's).
                        self.nix.realise(target, out_link=links[name], what=out_path)
                    else:
                        self._root(out_path, links[name])
                except NixError as exc:
                    errors[name] = exc
            return errors
        finally:
            for entry in os.listdir(roots):
                os.unlink(os.path.join(roots, entry))
            os.rmdir(roots)

    def build_many(self, check_mode):
        names = list(dict.fromkeys(self.params["nixos_configurations"]))
        if not names:
            raise NixError("nixos_configurations is empty: list the configurations to build")
        for name in names:
            configuration_parts(name)
        if self.params.get("flake") and split_flake_ref(self.params["flake"])[1]:
            raise NixError("flake %r names an attribute: with nixos_configurations give the flake alone" % self.params["flake"])
        self.nix.version()  # no nix here: say so once, not for every configuration
        evaluated, errors = self.evaluate_many(names, check_mode)
        links, before = {}, {}
        for name in list(evaluated):
            links[name] = default_out_link(dict(self.params, nixos_configuration=name), "")
            try:
                before[name] = current_root(links[name])
            except NixError as exc:
                errors[name] = exc
                del evaluated[name]
        invalid = set(self.nix.invalid_paths([e["out_path"] for e in evaluated.values()])) if evaluated else set()
        # A system already in the store and rooted at its link needs nothing (a rerun that changes nothing runs no build).
        pending = {n: e for n, e in evaluated.items() if e["out_path"] in invalid or before[n] != e["out_path"]}
        if not check_mode and pending:
            errors.update(self.realise_many(pending, links))
        built = [n for n in names if n in evaluated and n not in errors]
        result = {
            "changed": any(evaluated[n]["out_path"] in invalid or before[n] != evaluated[n]["out_path"] for n in built),
            "out_paths": {n: evaluated[n]["out_path"] for n in built},
            "drv_paths": {n: evaluated[n]["drv_path"] for n in built},
            "out_links": {n: links[n] for n in built},
            "already_valid": {n: evaluated[n]["out_path"] not in invalid for n in built},
            "errors": {n: errors[n].msg for n in names if n in errors},
            "nix_version": self.nix.version(),
        }
        if errors:
            result.update(failed=True, msg=failure_message(result["errors"]))
        return result


def run(module):
    """The module's result: a dict, with failed and msg when a build failed."""
    builder = FleetBuilder(nix_for(module), module.params)
    try:
        if module.params.get("lock"):
            result = lock(builder.nix, module.params)
        elif module.params.get("nixos_configurations") is not None:
            result = builder.build_many(module.check_mode)
        else:
            result = builder.build(module.check_mode)
    except NixError as exc:
        result = dict(exc.details, failed=True, msg=exc.msg)
    finally:
        builder.close()
    for message in builder.warnings:
        module.warn(message)
    return result
