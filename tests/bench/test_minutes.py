"""benchmarks/minutes.py: the figure and table of RMSE against minutes, from finished runs."""

import json
import subprocess
import sys

from conftest import ROOT


def fake_run(directory, wall, rmse, precision):
    directory.mkdir()
    (directory / "metrics.json").write_text(json.dumps({"wall_time_s": wall, "valid_rmse_px": rmse, "epochs": 10}))
    (directory / "config.yaml").write_text(f"trainer:\n  precision: '{precision}'\n")
    return directory


def minutes(tmp_path, *recipes):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.minutes",
            "--reference",
            str(tmp_path / "a"),
            "--out",
            str(tmp_path / "fig.png"),
            *recipes,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_the_table_gives_each_runs_time_as_a_ratio_to_the_reference(tmp_path):
    a, b = fake_run(tmp_path / "a", 600, 1.7, "32"), fake_run(tmp_path / "b", 300, 1.9, "32")
    proc = minutes(tmp_path, f"old={a},{b}")
    assert proc.returncode == 0, proc.stderr
    assert f"| old | `{b}` | 10 | 5.0 | 0.50 | 1.900 |" in proc.stdout
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_runs_of_different_precisions_are_refused(tmp_path):
    a, b = fake_run(tmp_path / "a", 600, 1.7, "32"), fake_run(tmp_path / "b", 300, 1.9, "bf16-mixed")
    proc = minutes(tmp_path, f"old={a}", f"new={b}")
    assert proc.returncode != 0 and "different precisions ['32', 'bf16-mixed']" in proc.stderr
    assert not (tmp_path / "fig.png").exists()
    proc = minutes(tmp_path, f"new={tmp_path / 'missing'}")
    assert proc.returncode != 0 and "missing/metrics.json: not found" in proc.stderr
