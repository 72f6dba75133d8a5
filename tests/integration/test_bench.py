"""The benchmark still runs (a tiny size). Its figures are never asserted here: RESULTS.md reports them."""
import os
import subprocess

from ansinix_test import REPO_ROOT


# The bench's test hosts, apart from those of the other tests and of a bench run by hand.
BENCH_ENV = dict(os.environ, ANSINIX_BENCH_PREFIX=(os.environ.get("ANSINIX_TESTHOSTS_PREFIX") or "ax")[:3] + "bench")


def test_benchmark_runs_and_reports_every_measurement(tmp_path):
    output = tmp_path / "RESULTS.md"
    proc = subprocess.run(["python", os.path.join(REPO_ROOT, "bench", "bench.py"), "--quick", "--output", str(output)],
                          capture_output=True, text=True, timeout=900, check=False, env=BENCH_ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = output.read_text()
    for measurement in ("1. fresh deploy", "2. no-change rerun", "2. the rerun's tasks, slowest host each", "3a. bytes sent", "3b. bytes sent",
                        "4. 4 MiB closure, method=stream", "4. 4 MiB closure, method=ssh", "4. controller peak memory",
                        "5. ansible-inventory --list, 60 Cloud servers, vs hetzner.hcloud.hcloud", "5. the plugins' part alone",
                        "5. the same listing vs a plain paginated fetch", "5. warm cache", "6. build phase, 2 configurations",
                        "6. build phase, 3 configurations", "6. build phase from 2 to 3 configurations"):
        assert "| " + measurement in report, measurement
    # The no-change rerun sends nothing and activates nothing, and a warm cache asks the API nothing.
    assert "0 NAR bytes sent, 0 activations" in report
    assert "| 5. warm cache: API requests | 0 |" in report


def run_only(tmp_path, only, old_rows):
    """`bench.py --only ONLY --quick` over an earlier report of these rows and one note: the report it leaves."""
    output = tmp_path / "RESULTS.md"
    output.write_text("# Benchmark results\n\nWritten by `./bench/run` earlier.\n\n| measurement | ratio | target | met | details |\n"
                      "|---|---|---|---|---|\n" + "".join("| %s | 2 | <= 1.3 | **no** | old |\n" % row for row in old_rows)
                      + "\n## Notes\n\n- An earlier note.\n")
    proc = subprocess.run(["python", os.path.join(REPO_ROOT, "bench", "bench.py"), "--only", only, "--quick", "--output", str(output)],
                          capture_output=True, text=True, timeout=900, check=False, env=BENCH_ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = output.read_text()
    assert "- An earlier note." in report and "by `./bench/run --only %s`" % only in report and "load average" in report
    return report


def test_fleet_build_rows_run_alone_and_keep_the_other_rows(tmp_path):
    report = run_only(tmp_path, "fleet-build", ["1. fresh deploy", "6. build phase, 9 configurations"])
    assert "| 1. fresh deploy | 2 | <= 1.3 | **no** | old |" in report
    assert "6. build phase, 9 configurations" not in report and "| 6. build phase, 3 configurations" in report


def test_inventory_rows_run_alone_against_hetzner_hcloud_in_their_place(tmp_path):
    report = run_only(tmp_path, "inventory", ["1. fresh deploy", "5. the same, less Ansible's own start-up", "6. build phase, 9 configurations"])
    rows = [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| ") and not line.startswith("| measurement")]
    # The new rows replace the old ones of 5, between 1 and 6; hetzner.hcloud listed all 60 servers (else the bench stops).
    assert rows == ["| 1. fresh deploy", "| 5. ansible-inventory --list, 60 Cloud servers, vs hetzner.hcloud.hcloud",
                    "| 5. the plugins' part alone: parsing the source, fetch included", "| 5. the same listing vs a plain paginated fetch",
                    "| 5. warm cache: API requests", "| 6. build phase, 9 configurations"], rows
    assert "| 5. warm cache: API requests | 0 |" in report and "- Inventory (5): both plugins" in report


def test_rerun_rows_run_alone_and_say_where_the_time_goes(tmp_path):
    report = run_only(tmp_path, "rerun", ["1. fresh deploy", "2. no-change rerun on 9 hosts", "3a. bytes sent"])
    rows = [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| ") and not line.startswith("| measurement")]
    assert rows == ["| 1. fresh deploy", "| 2. no-change rerun on 2 hosts", "| 2. the rerun's tasks, slowest host each",
                    "| 3a. bytes sent"], rows
    assert "0 NAR bytes sent, 0 activations" in report and "Switch to the new system" in report
