"""The benchmark: ansinix.nixos against hand-written Nix commands and the Ansible floor, on test hosts.

    ./bench/run              full run, writes bench/RESULTS.md (8 hosts, 128 and 512 MiB, 1000 servers)
    ./bench/run --quick      a tiny run (what the test suite does to check it still works)
    ./bench/run --only fleet-build    only the rows of 6 (no test hosts), merged into RESULTS.md
    ./bench/run --only inventory      only the rows of 5 (no test hosts), merged into RESULTS.md
    ./bench/run --only rerun          only the rows of 2 (8 test hosts), merged into RESULTS.md

Row 5 compares the inventory plugin with hetzner.hcloud's. The first run installs that collection (from the `ansible`
package on PyPI, which bundles it) and the libraries it needs under .build/bench-hcloud, never into the venv.

Every figure is a ratio against a baseline measured in the same run: these machines are shared and
noisy, and absolute times alone mean nothing. Nothing here asserts a target; RESULTS.md says which are met.
"""
import argparse
import fcntl
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

from ansinix_test import REPO_ROOT
from ansinix_test.ansible import ansible_env, run_playbook, stop_ssh_masters
from ansinix_test.fakehetzner import CLOUD_TOKEN, FakeHetzner
from ansinix_test.hosts import TestHosts
from ansinix_test.procs import TreeMemory
from ansinix_test.systems import NIX_ENV, build_system

FLEET = os.path.join(REPO_ROOT, "tests", "fixtures", "fleet.nix")
SITE = os.path.join(REPO_ROOT, "playbooks", "site.yml")
MIB = 1024 * 1024
FLEET_BUILD = "Build the batch's configurations in one evaluation, on the controller or the builder host"
# The rows each --only measures: its section of the report.
ONLY = {"fleet-build": "6.", "inventory": "5.", "rerun": "2."}
# The yardstick of the inventory (5): hetzner.hcloud 5.4.0, as the `ansible` package for ansible-core 2.19 bundles it,
# and the libraries its inventory plugin imports (it vendors the hcloud library itself). All pinned, no dependency
# resolved at install time.
HCLOUD_ANSIBLE = "ansible==12.3.0"
HCLOUD_PYTHON = ["requests==2.34.2", "urllib3==2.8.0", "certifi==2026.10.19.post1", "idna==3.21", "charset-normalizer==3.5.3",
                 "python-dateutil==4.0.0", "tzdata==2026.6"]


def timed(fn):
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def median_of(runs, fn):
    times = []
    for _run in range(runs):
        times.append(timed(fn)[0])
    return statistics.median(times)


def check(proc, what):
    if getattr(proc, "returncode", getattr(proc, "rc", 0)) != 0:
        out = getattr(proc, "stdout", "") + getattr(proc, "stderr", "")
        raise SystemExit("bench: %s failed:\n%s" % (what, str(proc) if not out else out[-3000:]))
    return proc


