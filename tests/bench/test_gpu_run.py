"""benchmarks/gpu/run.sh, the command a GPU machine gets one try at: its smoke mode runs every stage on
CPU with tiny sizes and writes the same four files, so it cannot rot between GPU runs; a command past
its cap or the deadline is stopped, its leftovers too, and the run goes on; the wheels' check names
what the GPU image would lack."""

import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from benchmarks.gpu import stages


def running(pid: int) -> bool:
    """Whether the process is alive: neither gone nor a zombie (an orphan waits to be reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gpu_run(tmp_path, budget: float) -> stages.GpuRun:
    return stages.GpuRun(
        tmp_path / "out",
        tmp_path / "scratch",
        stages.Settings(smoke=True),
        "abcd",
        budget,
        sys.executable,
        tmp_path / "no-wheels",
        None,
    )


def test_a_command_past_its_cap_is_stopped_with_what_it_started_and_the_next_one_runs(tmp_path):
    run = gpu_run(tmp_path, 100)
    pid_file = tmp_path / "child.pid"
    # A command whose child ignores SIGTERM: it is killed with its process group once the grace is over.
    stubborn = (
        f"import signal, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
        f"'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('started', flush=True); time.sleep(60)"
    )
    began = time.monotonic()
    result = run.command("stubborn", [sys.executable, "-c", stubborn], cap=3)
    assert result["status"] == "timeout" and time.monotonic() - began < 3 + run.s.grace + 5
    assert not running(int(pid_file.read_text()))
    assert run.command("next", [sys.executable, "-c", "print('next one ran')"], cap=30)["status"] == "ok"
    assert run.command("failing", [sys.executable, "-c", "raise SystemExit(3)"], cap=30)["detail"] == "exit status 3"
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "started" in log and "stubborn: past its cap of 3 s: stopping it (SIGTERM)" in log and "next one ran" in log


def test_the_deadline_stops_a_stage_and_skips_the_rest_with_the_files_written(tmp_path):
    run = gpu_run(tmp_path, 18)
    sleep = lambda cap: run.command("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], cap)
    run.stage("a", "sleeps", sleep)
    run.stage("b", "sleeps too", sleep)
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    assert figures["stages"]["a"]["status"] == "timeout"
    assert figures["stages"]["b"] == {"title": "sleeps too", "status": "skipped", "detail": "out of time"}
    assert time.monotonic() - run.start < 18


def make_wheel(directory, name, *requires):
    path = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            f"{name}-1.0.dist-info/METADATA",
            "\n".join(
                ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
            ),
        )
    return path


def test_the_wheels_check_names_what_neither_a_wheel_nor_the_image_provides(tmp_path):
    wheels = [
        make_wheel(
            tmp_path,
            "alembic",
            "SQLAlchemy>=2.0",
            "Mako",
            "tomli; python_version < '3.11'",
            "tzdata; extra == 'tz'",
            "typing-extensions>=4",
        ),
        make_wheel(tmp_path, "SQLAlchemy", "greenlet>=1; extra == 'asyncio'"),
    ]
    assert stages.missing_requirements(wheels, stages.IMAGE) == ["alembic-1.0-py3-none-any.whl needs Mako"]
    (tmp_path / "again").mkdir()
    wheels.append(make_wheel(tmp_path / "again", "sqlalchemy"))
    assert "two wheels of sqlalchemy" in stages.missing_requirements(wheels, stages.IMAGE)


def test_results_are_read_from_pytest_and_submit_evaluate(tmp_path):
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite><testcase name="a" time="1.5"/><testcase name="b" time="0.1">'
        '<skipped message="needs a CUDA GPU"/></testcase><testcase name="c"><failure message="boom"/></testcase>'
        "</testsuite></testsuites>"
    )
    found = stages.junit(tmp_path / "junit.xml")
    assert (found["tests"], found["passed"], found["failed"], found["skipped"]) == (3, 1, 1, 1)
    assert found["cases"][2] == {"test": "c", "outcome": "failed", "seconds": 0.0, "message": "boom"}
    assert stages.junit(tmp_path / "missing.xml") == {}
    table = (
        "                   values  rmse_px  nme_pct\nkeypoint\nleft_eye_center      20    2.500    3.000\n"
        "overall             300    3.125    4.250\nNME 4.250 % of the distance between ...\n"
    )
    assert stages.overall_rmse(table) == 3.125 and stages.overall_rmse("Traceback ...") is None


@pytest.mark.slow
def test_the_smoke_run_runs_every_stage_and_writes_its_four_files(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu" / "run.sh"),
            str(out),
            "--smoke",
            "--scratch",
            str(tmp_path / "scratch"),
            "--wheels",
            str(tmp_path / "no-wheels"),
        ],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert files == sorted(stages.FILES) and all((out / f).stat().st_size < 16 << 20 for f in files)
    figures = json.loads((out / "figures.json").read_text())
    environment = figures["environment"]
    assert environment["torch"] == torch.__version__
    assert environment["errors"] == {} and {"JoblibLauncher", "SlurmLauncher"} <= set(environment["launchers"])
    assert {k: v["status"] for k, v in figures["stages"].items()} == dict.fromkeys(["setup", "a", "b", "c", "d"], "ok")
    tests = figures["cuda_tests"]
    assert tests["tests"] > 10 and tests["skipped"] == tests["tests"]  # smoke: only the GPU ones, which skip on CPU
    for net in ("net2", "cnn_bn", "heatmap"):
        medians, peak = figures["throughput"][net]["median_img_per_s"], figures["throughput"][net]["fraction_of_peak"]
        assert set(medians) == {"kfkd", "hand", "tutorial"} and all(v > 0 for v in medians.values())
        assert all(0 < f < 1 for f in peak.values())
    fast = figures["fast"]
    assert fast["finished"] and fast["epochs"] == 2 and math.isfinite(fast["valid_rmse_px"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fast"]["epochs"] == 2
    for variant in ("packed", "one_by_one"):
        sweep = figures["specialists"][variant]
        assert sweep["finished"] and sweep["sweep_s"] > 0 and math.isfinite(sweep["evaluate_rmse_px"])
        assert (
            len(sweep["runs"]) == 3
            and "all" in sweep["runs"]
            and all(r["finished"] and r["epochs"] >= 1 for r in sweep["runs"].values())
        )
        assert all(
            metrics[f"specialists_{variant}/{name}"]["best_epoch"] == run["best_epoch"]
            for name, run in sweep["runs"].items()
        )
    for variant in ("packed", "one_by_one"):  # the smoke's two, each in its own run directory
        assert set(figures["specialists"][variant]["runs"]) == {"all", "0_eyes", "1_nose"}
    log = (out / "log.txt").read_text()
    assert all(f"=== stage {k}" in log for k in "abcd") and "cuda tests: ok" in log


@pytest.mark.slow
def test_a_run_cut_short_by_its_cap_reports_how_far_it_got(tiny_data, tmp_path):
    run = gpu_run(tmp_path, 200)
    directory = tmp_path / "scratch" / "long"
    result = run.command(
        "long",
        [
            sys.executable,
            str(ROOT / "train.py"),
            "data=kaggle",
            f"data.dir={tiny_data}",
            "net=cnn",
            "net.channels=[4,4,4]",
            "net.hidden=8",
            "trainer.max_epochs=100000",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={directory}",
            f"paths.cache_dir={tmp_path}/cache",
        ],
        cap=15,  # about 7 s to start on a busy 2-core host, then epochs of a fraction of a second
    )
    assert result["status"] == "timeout"
    (found,) = run.collect(directory, "long").values()  # TensorBoard's logs, read in the measured Python
    assert not found["finished"] and found["epochs"] >= 2 and 0 <= found["best_epoch"] < found["epochs"]
    assert math.isfinite(found["valid_rmse_px"]) and "long" not in run.metrics  # no metrics.json: stopped
    assert (directory / "checkpoints" / "best.ckpt").is_file()  # SIGTERM let it write its checkpoint
