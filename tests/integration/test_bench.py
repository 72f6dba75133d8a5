"""The benchmark still runs (a tiny size). Its figures are never asserted here: RESULTS.md reports them."""
import os
import subprocess

from ansinix_test import REPO_ROOT


def test_benchmark_runs_and_reports_every_measurement(tmp_path):
    output = tmp_path / "RESULTS.md"
    env = dict(os.environ, ANSINIX_BENCH_PREFIX=(os.environ.get("ANSINIX_TESTHOSTS_PREFIX") or "ax")[:3] + "bench")
    proc = subprocess.run(["python", os.path.join(REPO_ROOT, "bench", "bench.py"), "--quick", "--output", str(output)],
                          capture_output=True, text=True, timeout=900, check=False, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = output.read_text()
    for measurement in ("1. fresh deploy", "2. no-change rerun", "3a. bytes sent", "3b. bytes sent",
                        "4. 4 MiB closure, method=stream", "4. 4 MiB closure, method=ssh", "4. controller peak memory",
                        "5. ansible-inventory --list", "5. warm cache"):
        assert "| " + measurement in report, measurement
    # The no-change rerun sends nothing and activates nothing, and a warm cache asks the API nothing.
    assert "0 NAR bytes sent, 0 activations" in report
    assert "| 5. warm cache: API requests | 0 |" in report
