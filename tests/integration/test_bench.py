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
                        "5. ansible-inventory --list", "5. warm cache", "6. build phase, 2 configurations",
                        "6. build phase, 3 configurations", "6. build phase from 2 to 3 configurations"):
        assert "| " + measurement in report, measurement
    # The no-change rerun sends nothing and activates nothing, and a warm cache asks the API nothing.
    assert "0 NAR bytes sent, 0 activations" in report
    assert "| 5. warm cache: API requests | 0 |" in report


def test_fleet_build_rows_run_alone_and_keep_the_other_rows(tmp_path):
    output = tmp_path / "RESULTS.md"
    output.write_text("# Benchmark results\n\nWritten by `./bench/run` earlier.\n\n| measurement | ratio | target | met | details |\n"
                      "|---|---|---|---|---|\n| 1. fresh deploy | 2 | <= 2.0 | yes | x |\n| 6. build phase, 9 configurations | 9 | <= 1.3 | **no** | old |\n"
                      "\n## Notes\n\n- An earlier note.\n")
    proc = subprocess.run(["python", os.path.join(REPO_ROOT, "bench", "bench.py"), "--only", "fleet-build", "--quick", "--output",
                           str(output)], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = output.read_text()
    assert "| 1. fresh deploy | 2 | <= 2.0 | yes | x |" in report and "- An earlier note." in report
    assert "6. build phase, 9 configurations" not in report and "| 6. build phase, 3 configurations" in report
    assert "by `./bench/run --only fleet-build`" in report and "load average" in report
