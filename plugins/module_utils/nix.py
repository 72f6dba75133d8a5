# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""The one place that runs nix commands and turns their failures into one-line messages.

Everything here runs on the host the task runs on (the controller, a builder, or the target).
Failures are raised as NixError, whose ``msg`` is one line that says what went wrong and what
to do; the longer story (Nix's whole error block, the build log) goes into ``details``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import struct

STORE_DIR = "/nix/store"
# /nix/store/<32 chars of Nix's base32 (no e, o, u, t)>-<name>; names may not start with a dot.
# \Z, not $: `$` also matches before a final newline, and "/nix/store/...-x\n" must not pass.
STORE_PATH_RE = re.compile(r"^/nix/store/[0-9abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]*\Z")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
POSITION_RE = re.compile(r"^\s*at (.+?):(\d+):(\d+):?\s*$")
# "builder for '/nix/store/x.drv' failed with exit code 1", "building of '/nix/store/x.drv!*' from .drv file timed out"
FAILED_BUILDER_RE = re.compile(r"(?:builder for|building of) '(/nix/store/[^'!]+\.drv)(?:![^']*)?'(?: from \.drv file)? (?:failed|timed out)")
SETTING_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")

INSTALL_HINT = (
    "install Nix on this host first: on Debian or Ubuntu `apt-get install nix-bin`, elsewhere the "
    "installer from nixos.org; or run this task where Nix is installed (e.g. delegate_to: localhost)"
)
# Where Nix lives when a non-interactive shell's PATH does not have it: NixOS, the multi-user
# installer, and the single-user installer (its profile is only added to PATH by a login shell).
NIX_BIN_DIRS = ("/run/current-system/sw/bin", "/nix/var/nix/profiles/default/bin", "~/.nix-profile/bin")
# Commands that evaluate Nix expressions, and so look things up in the search path.
EVALUATING_COMMANDS = ("nix", "nix-build", "nix-instantiate", "nix-env")
# Flakes and the `nix` command first appeared in Nix 2.4.
FLAKES_SINCE = (2, 4)


# The options of the ansinix.nixos.nix doc fragment, for every module that runs Nix.
NIX_ARGUMENT_SPEC = dict(
    nix_path=dict(type="list", elements="str", default=[]),
    use_environment_nix_path=dict(type="bool", default=False),
    options=dict(type="dict", default={}),
)


class NixError(Exception):
    """A failure with a message fit for a user: one line, what went wrong and what to do.

    details are returned next to msg by fail_json (e.g. the whole Nix error, a build log tail).
    """

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


# -- store paths ---------------------------------------------------------------------------------------

def is_store_path(path):
    """True for a top-level store path /nix/store/<hash>-<name> (a trailing slash allowed)."""
    return isinstance(path, str) and bool(STORE_PATH_RE.match(path.rstrip("/")))


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
    return os.path.basename(path.rstrip("/"))[33:]


def split_name_version(name):
    """Split a store name like 'openssl-3.0.13' into ('openssl', '3.0.13'), as Nix does."""
    parts = name.split("-")
    for i in range(1, len(parts)):
        if parts[i][:1].isdigit():
            return "-".join(parts[:i]), "-".join(parts[i:])
    return name, ""


def _nar_string(data):
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


def flat_directory_nar_hash(files):
    """The NAR hash (SRI, sha256) Nix gives a directory of plain files {name: bytes}.

    Lets a locked `path:` input be named without asking nix to hash it first.
    """
    digest = hashlib.sha256()
    digest.update(b"".join(_nar_string(s) for s in (b"nix-archive-1", b"(", b"type", b"directory")))
    for name in sorted(files, key=lambda n: n.encode()):
        digest.update(b"".join(_nar_string(s) for s in (
            b"entry", b"(", b"name", name.encode(), b"node", b"(", b"type", b"regular", b"contents")))
        digest.update(_nar_string(files[name]))
        digest.update(_nar_string(b")") + _nar_string(b")"))
    digest.update(_nar_string(b")"))
    return "sha256-" + base64.b64encode(digest.digest()).decode()


# -- turning nix's stderr into messages ----------------------------------------------------------------

def clean_output(text):
    """Text without colours, cursor movements and carriage returns."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return ANSI_RE.sub("", text or "").replace("\r", "")


def one_line(text):
    """Whitespace (newlines included) collapsed: a message that fits one line."""
    return " ".join((text or "").split())


def _is_trace(line):
    stripped = line.strip()
    return stripped.startswith(("…", "(use '--show-trace'", "> ")) or bool(re.match(r"^\d*\|", stripped))


def error_block(stderr, max_lines=40):
    """Nix's own error, as it printed it, from its first "error:" line; without the stack trace.

    Newer Nix prints "error:" then "… while evaluating" lines and the real message last; code
    excerpts and the trace are dropped, the messages and their positions kept.
    """
    lines = clean_output(stderr).splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("error:")), None)
    if start is None:
        return [line for line in lines if line.strip()][-max_lines:]
    kept = [line.rstrip() for line in lines[start:]
            if line.strip() and not _is_trace(line) and not re.match(r"^\s*last \d+ log lines:$", line)]
    return kept[:max_lines]


def _message_from(lines, start):
    """(message, position) of the "error:" at lines[start]: its text and the lines continuing it."""
    first = lines[start].split("error:", 1)[1].strip()
    message, position, blank = [first] if first else [], "", False
    for line in lines[start + 1:]:
        stripped = line.strip()
        match = POSITION_RE.match(line)
        if match:
            # A position in an expression given on the command line says nothing to the user.
            if not match.group(1).startswith(("(string)", "\u00abstring\u00bb")):
                position = " at %s:%s:%s" % match.groups()
            break
        if not stripped:
            blank = blank or bool(message)
            continue
        if blank or _is_trace(line) or stripped.startswith(("error:", "For full logs")):
            break
        message.append(stripped)
    return one_line(" ".join(message)), position


def error_summary(stderr):
    """Nix's error as one line: its last "error:" message with the position it names.

    "error: undefined variable 'x' at /srv/fleet/web.nix:4:11". Newer Nix prints a bare "error:"
    and a trace first, the real message last. Without an "error:" line (nix was killed, or failed
    before it could say more), the last line it printed.
    """
    lines = clean_output(stderr).splitlines()
    for start in reversed([i for i, line in enumerate(lines) if line.lstrip().startswith("error:")]):
        message, position = _message_from(lines, start)
        if message:
            # nix-store -r adds "last 10 log lines:"; the log itself is returned apart, as log_tail.
            message = re.sub(r";?\s*last \d+ log lines:$", "", message)
            return "error: " + message + position
    rest = [line.strip() for line in lines if line.strip() and not _is_trace(line)]
    return rest[-1] if rest else ""


def failed_derivation(stderr):
    """The derivation whose builder failed (the first one Nix names), or None."""
    match = FAILED_BUILDER_RE.search(clean_output(stderr))
    return match.group(1) if match else None


def build_log_tail(stderr, max_lines=25):
    """The last lines of a failed build's log as nix printed them ("> line" with -Q, raw without)."""
    lines = clean_output(stderr).splitlines()
    quoted = [line.strip()[2:] for line in lines if line.strip().startswith("> ") or line.strip() == ">"]
    if quoted:
        return quoted[-max_lines:]
    # Without -Q, the builder's output comes before nix's own lines.
    ours = re.compile(r"^(error:|these \d+ derivations|this derivation|building '|\s+/nix/store/|For full logs|warning:)")
    return [line for line in lines if line.strip() and not ours.match(line)][-max_lines:]


# -- running nix --------------------------------------------------------------------------------------

def parse_version(text):
    """'2.8.0' from "nix-store (Nix) 2.8.0" or "nix (Determinate Nix 3.6.2) 2.29.0" (the last one)."""
    found = re.findall(r"\d+\.\d+(?:\.\d+)?(?:pre[0-9_a-z]*)?", text or "")
    return found[-1] if found else (text or "").strip()


def version_tuple(version):
    return tuple(int(p) for p in re.findall(r"\d+", version.split("pre")[0])[:3])


def setting_value(value):
    """A Nix setting's value as --option wants it: booleans true/false, lists space-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(setting_value(v) for v in value)
    if value is None:
        return ""
    return str(value)


def option_args(options):
    """['--option', NAME, VALUE, ...] for {NAME: VALUE}, or NixError naming the bad setting name."""
    args = []
    for name, value in sorted((options or {}).items()):
        if not SETTING_NAME_RE.match(str(name)):
            raise NixError("options: %r is not a Nix setting name: use names as in nix.conf, like builders, "
                           "substituters or max-jobs (without --)" % (name,))
        args += ["--option", str(name), setting_value(value)]
    return args


def check_search_path(entries):
    """Refuse search path entries nix would split or misread."""
    for entry in entries:
        # Entries are passed space-separated (--option nix-path) as well as in NIX_PATH.
        if not isinstance(entry, str) or not entry or any(c.isspace() for c in entry):
            raise NixError("nix_path entry %r is not valid: give one entry per list item, NAME=PATH, PATH or "
                           "NAME=URL, without spaces (e.g. nixpkgs=/srv/nixpkgs)" % (entry,))
    return list(entries)


def host_name():
    return socket.gethostname() or "this host"


class Nix:
    """Runs nix commands on the host the module runs on.

    nix_path replaces the ambient search path (NIX_PATH and nix.conf's nix-path) unless
    use_environment_nix_path, in which case its entries come first. options are passed to every
    call as --option NAME VALUE.
    """

    COMMANDS = ("nix", "nix-build", "nix-store", "nix-env", "nix-instantiate")

    def __init__(self, module, nix_path=None, options=None, use_environment_nix_path=False):
        self.module = module
        self.nix_path = list(nix_path or [])
        self.options = dict(options or {})
        self.use_environment_nix_path = use_environment_nix_path
        self._bins = {}
        self._version = None

    def bin(self, name):
        """The absolute path of a nix command, or NixError saying how to install Nix."""
        if name not in self._bins:
            dirs = [os.path.expanduser(d) for d in NIX_BIN_DIRS]
            found = self.module.get_bin_path(name, opt_dirs=dirs)
            if not found:
                raise NixError("`%s` was not found on %s (PATH and %s): %s" % (name, host_name(), ", ".join(NIX_BIN_DIRS), INSTALL_HINT))
            self._bins[name] = found
        return self._bins[name]

    def environ(self):
        """The environment nix runs in: no ambient NIX_PATH unless asked for."""
        if self.use_environment_nix_path:
            return {}
        return {"NIX_PATH": ":".join(check_search_path(self.nix_path))}

    def search_path_args(self, command):
        if command not in EVALUATING_COMMANDS:
            return []
        entries = check_search_path(self.nix_path)
        if self.use_environment_nix_path:
            # -I comes before NIX_PATH and nix.conf's nix-path.
            return [arg for entry in entries for arg in ("-I", entry)]
        # NIX_PATH alone is not enough: where nix.conf sets nix-path (NixOS does), Nix 2.8 prefers that.
        return ["--option", "nix-path", " ".join(entries)]

    def option_args(self):
        return option_args(self.options)

    def run(self, command, args, check=True, data=None, with_options=True, binary_data=False, what=None):
        """Run a nix command; returns (rc, stdout, stderr). check=True raises NixError on failure."""
        argv = [self.bin(command)] + list(args)
        if with_options:
            argv += self.search_path_args(command) + self.option_args()
        rc, out, err = self.module.run_command(argv, data=data, environ_update=self.environ(), binary_data=binary_data)
        if check and rc != 0:
            raise NixError("%s failed: %s" % (what or command, error_summary(err) or "it exited with %d" % rc),
                           rc=rc, nix_error=error_block(err))
        return rc, out, err

    def version(self):
        """The Nix version of this host, asked once; also the first check that Nix is here at all."""
        if self._version is None:
            _rc, out, _err = self.run("nix-store", ["--version"], with_options=False)
            self._version = parse_version(out)
        return self._version

    def version_tuple(self):
        return version_tuple(self.version())

    def experimental(self, *features):
        """Arguments that enable experimental features (nix-command, flakes) for one call.

        Nix before 2.4 has neither: say so. Newer ones accept the extra- prefix, which adds to
        what nix.conf enables instead of replacing it (and only warns for features now stable).
        """
        if self.version_tuple() < FLAKES_SINCE:
            raise NixError("Nix %s on %s has no flakes and no `nix` command (they came with Nix 2.4): upgrade Nix "
                           "there, or build a classic file with file" % (self.version(), host_name()))
        return ["--extra-experimental-features", " ".join(features)]

    # -- the store -------------------------------------------------------------------------------------

    def invalid_paths(self, paths):
        """The paths among these that are not valid in this host's store (in the order given)."""
        paths = [check_store_path(p) for p in paths]
        if not paths:
            return []
        _rc, out, _err = self.run("nix-store", ["--check-validity", "--print-invalid"] + paths)
        return out.split()

    missing_paths = invalid_paths

    def is_valid(self, path):
        return not self.invalid_paths([path])

    path_is_valid = is_valid

    def closure(self, paths):
        """Every store path the given (valid) paths need, themselves included."""
        paths = [check_store_path(p) for p in paths]
        if not paths:
            return []
        _rc, out, _err = self.run("nix-store", ["--query", "--requisites"] + paths)
        return out.split()

    def nar_sizes(self, paths):
        """{path: NAR size in bytes}."""
        paths = list(paths)
        if not paths:
            return {}
        _rc, out, _err = self.run("nix-store", ["--query", "--size"] + paths)
        return dict(zip(paths, (int(n) for n in out.split())))

    def closure_size(self, paths):
        """The NAR bytes of the closure of paths (what `nix path-info -S` shows, without nix-command)."""
        return sum(self.nar_sizes(self.closure(paths)).values())

    def read_log(self, drv, max_lines=25):
        """The last lines of the build log Nix kept for drv, or [] when it kept none."""
        rc, out, _err = self.run("nix-store", ["--read-log", drv], check=False, with_options=False)
        if rc != 0:
            return []
        return [line for line in clean_output(out).splitlines() if line.strip()][-max_lines:]

    def realise(self, drv, out_link=None, what=None, keep_going=False):
        """Build drv, or a list of them at once (quietly: Nix prints only the log tail of a failure); root it at
        out_link (a list: out_link, out_link-2, ...).

        Returns the output paths. A failure raises NixError naming the derivation that failed,
        with the tail of its log.
        """
        args = ["--realise"] + ([drv] if isinstance(drv, str) else list(drv)) + ["--quiet", "--no-build-output"]
        if keep_going:
            args.append("--keep-going")
        if out_link:
            args += ["--add-root", out_link, "--indirect"]
        rc, out, err = self.run("nix-store", args, check=False)
        if rc != 0:
            failed = failed_derivation(err)
            tail = (self.read_log(failed) if failed else []) or build_log_tail(err)
            last = (" Its last log line: %s." % one_line(tail[-1])) if tail else ""
            how = (" The whole log: nix-store --read-log %s" % failed) if failed else ""
            raise NixError("building %s failed: %s.%s%s" % (what or args[1], error_summary(err).rstrip(".;"), last, how),
                           rc=rc, log_tail=tail, nix_error=error_block(err), failed_drv=failed)
        # With --add-root, nix prints the roots, not the store paths.
        return [os.path.realpath(line) for line in out.split() if line.startswith("/")]

    def add_root(self, path, link):
        """Make link an (indirect) GC root for the valid store path."""
        self.realise(check_store_path(path), out_link=link)


def nix_for(module):
    """The Nix runner a module's NIX_ARGUMENT_SPEC options ask for."""
    params = module.params
    return Nix(module, nix_path=params["nix_path"], options=params["options"],
               use_environment_nix_path=params["use_environment_nix_path"])
