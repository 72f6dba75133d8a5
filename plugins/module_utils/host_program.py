# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running a module's own code on a host without AnsiballZ, for the action plugins that need speed.

A module run costs a second or more on a busy controller: Ansible packs the module with every module
util it may import, and the host's Python unpacks it and imports ansible.module_utils.basic. The
collection's module utils that do the work on the host use the standard library only, so an action
plugin can instead send their sources with the connection's stdin (pipelining) and run them with
``python3 -``: the same code, one interpreter start, nothing written to the host's disk.

program() is called on the controller; HostModule and the bootstrap run on the host.
"""

from __future__ import annotations

import json
import os
import subprocess

# The exit code of a program that found no Python it can run on (the caller then runs the module).
NO_PYTHON_RC = 97

# Runs first on the host. Python 2 must be able to parse it: it says "no Python here" in its own way.
BOOTSTRAP = r"""
import sys
if sys.version_info < (3, 7):
    sys.exit(%(no_python_rc)d)
import importlib.util
import json

SOURCES = json.loads(%(sources)r)
PACKAGES = set(name.rsplit(".", i)[0] for name in SOURCES for i in range(1, name.count(".") + 1))


def origin(name):
    # A file name for tracebacks and inspect; nothing is written there.
    return "/ansinix-host-program/%%s.py" %% name.replace(".", "/")


class Sources:
    # Modules from SOURCES; get_source() lets inspect.getsource() read them too. Not importlib.abc's classes:
    # importing that module alone takes longer than all of this program's own code.
    def find_spec(self, name, path=None, target=None):
        if name in SOURCES or name in PACKAGES:
            spec = importlib.util.spec_from_loader(name, self, is_package=name in PACKAGES)
            spec.origin = origin(name)
            spec.has_location = True
            return spec
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.get_code(module.__name__), module.__dict__)

    def is_package(self, name):
        return name in PACKAGES

    def get_source(self, name):
        return SOURCES.get(name, "")

    def get_code(self, name):
        return compile(self.get_source(name), origin(name), "exec")


sys.meta_path.insert(0, Sources())
try:
    entry = importlib.import_module(%(module)r)
    result = getattr(entry, %(function)r)(json.loads(%(params)r))
except Exception:
    import traceback
    result = {"failed": True, "msg": %(what)r + " failed on the host: " + traceback.format_exc().strip().splitlines()[-1],
              "exception": traceback.format_exc()}
sys.stdout.write(json.dumps(result) + "\n")
"""


def program(sources, module, function, params, what):
    """Python source that runs module.function(params) on a host and prints its result as one line of JSON.

    sources: {dotted module name: source} of every module it imports (standard library aside).
    """
    return BOOTSTRAP.lstrip() % {
        "no_python_rc": NO_PYTHON_RC, "sources": json.dumps(sources), "module": module, "function": function,
        "params": json.dumps(params), "what": what,
    }


def parse_result(stdout):
    """The result a program printed (its last line of JSON), or None."""
    for line in reversed((stdout or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


class HostModule:
    """The part of AnsibleModule that the host-side module utils use: parameters, commands, finding them."""

    check_mode = False
    _diff = False

    def __init__(self, params):
        self.params = params

    def get_bin_path(self, name, opt_dirs=None):
        """As AnsibleModule.get_bin_path: opt_dirs, then PATH, then the sbin directories; None if not found."""
        dirs = [d for d in opt_dirs or [] if d and os.path.exists(d)] + os.environ.get("PATH", "").split(os.pathsep)
        dirs += [d for d in ("/sbin", "/usr/sbin", "/usr/local/sbin") if d not in dirs and os.path.exists(d)]
        for directory in dirs:
            path = os.path.join(directory, name) if directory else None
            if path and os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        return None

    def run_command(self, argv, data=None, environ_update=None, binary_data=False):
        """As AnsibleModule.run_command with a list: (rc, stdout, stderr), text decoded as UTF-8."""
        if data is not None and not binary_data:
            data += "\n"
        env = dict(os.environ, **(environ_update or {}))
        try:
            proc = subprocess.run(argv, input=data.encode() if data is not None else None, env=env,
                                  stdin=subprocess.DEVNULL if data is None else None,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as exc:
            return 2, "", str(exc)
        return proc.returncode, proc.stdout.decode(errors="surrogateescape"), proc.stderr.decode(errors="surrogateescape")
