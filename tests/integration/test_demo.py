"""The README's demo deploys the three hosts, and a second run changes nothing."""
import os
import re
import subprocess

from ansinix_test import REPO_ROOT
from ansinix_test.hosts import TestHosts

DEMO_PREFIX = (os.environ.get("ANSINIX_TESTHOSTS_PREFIX") or "ax")[:4] + "demo"


def run_demo(*args):
    env = dict(os.environ, ANSINIX_DEMO_PREFIX=DEMO_PREFIX)
    return subprocess.run(["python", "-m", "ansinix_test.demo"] + list(args), cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def recap(stdout):
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(r"^(\w+)\s+: ok=(\d+)\s+changed=(\d+)", stdout, re.M)}


def test_demo_deploys_then_changes_nothing():
    try:
        first = run_demo()
        assert first.returncode == 0, first.stdout + first.stderr
        # Copy and switch change every host; the build may find its result already in the store.
        assert {h: c >= 2 for h, (_ok, c) in recap(first.stdout).items()} == {"mon": True, "web1": True, "web2": True}
        hosts = TestHosts(prefix=DEMO_PREFIX)
        for name in ("web1", "web2", "mon"):
            assert hosts[name].readlink("/run/current-system").endswith("-nixos-system-%s-1" % name)
            assert hosts[name].generation() == 2
        targets = hosts["mon"].read_file("/etc/static/prometheus/targets.json")
        assert targets == '["%s:9100","%s:9100"]' % (hosts["web1"].address, hosts["web2"].address)
        second = run_demo()
        assert second.returncode == 0, second.stdout + second.stderr
        assert {h: c for h, (_ok, c) in recap(second.stdout).items()} == {"mon": 0, "web1": 0, "web2": 0}
        assert hosts["web1"].generation() == 2
    finally:
        stop = run_demo("stop")
        assert stop.returncode == 0
    assert not os.path.exists("/srv/ansinix-testhosts/" + DEMO_PREFIX)
