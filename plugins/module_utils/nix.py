# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that runs nix commands and turns their failures into one-line messages."""

from __future__ import annotations

import os
import re

STORE_DIR = "/nix/store"
# /nix/store/<32 chars of Nix's base32>-<name>
STORE_PATH_RE = re.compile(r"^/nix/store/[0-9abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+\-._?=]+$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

INSTALL_HINT = (
    "install Nix on this host first: on Debian or Ubuntu `apt-get install nix-bin`, elsewhere the "
    "installer from nixos.org; or run this task where Nix is installed (e.g. delegate_to: localhost)"
)


class NixError(Exception):
    """A failure with a message fit for a user: what went wrong and what to do."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


def check_store_path(path, what="path"):
    """Return path normalised, or raise NixError when it is no store path."""
    if not isinstance(path, str) or not path:
        raise NixError("%s is empty: give a Nix store path like /nix/store/<hash>-nixos-system-web1" % what)
    normalised = path.rstrip("/")
    if not STORE_PATH_RE.match(normalised):
        raise NixError(
            "%s %r is not a Nix store path: expected /nix/store/<32-character hash>-<name>, "
            "e.g. the out_path that ansinix.nixos.nix_build returns" % (what, path)
        )
    return normalised


def store_path_name(path):
    """The <name> part of /nix/store/<hash>-<name>."""
    return os.path.basename(path)[33:]


def split_name_version(name):
    """Split a store name like 'openssl-3.0.13' into ('openssl', '3.0.13'), as Nix does."""
    parts = name.split("-")
    for i in range(1, len(parts)):
        if parts[i][:1].isdigit():
            return "-".join(parts[:i]), "-".join(parts[i:])
    return name, ""


def clean_output(text):
    return ANSI_RE.sub("", text or "").replace("\r", "")


def error_summary(stderr, max_lines=25):
    """Nix's own error message (with file and line), without progress lines and long traces."""
    lines = [line for line in clean_output(stderr).splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("error:")), None)
    if start is None:
        return "\n".join(lines[-max_lines:]).strip()
    block = lines[start:]
    # Keep "error: ..." and its position lines; the "… while evaluating" trace is noise to a user.
    kept = [line for line in block if not line.lstrip().startswith("…")]
    return "\n".join(kept[:max_lines]).strip()


def build_log_tail(stderr, max_lines=25):
    """The last lines a failing build printed, as nix-build shows them on stderr."""
    lines = [line for line in clean_output(stderr).splitlines() if line.strip()]
    return "\n".join(lines[-max_lines:])


class Nix:
    """Runs nix commands on the host the module runs on."""

    COMMANDS = ("nix", "nix-build", "nix-store", "nix-env", "nix-instantiate")

    def __init__(self, module, nix_path=None, options=None, use_environment_nix_path=False):
        self.module = module
        self.nix_path = list(nix_path or [])
        self.options = dict(options or {})
        self.use_environment_nix_path = use_environment_nix_path
        self._bins = {}
        self._version = None

    def bin(self, name):
        if name not in self._bins:
            found = self.module.get_bin_path(name, opt_dirs=["/run/current-system/sw/bin", "/nix/var/nix/profiles/default/bin"])
            if not found:
                raise NixError("`%s` was not found on this host: %s" % (name, INSTALL_HINT))
            self._bins[name] = found
        return self._bins[name]

    def environ(self):
        """The environment nix runs in: no ambient NIX_PATH unless asked for."""
        if not self.use_environment_nix_path:
            return {"NIX_PATH": ":".join(self.nix_path)}
        if self.nix_path:
            return {"NIX_PATH": ":".join(self.nix_path + [os.environ.get("NIX_PATH", "")]).rstrip(":")}
        return {}

    def option_args(self):
        args = []
        for name, value in sorted(self.options.items()):
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (list, tuple)):
                value = " ".join(str(v) for v in value)
            args += ["--option", str(name), str(value)]
        return args

    def run(self, command, args, check=True, data=None, with_options=True, binary_data=False):
        """Run a nix command; returns (rc, stdout, stderr). check=True raises NixError on failure."""
        argv = [self.bin(command)] + list(args)
        if with_options and command != "nix-store":
            argv += self.option_args()
        # An empty NIX_PATH hides the caller's: `<nixpkgs>` then resolves only through nix_path.
        rc, out, err = self.module.run_command(argv, data=data, environ_update=self.environ(), binary_data=binary_data)
        if check and rc != 0:
            raise NixError("%s failed: %s" % (command, error_summary(err)), rc=rc, stderr=clean_output(err))
        return rc, out, err

    def version(self):
        if self._version is None:
            _rc, out, _err = self.run("nix-store", ["--version"], with_options=False)
            match = re.search(r"(\d+\.\d+(\.\d+)?)", out)
            self._version = match.group(1) if match else out.strip()
        return self._version

    def version_tuple(self):
        return tuple(int(p) for p in re.findall(r"\d+", self.version())[:3])

    def experimental(self, *features):
        """Arguments that enable experimental features (nix-command, flakes) on this Nix."""
        return ["--extra-experimental-features", " ".join(features)]

    # -- the store ---------------------------------------------------------------------------------

    def invalid_paths(self, paths):
        """The paths among these that are not valid in this host's store."""
        if not paths:
            return []
        _rc, out, _err = self.run("nix-store", ["--check-validity", "--print-invalid"] + list(paths))
        return out.split()

    def is_valid(self, path):
        return not self.invalid_paths([path])

    def closure(self, paths):
        _rc, out, _err = self.run("nix-store", ["--query", "--requisites"] + list(paths))
        return out.split()

    def nar_sizes(self, paths):
        """{path: NAR size in bytes}."""
        if not paths:
            return {}
        _rc, out, _err = self.run("nix-store", ["--query", "--size"] + list(paths))
        return dict(zip(paths, (int(n) for n in out.split())))
