"""The README's demo deploys the three hosts, and a second run changes nothing."""
import json
import os
import re
import subprocess

from ansinix_test import REPO_ROOT, docs
from ansinix_test.hosts import TestHosts

DEMO_PREFIX = (os.environ.get("ANSINIX_TESTHOSTS_PREFIX") or "ax")[:4] + "demo"
# The README's commands: ./scripts/demo.sh, and ./scripts/demo.sh stop.
DEPLOY, STOP = (docs.commands(b)[0] for b in docs.run_blocks("demo"))


def run_demo(command):
    env = dict(os.environ, ANSINIX_DEMO_PREFIX=DEMO_PREFIX)
    return subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def recap(stdout):
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(r"^(\w+)\s+: ok=(\d+)\s+changed=(\d+)", stdout, re.M)}


def empty_task_headers(stdout):
    """TASK headers with no host line under them (a task that ran for no host, printed anyway)."""
    return re.findall(r"^(TASK \[[^\n]*)\n+(?=TASK \[|PLAY RECAP|PLAY \[)", stdout, re.M)


def test_demo_deploys_then_changes_nothing():
    try:
        first = run_demo(DEPLOY)
        assert first.returncode == 0, first.stdout + first.stderr
        # A first run is clean: no warning from our code or the pinned tools, no empty task headers.
        assert not re.search(r"(?i)warning", first.stdout + first.stderr), first.stdout + first.stderr
        assert empty_task_headers(first.stdout) == [], first.stdout
        # Copy and switch change every host; the build may find its result already in the store.
        assert {h: c >= 2 for h, (_ok, c) in recap(first.stdout).items()} == {"mon": True, "web1": True, "web2": True}
        hosts = TestHosts(prefix=DEMO_PREFIX)
        for name, configuration in (("web1", "web"), ("web2", "web"), ("mon", "mon")):
            assert hosts[name].readlink("/run/current-system").endswith("-nixos-system-%s-26.11" % configuration)
            assert hosts[name].generation() == 2
        # examples/fleet's real NixOS modules, through the stand-in nixpkgs: units, packages, cross-host data.
        assert sorted(hosts["web1"].run("ls /run/ansinix-units").stdout.split()) == [
            "nginx.service", "prometheus-node-exporter.service", "sshd.service"]
        assert hosts["web1"].exists("/run/current-system/sw/bin/htop")
        scrape = json.loads(hosts["mon"].read_file("/etc/static/prometheus/prometheus.yml"))
        targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
        assert sorted(targets) == sorted("%s:9100" % hosts[h].address for h in ("web1", "web2"))
        second = run_demo(DEPLOY)
        assert second.returncode == 0, second.stdout + second.stderr
        assert {h: c for h, (_ok, c) in recap(second.stdout).items()} == {"mon": 0, "web1": 0, "web2": 0}
        assert hosts["web1"].generation() == 2
    finally:
        stop = run_demo(STOP)
        assert stop.returncode == 0
    assert not os.path.exists("/srv/ansinix-testhosts/" + DEMO_PREFIX)