def hcloud_collection():
    """(collections path, Python path) of hetzner.hcloud and its libraries, installed under .build/ on first use."""
    root = os.path.join(REPO_ROOT, ".build", "bench-hcloud")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with open(root + ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once install it once
        return _install_hcloud(root)


def _install_hcloud(root):
    collections, python, stamp = (os.path.join(root, n) for n in ("collections", "python", "installed"))
    want = " ".join([HCLOUD_ANSIBLE] + HCLOUD_PYTHON + ["python" + sys.version.split()[0]])
    if os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            if f.read() == want:
                return collections, python
    print("bench: installing hetzner.hcloud (%s) and its libraries under %s" % (HCLOUD_ANSIBLE, root), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        check(subprocess.run(pip + ["download", "--no-deps", "--only-binary=:all:", "-d", tmp, HCLOUD_ANSIBLE],
                             capture_output=True, text=True, check=False), "pip download " + HCLOUD_ANSIBLE)
        (wheel,) = [os.path.join(tmp, n) for n in os.listdir(tmp) if n.endswith(".whl")]
        with zipfile.ZipFile(wheel) as z:
            z.extractall(collections, [n for n in z.namelist() if n.startswith("ansible_collections/hetzner/hcloud/")])
    check(subprocess.run(pip + ["install", "--no-deps", "--target", python] + HCLOUD_PYTHON, capture_output=True, text=True,
                         check=False), "pip install of hetzner.hcloud's libraries")
    with open(stamp, "w", encoding="utf-8") as f:
        f.write(want)
    return collections, python


class Bench:
    def __init__(self, args):
        self.args = args
        self.hosts = TestHosts(prefix=os.environ.get("ANSINIX_BENCH_PREFIX") or "bench")
        self.rows = []
        self.notes = []
        self.load = os.getloadavg()[0]

    def row(self, what, ratio, target, detail, met=None):
        self.rows.append((what, ratio, target, detail, met))
        print("%-60s %s" % (what, detail), flush=True)

    def with_hosts(self, names, measure):
        """Run measure(names) on fresh test hosts of a base system, stopped afterwards."""
        try:
            self.hosts.stop()
            base = build_system(name="base")
            self.hosts.start(names, options={n: {"system": base} for n in names})
            measure(names)
        finally:
            self.hosts.stop()

    # -- 1 and 3: a fresh deploy of a new generation ----------------------------------------------------

    def inventory_args(self, names):
        extra = os.path.join(self.hosts.state_dir, "fleet.yml")
        with open(extra, "w", encoding="utf-8") as f:
            f.write("all:\n  hosts:\n" + "".join("    %s: {nixos_configuration: web}\n" % n for n in names))
        return ["-i", self.hosts.inventory_path, "-i", extra, "-e", "nixos_file=" + FLEET]

    def hand_written_deploy(self, names, version):
        """What one would write by hand: nix-build, then copy and switch every host in parallel over ssh."""
        script = """
set -e
system=$(nix-build %(fleet)s -A nixosConfigurations.web.config.system.build.toplevel --arg args '{ version = "%(version)s"; }' --no-out-link)
export NIX_SSHOPTS=%(sshopts)s
for host in %(addresses)s; do
  ( nix-copy-closure --to root@$host $system &&
    ssh $NIX_SSHOPTS root@$host "nix-env -p /nix/var/nix/profiles/system --set $system && $system/bin/switch-to-configuration switch" ) &
done
wait
"""
        script %= {"fleet": FLEET, "version": version, "sshopts": shlex.quote(" ".join(self.hosts.ssh_options())),
                   "addresses": " ".join(self.hosts[n].address for n in names)}
        check(subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=NIX_ENV, check=False), "the hand-written deploy")

    def ansible_deploy(self, names, version, extra=()):
        run = run_playbook(SITE, hosts=self.hosts, args=self.inventory_args(names) + ["-e", json.dumps({"nixos_args": {"version": version}})] + list(extra))
        return check(run, "ansible-playbook %s" % SITE)

    def fresh_deploy(self, names, rounds):
        base, ours, unconfirmed, copies = [], [], [], []
        for i in range(rounds):
            tag = "%s-%d" % (int(time.time()), i)
            base.append(timed(lambda: self.hand_written_deploy(names, "hand-" + tag))[0])
            # Cold, as the script is: no SSH master left by an earlier run (ControlPersist) to save a handshake.
            stop_ssh_masters(self.hosts)
            elapsed, run = timed(lambda: self.ansible_deploy(names, "ansible-" + tag))
            ours.append(elapsed)
            copies.extend(run.results("Copy the store paths the host lacks").values())
            # What the script does: no confirmation over a new connection, no rollback if none comes.
            stop_ssh_masters(self.hosts)
            unconfirmed.append(timed(lambda: self.ansible_deploy(names, "unconfirmed-" + tag, ["-e", "nixos_confirm_timeout=0"]))[0])
        b, o, u = statistics.median(base), statistics.median(ours), statistics.median(unconfirmed)
        self.row("1. fresh deploy of a new generation to %d hosts" % len(names), o / b, "<= 3.0",
                 "ansible-playbook %.1f s vs hand-written script %.1f s: %.2fx" % (o, b, o / b), o / b <= 3.0)
        self.row("1. the same without magic rollback (nixos_confirm_timeout=0), as the script", u / b, "-",
                 "ansible-playbook %.1f s vs %.1f s: %.2fx" % (u, b, u / b))
        sent = sum(c["bytes"] for c in copies)
        nar = sum(c.get("nar_bytes", 0) for c in copies)
        paths = sum(c["copied"] for c in copies)
        self.row("3a. bytes sent / NAR size, new generation (small paths)", sent / nar, "<= 1.02",
                 "%d bytes for %d bytes of NAR in %d paths: %.3f (export framing, ~%d bytes a path)"
                 % (sent, nar, paths, sent / nar, (sent - nar) / max(paths, 1)), sent / nar <= 1.02)

    def bytes_for_changed_package(self, names):
        """A new generation whose only big change is one package: what a real update mostly looks like."""
        tag = str(int(time.time()))
        self.ansible_deploy(names, "pkg-" + tag, ["-e", json.dumps({"nixos_args": {"version": "pkg-" + tag, "overrides": {
            "web": {"payloadMiB": 8, "payloadSeed": "pkg-" + tag}}}})])
        run = self.ansible_deploy(names, "pkg2-" + tag, ["-e", json.dumps({"nixos_args": {"version": "pkg2-" + tag, "overrides": {
            "web": {"payloadMiB": 8, "payloadSeed": "pkg2-" + tag}}}})])
        copies = list(run.results("Copy the store paths the host lacks").values())
        sent = sum(c["bytes"] for c in copies)
        nar = sum(c.get("nar_bytes", 0) for c in copies)
        self.row("3b. bytes sent / NAR size, new generation with an 8 MiB package changed", sent / nar, "<= 1.02",
                 "%d / %d = %.4f" % (sent, nar, sent / nar), sent / nar <= 1.02)

    # -- 2: a rerun that changes nothing ---------------------------------------------------------------------

    def no_change_rerun(self, names, rounds):
        version = "rerun-%d" % int(time.time())
        self.ansible_deploy(names, version)
        floor_play = ("- name: Floor\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                      "    - name: One command\n      ansible.builtin.command: 'true'\n      changed_when: false\n")
        runs = []

        def ours():
            runs.append(self.ansible_deploy(names, version))

        floor_task = []

        def floor():
            run = check(run_playbook(floor_play, hosts=self.hosts, args=["-l", ",".join(names)]), "the floor playbook")
            floor_task.append(max(run.seconds("One command").values()))

        f = median_of(rounds, floor)
        o = median_of(rounds, ours)
        sent = sum(c["bytes"] for r in runs for c in r.results("Copy the store paths the host lacks").values())
        activations = sum(1 for r in runs for s in r.results("Switch to the new system").values() if s.get("changed"))
        self.row("2. no-change rerun on %d hosts" % len(names), o / f, "<= 1.5",
                 "%.1f s vs one-command playbook %.1f s: %.2fx; %d NAR bytes sent, %d activations" % (o, f, o / f, sent, activations),
                 o / f <= 1.5 and sent == 0 and activations == 0)
        # Where the rerun's time goes beyond the floor's: each task's slowest host, the median over the rounds.
        slowest = {}
        for r in runs:
            for task in dict.fromkeys(e["task"] for e in r.events):
                slowest.setdefault(task, []).append(max(r.seconds(task).values()))
        tasks = sorted(((statistics.median(s), t) for t, s in slowest.items()), reverse=True)
        self.row("2. the rerun's tasks, slowest host each", sum(s for s, _t in tasks) / f, "-", "%.1f s in %d tasks (the floor: %.2f s in its one): %s" % (
            sum(s for s, _t in tasks), len(tasks), statistics.median(floor_task),
            "; ".join("%s %.2f s" % (t, s) for s, t in tasks[:4])))

    # -- 4: a large closure -------------------------------------------------------------------------------------

    def large_closure(self, sizes, rounds):
        """Each copy method against nix-copy-closure, alternating, on a host reset before every copy.

        The throughput is the copy task's own time (connecting, asking what is missing, sending, importing), as
        nix-copy-closure's whole run is: Ansible's start-up is the same whatever the closure and is measured in 2.
        """
        (host,) = self.hosts.start(["big"], options={"big": {"system": build_system(name="base")}})
        env = dict(NIX_ENV, NIX_SSHOPTS=" ".join(self.hosts.ssh_options()))
        peaks = {}
        for mib in sizes:
            system = build_system(name="big", payloadMiB=mib, payloadSeed="bench-%d-%d" % (mib, time.time()))
            base, task, whole = [], {}, {}
            for _round in range(rounds):
                host.reset()
                # Each copy writes the closure to disk: the next one starts once that is written back, not during it.
                os.sync()
                cmd = ["nix-copy-closure", "--to", "root@" + host.address, system]
                base.append(timed(lambda: check(subprocess.run(cmd, env=env, capture_output=True, text=True, check=False),
                                                "nix-copy-closure"))[0])
                for method in ("stream", "ssh"):
                    host.reset()
                    os.sync()
                    memory = []

                    def watched(pid):
                        memory.append(TreeMemory(pid))
                        return memory[-1]
                    play = ("- name: Copy\n  hosts: big\n  gather_facts: false\n  tasks:\n    - name: Copy the closure\n"
                            "      ansinix.nixos.nix_copy_closure:\n        path: %s\n        method: %s\n" % (system, method))
                    elapsed, run = timed(lambda: run_playbook(play, hosts=self.hosts, watch=watched))
                    check(run, "nix_copy_closure %s" % method)
                    if run.result("Copy the closure", "big")["bytes"] < mib * MIB:
                        raise SystemExit("bench: the %s copy of %d MiB sent less than the closure" % (method, mib))
                    task.setdefault(method, []).append(run.seconds("Copy the closure")["big"])
                    whole.setdefault(method, []).append(elapsed)
                    old = peaks.get((method, mib), (0, 0))
                    peaks[(method, mib)] = (max(old[0], memory[0].peak_pss), max(old[1], memory[0].peak))
            b = statistics.median(base)
            for method in ("stream", "ssh"):
                t, w = statistics.median(task[method]), statistics.median(whole[method])
                self.row("4. %d MiB closure, method=%s: throughput vs nix-copy-closure" % (mib, method), b / t, ">= 0.8",
                         "copy task %.1f s vs nix-copy-closure %.1f s: %.2fx (the whole ansible-playbook run: %.1f s, %.2fx)"
                         % (t, b, b / t, w, b / w), b / t >= 0.8)
        for method in ("stream", "ssh"):
            mems = [peaks[(method, mib)][0] / MIB for mib in sizes]
            flat = max(mems) <= 150 and (len(mems) < 2 or max(mems) - min(mems) <= 20)
            self.row("4. controller peak memory, method=%s" % method, max(mems), "<= 150 MiB, flat",
                     ", ".join("%d MiB closure: %.0f MiB (RSS summed: %.0f MiB)" % (mib, m, peaks[(method, mib)][1] / MIB)
                               for mib, m in zip(sizes, mems)), flat)

    # -- 5: the inventory ---------------------------------------------------------------------------------------

    def inventory(self, servers, rounds):
        """ansible-inventory --list with this collection's plugin against hetzner.hcloud's, on the same stand-in API."""
        collections, python = hcloud_collection()
        with FakeHetzner() as api, tempfile.TemporaryDirectory() as tmp:
            api.add_cloud_servers(servers)
            ours, theirs = os.path.join(tmp, "bench.hetzner.yml"), os.path.join(tmp, "bench.hcloud.yml")
            with open(ours, "w", encoding="utf-8") as f:
                f.write("plugin: ansinix.nixos.hetzner\ncloud:\n  endpoint: %s\n" % api.cloud_url)
            with open(theirs, "w", encoding="utf-8") as f:
                f.write("plugin: hetzner.hcloud.hcloud\napi_endpoint: %s\n" % api.cloud_url)
            # Both plugins run in the same environment: hetzner.hcloud and its libraries are on both paths.
            env = ansible_env(extra={"HCLOUD_TOKEN": CLOUD_TOKEN})
            env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join([env["ANSIBLE_COLLECTIONS_PATH"], collections])
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [python, env.get("PYTHONPATH")]))

            def listing(config):
                proc = check(subprocess.run(["ansible-inventory", "-i", config, "--list"], env=env, capture_output=True, text=True,
                                            check=False), "ansible-inventory -i " + os.path.basename(config))
                if "[WARNING]" in proc.stderr:  # a source that failed is only a warning to ansible-inventory
                    raise SystemExit("bench: ansible-inventory -i %s warned:\n%s" % (os.path.basename(config), proc.stderr[-3000:]))
                return proc

            def plain_fetch():
                fetch = ("import json, urllib.request\npage = 1\nwhile page:\n"
                         "    req = urllib.request.Request('%s/servers?page=%%d&per_page=50' %% page, headers={'Authorization': 'Bearer %s'})\n"
                         "    page = json.load(urllib.request.urlopen(req))['meta']['pagination']['next_page']\n") % (api.cloud_url, CLOUD_TOKEN)
                check(subprocess.run([sys.executable, "-c", fetch], capture_output=True, text=True, check=False), "the plain fetch")

            def ansible_floor():
                check(subprocess.run(["ansible-inventory", "-i", "localhost,", "--list"], env=env, capture_output=True, text=True,
                                     check=False), "ansible-inventory of one host")

            def parse_only(config):
                """The plugin's own part: parsing the source into Ansible's inventory (add_host, set_variable included)."""
                code = ("import sys, time\nfrom ansible.parsing.dataloader import DataLoader\n"
                        "from ansible.inventory.manager import InventoryManager\nfrom ansible.plugins.loader import init_plugin_loader\n"
                        "init_plugin_loader()\nloader = DataLoader()\nstart = time.monotonic()\n"
                        "inventory = InventoryManager(loader=loader, sources=[sys.argv[1]])\n"
                        "assert len(inventory.hosts) == %d, len(inventory.hosts)\nprint(time.monotonic() - start)\n") % servers
                proc = check(subprocess.run([sys.executable, "-c", code, config], env=env, capture_output=True, text=True,
                                            check=False), "parsing the inventory source " + os.path.basename(config))
                return float(proc.stdout.split()[-1])

            # Once untimed: both list every server (and write their bytecode), then alternate, round by round.
            for config in (ours, theirs):
                listed = len(json.loads(listing(config).stdout)["_meta"]["hostvars"])
                if listed != servers:
                    raise SystemExit("bench: %s listed %d hosts of %d servers" % (os.path.basename(config), listed, servers))
            times = {ours: [], theirs: []}
            for _round in range(rounds):
                for config in (ours, theirs):
                    times[config].append(timed(lambda config=config: listing(config))[0])
            o, t = statistics.median(times[ours]), statistics.median(times[theirs])
            b, floor = median_of(rounds, plain_fetch), median_of(rounds, ansible_floor)
            parse = {c: statistics.median(parse_only(c) for _round in range(rounds)) for c in (ours, theirs)}
            self.row("5. ansible-inventory --list, %d Cloud servers, vs hetzner.hcloud.hcloud" % servers, o / t, "<= 1.0",
                     "ansinix.nixos.hetzner %.2f s vs hetzner.hcloud.hcloud %.2f s: %.2fx (ansible-inventory of one static host"
                     " alone takes %.2f s)" % (o, t, o / t, floor), o / t <= 1.0)
            p_o, p_t = parse[ours], parse[theirs]
            self.row("5. the plugins' part alone: parsing the source, fetch included", p_o / p_t, "-",
                     "ansinix.nixos.hetzner %.2f s vs hetzner.hcloud.hcloud %.2f s: %.2fx" % (p_o, p_t, p_o / p_t))
            self.row("5. the same listing vs a plain paginated fetch", o / b, "-",
                     "ansinix.nixos.hetzner %.2f s, hetzner.hcloud.hcloud %.2f s, the fetch alone %.2f s: %.1fx and %.1fx;"
                     " less ansible-inventory's start-up (%.2f s): %.1fx and %.1fx"
                     % (o, t, b, o / b, t / b, floor, (o - floor) / b, (t - floor) / b))
            with open(ours, "a", encoding="utf-8") as f:
                f.write("cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: %s/cache\n" % tmp)
            listing(ours)
            before = len(api.requests)
            listing(ours)
            self.row("5. warm cache: API requests", len(api.requests) - before, "0", "%d requests" % (len(api.requests) - before),
                     len(api.requests) == before)
        self.notes.append(
            "Inventory (5): both plugins list the same %d Cloud servers (no labels, no private networks) of the stand-in API"
            " over http on 127.0.0.1, without a cache, in one environment: the venv's ansible-core, and hetzner.hcloud 5.4.0"
            " from the `%s` package with the libraries it imports. hetzner.hcloud.hcloud asks /locations once to check the"
            " token, pages through /servers (50 a page) with the hcloud library it vendors (over requests), makes an object"
            " of each server and gives its host ansible_host and 17 hcloud_* variables, in one group (hcloud), with the"
            " constructed options. ansinix.nixos.hetzner pages through /servers with ansible-core's own HTTP client (and"
            " /networks only when a server is in one), checks every name, label and address before it becomes a host name,"
            " a group or a variable, and gives each host ansible_host and 14 hetzner_* variables (nixos_configuration too"
            " when it carries the nixos label), in the groups hetzner, hetzner_cloud and one per location (and nixos),"
            " with the constructed options. Neither sets compose, groups or keyed_groups here." % (servers, HCLOUD_ANSIBLE))

    # -- 6: building a fleet ------------------------------------------------------------------------------------

    @staticmethod
    def write_costly(path, entries):
        """A generated Nix file, costly to parse and evaluate, as nixpkgs is; its value is a number."""
        with open(path, "w", encoding="utf-8") as f:
            f.write("# Generated by bench.py: a stand-in for nixpkgs.\nlet\n  pkgs = rec {\n")
            for i in range(entries):
                f.write('    p%d = { name = "p%d"; version = %d; deps = [ %s ]; };\n' % (i, i, i, "p%d" % (i - 1) if i else ""))
            f.write("  };\nin builtins.foldl' (sum: p: sum + p.version + builtins.length p.deps) 0 (builtins.attrValues pkgs)\n")

    def fleet_files(self, directory, seconds):
        """fleet.nix, whose configurations all use costly.nix, sized so that evaluating it takes about `seconds`."""
        costly = os.path.join(directory, "costly.nix")
        entries = 20000

        def evaluate():
            check(subprocess.run(["nix-instantiate", "--eval", "--strict", costly], env=NIX_ENV, capture_output=True, text=True,
                                 check=False), "evaluating the costly import")
        for _round in range(2):
            self.write_costly(costly, entries)
            entries = max(1000, int(entries * seconds / median_of(2, evaluate)))
        self.write_costly(costly, entries)
        cost = median_of(3, evaluate)
        fleet = os.path.join(directory, "fleet.nix")
        with open(fleet, "w", encoding="utf-8") as f:
            f.write("""{ args ? { } }:
let
  shared = import ./costly.nix;
  system = name: {
    config.system.build.toplevel = derivation {
      name = "nixos-system-${name}";
      system = builtins.currentSystem;
      builder = "/bin/sh";
      args = [ "-c" "echo ${name} ${toString shared} > $out" ];
    };
  };
  names = import ./names.nix;
in
{ nixosConfigurations = builtins.listToAttrs (map (name: { inherit name; value = system name; }) names); }
""")
        return fleet, cost

    def fleet_build(self, counts, rounds, seconds):
        """The role's build phase (--tags build) for fleets whose configurations share a costly import, against one
        `nix build` of all their systems. Warm store (both only evaluate and find the systems built), no eval cache."""
        with tempfile.TemporaryDirectory(prefix="ansinix-bench-fleet-") as tmp:
            fleet, cost = self.fleet_files(tmp, seconds)
            tasks, bases = {}, {}
            for count in counts:
                names = ["c%02d" % i for i in range(count)]
                with open(os.path.join(tmp, "names.nix"), "w", encoding="utf-8") as f:
                    f.write("[ %s ]\n" % " ".join('"%s"' % n for n in names))
                inventory = os.path.join(tmp, "fleet-%d.yml" % count)
                with open(inventory, "w", encoding="utf-8") as f:
                    f.write("nixos:\n  hosts:\n" + "".join("    %s: {ansible_connection: local}\n" % n for n in names))
                attrs = ["nixosConfigurations.%s.config.system.build.toplevel" % n for n in names]
                nix_build = ["nix", "--extra-experimental-features", "nix-command", "build", "--no-link", "--option", "eval-cache",
                             "false", "-f", fleet] + attrs
                runs, floors = [], []
                # After a first task, as the build task comes after the phase's first ones: a play's first task costs more.
                floor_play = ("- name: Floor\n  hosts: nixos\n  gather_facts: false\n  tasks:\n    - name: A fact\n"
                              "      ansible.builtin.set_fact:\n        noted: true\n    - name: One command\n"
                              "      ansible.builtin.command: 'true'\n      changed_when: false\n      run_once: true\n"
                              "      delegate_to: localhost\n")

                def floor():
                    floors.append(check(run_playbook(floor_play, args=["-i", inventory]), "the floor playbook").seconds("One command"))

                def baseline():
                    check(subprocess.run(nix_build, env=NIX_ENV, capture_output=True, text=True, check=False), "nix build")

                def phase():
                    runs.append(check(run_playbook(SITE, args=["-i", inventory, "-e", "nixos_file=" + fleet, "--tags", "build"]),
                                      "ansible-playbook --tags build"))
                baseline()
                phase()  # warm: both find every system built
                built = runs.pop().results(FLEET_BUILD)
                systems = list(built.values())[0]["out_paths"]
                b, whole = median_of(rounds, baseline), median_of(rounds, phase)
                median_of(rounds, floor)
                task = statistics.median(max(r.seconds(FLEET_BUILD).values()) for r in runs)
                one = statistics.median(max(f.values()) for f in floors)
                tasks[count], bases[count] = task, b
                self.row("6. build phase, %d configurations sharing a %.1f s import, vs one nix build of all" % (count, cost),
                         task / b, "<= 1.3", "build task %.1f s vs nix build %.1f s: %.2fx; less what any one task costs here (a"
                         " command on the controller: %.2f s), %.2fx; the whole ansible-playbook --tags build: %.1f s, %.2fx"
                         % (task, b, task / b, one, (task - one) / b, whole, whole / b), task / b <= 1.3)
                for name, system in systems.items():
                    link = os.path.join("/nix/var/nix/gcroots/ansinix", name)
                    if os.path.islink(link) and os.readlink(link) == system:
                        os.unlink(link)  # the bench's roots: nothing will deploy these systems
            if len(counts) > 1:
                small, large = counts[0], counts[-1]
                self.row("6. build phase from %d to %d configurations" % (small, large), tasks[large] / tasks[small], "-",
                         "build task %.1f s -> %.1f s (%.2fx) for %.0fx the configurations; nix build %.1f s -> %.1f s (%.2fx)"
                         % (tasks[small], tasks[large], tasks[large] / tasks[small], large / small, bases[small], bases[large],
                            bases[large] / bases[small]))
        self.notes.append("Fleet builds (6): a classic Nix file (nixos_file) whose configurations all import one generated file"
                          " that takes about %.1f s to evaluate, as nixpkgs would. Both sides find every system built (warm store)"
                          " and evaluate everything (no evaluation cache: `nix build -f` of a file has none, and it runs with"
                          " eval-cache false). The build task is the role's one nix_build of the batch, its time from its start to its"
                          " result; the whole run adds Ansible's start-up and the phase's other two tasks." % cost)

    # -- report -------------------------------------------------------------------------------------------------

    def write(self, path, started, elapsed):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
        rows = ["| %s | %s | %s | %s | %s |" % (what, "%.3g" % ratio, target, {True: "yes", False: "**no**", None: "-"}[met], detail)
                for what, ratio, target, detail, met in self.rows]
        notes = ["- " + n for n in self.notes]
        intro = [
            "Written by `./bench/run` on %s in %.0f s (%s). Every figure is a ratio against a baseline measured in"
            % (when, elapsed, self.describe()),
            "the same run, on test hosts of this machine (network and mount namespaces, real sshd and Nix).",
        ]
        if self.args.only and os.path.exists(path):
            # Only some rows were measured: they replace their own rows and note in the report, the others stay.
            # They go where the old rows of their section were.
            old_intro, old_rows, old_notes = self.read_report(path)
            section = ONLY[self.args.only]
            mine = tuple(row.split(" | ")[0] for row in rows) + ("| %s " % section,)
            at = next((i for i, r in enumerate(old_rows) if r.startswith(mine)), len(old_rows))
            kept = [r for r in old_rows if not r.startswith(mine)]
            rows = kept[:at] + rows + kept[at:]
            notes = [n for n in old_notes if not any(n[2:].startswith(m[2:20]) for m in notes)] + notes
            intro = [line for line in old_intro if not line.startswith("Rows of %s" % self.args.only)] + [
                "", "Rows of %s (%s) by `./bench/run --only %s` on %s in %.0f s (%s)." % (
                    self.args.only, section, self.args.only, when, elapsed, self.describe())]
        intro = [line for i, line in enumerate(intro) if line or (i and intro[i - 1])]  # one blank line between paragraphs
        lines = ["# Benchmark results", ""] + intro + ["", "| measurement | ratio | target | met | details |", "|---|---|---|---|---|"]
        lines += rows + ["", "## Notes", ""] + notes
        changes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "changes.md")
        if os.path.exists(changes):
            with open(changes, encoding="utf-8") as f:
                lines += ["", "## What each change bought", "", f.read().rstrip()]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    @staticmethod
    def read_report(path):
        """(intro lines, table rows, notes) of an earlier RESULTS.md."""
        with open(path, encoding="utf-8") as f:
            text = f.read().split("\n## What each change bought")[0]
        head, _sep, notes = text.partition("\n## Notes\n")
        lines = head.split("\n")
        table = next(i for i, line in enumerate(lines) if line.startswith("| measurement |"))
        intro = lines[2:table]
        while intro and not intro[-1]:
            intro.pop()
        return intro, [line for line in lines[table + 2:] if line.startswith("| ")], [n for n in notes.split("\n") if n.startswith("- ")]

    def describe(self):
        a = self.args
        load = "load average %.1f at the start, 2 cores shared with other work" % self.load
        if a.only == "inventory":
            return "%d Cloud servers, %d rounds; %s" % (a.servers, a.rounds, load)
        if a.only == "rerun":
            return "%d hosts, %d rounds; %s" % (a.hosts, a.rounds, load)
        if a.only:
            return "fleets of %s configurations, %d rounds; %s" % (", ".join(map(str, a.fleets)), a.rounds, load)
        return "%d hosts, closures of %s MiB, %d Cloud servers, fleets of %s configurations, %d rounds; %s" % (
            a.hosts, ", ".join(map(str, a.sizes)), a.servers, ", ".join(map(str, a.fleets)), a.rounds, load)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run: 2 hosts, a 4 MiB closure, 60 servers, 1 round")
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[128, 512])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fleets", type=lambda s: [int(x) for x in s.split(",")], default=[12, 48],
                        help="configurations of the fleet builds (6)")
    parser.add_argument("--import-seconds", type=float, default=1.0, help="what the fleets' shared import costs to evaluate")
    parser.add_argument("--only", choices=sorted(ONLY), help="measure only these rows (fleet-build: 6., inventory: 5., rerun: 2.), and merge"
                        " them into --output")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "bench", "RESULTS.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.sizes, args.servers, args.rounds, args.fleets, args.import_seconds = 2, [4], 60, 1, [2, 3], 0.1
    # What docs/howto.md ("Make it fast") recommends: a fork per host, no ssh compression.
    os.environ["ANSIBLE_FORKS"] = str(max(args.hosts, 5))
    os.environ["ANSIBLE_SSH_ARGS"] = "-o ControlMaster=auto -o ControlPersist=60s"
    bench = Bench(args)
    started = time.time()
    if args.only:
        if args.only == "fleet-build":
            bench.fleet_build(args.fleets, args.rounds, args.import_seconds)
        elif args.only == "rerun":
            bench.with_hosts(["b%d" % i for i in range(args.hosts)], lambda names: bench.no_change_rerun(names, args.rounds))
        else:
            bench.inventory(args.servers, args.rounds)
        bench.write(args.output, started, time.time() - started)
        print("wrote %s" % args.output)
        return 0

    def everything(names):
        bench.fresh_deploy(names, args.rounds)
        bench.no_change_rerun(names, args.rounds)
        bench.bytes_for_changed_package(names)
        bench.large_closure(args.sizes, args.rounds)
        bench.inventory(args.servers, args.rounds)
        bench.fleet_build(args.fleets, args.rounds, args.import_seconds)

    bench.with_hosts(["b%d" % i for i in range(args.hosts)], everything)
    bench.notes += [
        "The deploy runs use the role's defaults, magic rollback included: each switch waits for a confirmation over a"
        " new SSH connection, which the hand-written script does not do.",
        "Ansible runs with the settings docs/howto.md recommends: pipelining, SSH connection reuse (ControlPersist)"
        " without ssh compression, and a fork per host. Fresh deploys start cold, as the script does: the SSH masters"
        " an earlier run left are stopped first. The no-change rerun and its floor both reuse them.",
        "Copies (4): the throughput is the copy task's time from its start to its result, against nix-copy-closure's whole"
        " run; both connect, ask what is missing, send and import. The whole ansible-playbook run, Ansible's start-up"
        " included, is in the details. Memory is the proportional set size (PSS) summed over ansible-playbook and every"
        " process under it: summed RSS, in the details, counts every page a forked worker shares with its parent twice.",
    ]
    bench.write(args.output, started, time.time() - started)
    print("wrote %s" % args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
