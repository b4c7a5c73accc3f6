"""The GPU run's stages, each with its time cap, under one deadline: run by benchmarks/gpu/run.sh.

    benchmarks/gpu/run.sh [OUT] [--smoke] [--stages a,b,c,d] [--budget SECONDS]

setup: the carried wheels (.whl/) installed into a temporary folder on PYTHONPATH, the machine read
(GPU, driver, torch, CUDA, Lightning, Hydra). Then, in order of value:
  a. the CUDA tests (tests/training/test_cuda.py);
  b. throughput of net2, cnn_bn and heatmap: kfkd with and without CUDA graphs beside a hand loop,
     eager and as one CUDA graph, and the fraction of the GPU's bf16 peak (benchmarks/throughput.py);
  c. the fast preset once on realfaces, validated on unseen people;
  d. the tutorial's specialists recipe (net7, budgets 1e7/4e6, patience 200), packed first
     (`packed=true`: the six in one process, one step for all), then one by one, each timed whole,
     with each run's epochs and best epoch and `submit evaluate`'s RMSE; a sweep cut short by the
     deadline reports how far each run got.
A stage that fails is logged and the next one runs; a stage past its cap is stopped (SIGTERM: runs
keep their checkpoints and logs), and everything stops by the deadline (8 minutes). OUT (default
$OUT) receives four files, rewritten after every stage: log.txt, figures.json (every figure, with
the GPU, torch and CUDA), metrics.json (every run's metrics.json) and cuda_tests.xml.

This file imports only the standard library: it must report even where the packages fail to import.
`--smoke`: the same stages on CPU with tiny data, nets and epochs (tests/bench/test_gpu_run.py runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG_CAP, LOG_TOTAL = (
    2 << 20,
    12 << 20,
)  # bytes of log.txt for one command's output, and in all (files come back under 16 MiB)
FILES = ("log.txt", "figures.json", "metrics.json", "cuda_tests.xml")
# What the GPU image has of the wheels' requirements (the device library's KINDS.md, "Python packages
# already there"): the rest must travel in .whl/.
IMAGE = {
    "cloudpickle",
    "joblib",
    "markupsafe",
    "numpy",
    "packaging",
    "pyyaml",
    "tqdm",
    "typing-extensions",
    "torch",
    "pytorch-lightning",
    "lightning-utilities",
    "torchmetrics",
    "tensorboard",
    "pandas",
    "pillow",
    "opencv-python-headless",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "matplotlib",
    "pytest",
    "setuptools",
}
THROUGHPUT = {"net2": ["experiment=net2"], "cnn_bn": ["experiment=fast", "net=cnn_bn"], "heatmap": ["experiment=fast"]}
TINY_BACKBONE = ["net.backbone.stem=[8]", "net.backbone.channels=[8,16]", "net.backbone.blocks=[1,1]"]
TINY = {
    "net2": ["net.channels=[4,4,4]", "net.hidden=8"],
    "cnn_bn": ["net.channels=[4,4,4,4]", "net.hidden=8"],
    "heatmap": [*TINY_BACKBONE, "net.width=8"],
}


class Settings:
    """What the stages run: the real thing on a GPU, or tiny versions of it on a CPU (`smoke`)."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        # smoke: room for a cold first run on a 2-core AVX2 host in fp32, the slowest kind CI runs on
        self.budget = 240 if smoke else 480
        self.grace = 5 if smoke else 20  # a stopped command's time to write its checkpoints and logs, then SIGKILL
        self.evaluate = 30 if smoke else 60  # reading a sweep's runs and `kfkd evaluate` on them
        self.caps = (
            {"setup": 90, "a": 60, "b": 75, "c": 45, "d": None}
            if smoke
            else {"setup": 90, "a": 180, "b": 150, "c": 90, "d": None}
        )
        self.trainer = [] if smoke else ["trainer=gpu"]
        self.cuda_tests = ["-m", "cuda"] if smoke else []  # on CPU they skip; the rest of the file runs in the suite
        self.device = "cpu" if smoke else "cuda"
        # smoke: a 1024 x 1024 matmul peak (a 4096 one is half of each net's throughput command on a CPU)
        self.throughput = (
            ["--epochs", "2", "--repeats", "1", "--peak-size", "1024"] if smoke else ["--epochs", "6", "--repeats", "3"]
        )
        self.tiny = TINY if smoke else {net: [] for net in TINY}
        # smoke: no glibc-malloc subprocess in the CPU throughput, 2 epochs, budgets of a few epochs, two specialists
        self.throughput_extra = ["keep_freed_memory=false"] if smoke else []
        self.fast_extra = [*TINY["heatmap"], "trainer.max_epochs=2"] if smoke else []
        self.specialists_extra = (
            [
                *TINY["net2"],
                "epoch_budget.scratch=100",
                "epoch_budget.pretrained=40",
                'hydra.sweeper.params.specialist="eyes,nose"',
            ]
            if smoke
            else []
        )


class GpuRun:
    def __init__(
        self,
        out: Path,
        scratch: Path,
        settings: Settings,
        stages: str,
        budget: float,
        python: str,
        wheels: Path,
        data: Path | None,
    ):
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.out, self.scratch, self.s, self.stages, self.python = out, scratch, settings, stages, python
        self.wheels, self.data = wheels, data
        out.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "log.txt", "a", encoding="utf-8", errors="replace")
        self.figures = {
            "mode": "smoke (CPU, tiny)" if settings.smoke else "gpu",
            "command": sys.argv,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget,
            "commit": commit(),
            "stages": {},
        }
        self.metrics: dict[str, dict] = {}
        self._tails: dict[str, str] = {}
        self.logged = 0  # bytes of commands' output in log.txt
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }

    # --- output ---------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        stamped = f"[{time.monotonic() - self.start:6.1f}s] {line}"
        print(stamped, flush=True)
        self.log_file.write(stamped + "\n")
        self.log_file.flush()

    def save(self) -> None:
        """figures.json and metrics.json as they stand, each replaced whole."""
        self.figures["elapsed_s"] = round(time.monotonic() - self.start, 1)
        for name, content in (("figures.json", self.figures), ("metrics.json", self.metrics)):
            partial = self.out / f".{name}.tmp"
            partial.write_text(json.dumps(content, default=str, allow_nan=True, separators=(",", ":")))
            partial.replace(self.out / name)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # --- running a command ------------------------------------------------------------------------

    def command(self, name: str, argv: list[str], cap: float | None, stop=signal.SIGTERM) -> dict:
        """Run argv (in its own process group), its output into the log; stopped with `stop` at `cap`
        seconds or at the deadline, then killed `grace` seconds later. Returns its status and time."""
        room = self.left() - self.s.grace - 5  # what the deadline leaves, the stopping included
        limit = room if cap is None else min(cap, room)
        if room < 5:
            self.say(f"{name}: not run, out of time")
            return {"status": "skipped", "detail": "out of time", "seconds": 0}
        self.say(f"{name}: {' '.join(argv)}  (cap {limit:.0f} s)")
        began = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        reader = threading.Thread(target=self._copy_output, args=(name, proc.stdout), daemon=True)
        reader.start()
        stopped = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            stopped = True
            self.say(f"{name}: past its cap of {limit:.0f} s: stopping it ({signal.Signals(stop).name})")
            _signal_group(proc.pid, stop)
            try:
                proc.wait(timeout=self.s.grace)
            except subprocess.TimeoutExpired:
                pass
        _wait_group(proc.pid, self.s.grace if stopped else 2)  # children of a stopped process finish their writes
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_group(proc.pid, 5)  # gone, with their GPU memory, before the next command starts
        reader.join(timeout=5)
        seconds = round(time.monotonic() - began, 1)
        if stopped:
            result = {"status": "timeout", "detail": f"stopped at its cap of {limit:.0f} s", "seconds": seconds}
        elif proc.returncode:
            result = {"status": "failed", "detail": f"exit status {proc.returncode}", "seconds": seconds}
        else:
            result = {"status": "ok", "seconds": seconds}
        result["output_tail"] = self._tails.pop(name, "")
        self.say(
            f"{name}: {result['status']} in {seconds} s" + (f" ({result['detail']})" if "detail" in result else "")
        )
        return result

    def _copy_output(self, name: str, stream) -> None:
        written, cut, tail = 0, 0, deque(maxlen=60)
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            tail.append(line)
            sys.stdout.write(line)
            if written + len(line) <= LOG_CAP and self.logged + len(line) <= LOG_TOTAL:
                self.log_file.write(line)
                written += len(line)
                self.logged += len(line)
            else:
                cut += 1
        if cut:
            self.log_file.write(f"[{name}: {cut} lines left out of the log; its last lines:]\n{''.join(tail)}")
        self.log_file.flush()
        sys.stdout.flush()
        self._tails[name] = "".join(list(tail)[-15:])[-3000:]

    # --- the stages -------------------------------------------------------------------------------

    def stage(self, key: str, title: str, body) -> None:
        if key not in self.stages and key != "setup":
            self.figures["stages"][key] = {"title": title, "status": "skipped", "detail": "not chosen (--stages)"}
            return
        if self.left() < self.s.grace + 10:
            self.figures["stages"][key] = {"title": title, "status": "skipped", "detail": "out of time"}
            self.say(f"stage {key} ({title}): not run, out of time")
            self.save()
            return
        self.say(f"=== stage {key}: {title} ({self.left():.0f} s left)")
        began = time.monotonic()
        try:
            result = body(self.s.caps[key])
        except Exception as error:  # noqa: BLE001 - a broken stage is reported, the next one runs
            result = {"status": "failed", "detail": f"{type(error).__name__}: {error}"}
            self.say(f"stage {key} failed: {result['detail']}")
        if result.get("status") == "ok":
            result.pop("output_tail", None)
        result = {"title": title, **result, "seconds": round(time.monotonic() - began, 1)}
        self.figures["stages"][key] = result
        self.save()

    def setup(self, cap: float) -> dict:
        """Install the carried wheels; read the machine; in smoke mode, make the tiny data."""
        results = {}
        wheels = sorted(self.wheels.glob("*.whl")) if self.wheels.is_dir() else []
        if wheels:
            site = self.scratch / "site"
            results["install"] = self.command(
                "install",
                [
                    self.python,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--no-index",
                    "--no-deps",
                    "--no-compile",
                    "--no-cache-dir",
                    "--upgrade",
                    "--target",
                    str(site),
                    *map(str, wheels),
                ],
                cap / 2,
            )
            self.env["PYTHONPATH"] = os.pathsep.join(
                [str(ROOT), str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            self.figures["wheels"] = [w.name for w in wheels]
        else:
            self.say(f"no wheels in {self.wheels}: the installed packages are used")
        tiny = []
        if self.data is None:  # smoke: the probe also makes tiny synthetic faces
            self.data = self.scratch / "data"
            tiny = ["--tiny-data", str(self.data)]
        probe = self.command("probe", [self.python, str(Path(__file__)), "--probe", *tiny], 60)
        self.figures["environment"] = _last_json(probe.get("output_tail", "")) or {}
        results["probe"] = probe
        return _combined(results)

    def cuda_tests(self, cap: float) -> dict:
        xml = self.out / "cuda_tests.xml"
        # SIGINT: pytest stops as after Ctrl-C, still writing its summary and the JUnit file
        result = self.command(
            "cuda tests",
            [
                self.python,
                "-m",
                "pytest",
                "-v",
                "-p",
                "no:cacheprovider",
                "-rfEs",
                *self.s.cuda_tests,
                "tests/training/test_cuda.py",
                f"--junitxml={xml}",
            ],
            cap,
            stop=signal.SIGINT,
        )
        self.figures["cuda_tests"] = junit(xml)
        return result

    def throughput(self, cap: float) -> dict:
        figures, statuses = {}, {}
        for i, (net, overrides) in enumerate(THROUGHPUT.items()):
            share = (min(cap, self.left()) - sum(s["seconds"] for s in statuses.values())) / (len(THROUGHPUT) - i)
            path = self.scratch / f"throughput_{net}.json"
            statuses[net] = self.command(
                f"throughput {net}",
                [
                    self.python,
                    "-m",
                    "benchmarks.throughput",
                    "--device",
                    self.s.device,
                    *self.s.throughput,
                    "--json",
                    str(path),
                    *overrides,
                    *self.s.tiny[net],
                    *self.s.throughput_extra,
                    *self.data_overrides(),
                ],
                share,
            )
            if path.is_file():
                figures[net] = json.loads(path.read_text())
            self.figures["throughput"] = figures
            self.save()
        return _combined(statuses)

    def fast(self, cap: float) -> dict:
        run = self.scratch / "fast"
        result = self.command(
            "fast",
            [
                self.python,
                "train.py",
                "experiment=fast",
                *self.data_overrides(),
                f"data.groups={self.data}/training_people.csv",
                "mirror=realfaces",
                *self.s.trainer,
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={run}",
                *self.s.fast_extra,
            ],
            cap,
        )
        runs = self.collect(run, "fast")
        self.figures["fast"] = {"seconds": result["seconds"], **runs.get("fast", {})}
        return result

    def specialists(self, cap: float) -> dict:
        results, figures = {}, {}
        self.figures["specialists"] = figures
        # Packed first: its figure comes back even where the deadline stops the one-by-one sweep.
        for name, extra in [("packed", ["packed=true"]), ("one_by_one", [])]:
            sweep = self.scratch / f"specialists_{name}"
            # The sweep leaves time to read its runs and evaluate them, whenever it is stopped.
            cap = self.left() - self.s.grace - 5 - self.s.evaluate
            if cap < 15:
                results[name] = figures[name] = {"status": "skipped", "detail": "out of time"}
                self.say(f"specialists {name}: not run, out of time")
                continue
            result = self.command(
                f"specialists {name}",
                [
                    self.python,
                    "-m",
                    "keypoints",
                    "specialists",
                    "experiment=specialists",
                    *self.data_overrides(),
                    *self.s.trainer,
                    "trainer.enable_progress_bar=false",
                    f"hydra.sweep.dir={sweep}",
                    *extra,
                    *self.s.specialists_extra,
                ],
                cap,
            )
            figures[name] = {
                "sweep_s": result["seconds"],
                "finished": result["status"] == "ok",
                "runs": self.collect(sweep, f"specialists_{name}"),
            }
            # The runs with a checkpoint (a run stopped in its first epoch has none): the columns of those
            # that finished, or the best epochs of those cut short.
            trained = sorted(str(c.parent.parent) for c in sweep.glob("*/checkpoints/best.ckpt"))
            if trained:
                evaluated = self.command(
                    f"evaluate {name}", [self.python, "-m", "keypoints", "evaluate", *trained], self.s.evaluate - 5
                )
                figures[name]["evaluate_rmse_px"] = overall_rmse(evaluated.get("output_tail", ""))
                figures[name]["evaluated_runs"] = [Path(t).name for t in trained]
                result = _combined({"sweep": result, "evaluate": evaluated})
            results[name] = result
            self.save()
        return _combined(results)

    def data_overrides(self) -> list[str]:
        return ["data=kaggle", f"data.dir={self.data}", f"paths.cache_dir={self.scratch / 'cache'}"]

    def collect(self, directory: Path, prefix: str) -> dict:
        """Each run under `directory` (a run or a sweep): its metrics.json into metrics.json, and the
        figures: epochs, best epoch, valid RMSE, wall time; for a run cut short, its TensorBoard logs'."""
        found = collect(directory)
        if any(not run["finished"] for run in found.values()):  # TensorBoard's reader, in the measured Python
            try:
                proc = subprocess.run(
                    [self.python, str(Path(__file__)), "--collect", str(directory)],
                    cwd=ROOT,
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=max(10, min(60, self.left())),
                )
                found = _last_json(proc.stdout) or found
                if proc.returncode:
                    self.say(f"collect {directory}: failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
            except subprocess.TimeoutExpired:
                self.say(f"collect {directory}: reading the TensorBoard logs took too long")
        runs = {}
        for name, run in found.items():
            key = prefix if name == "." else f"{prefix}/{name}"
            if run.get("metrics"):
                self.metrics[key] = run["metrics"]
            runs[name if name != "." else prefix] = {k: v for k, v in run.items() if k != "metrics"}
        return runs

    def main(self) -> int:
        self.say(
            f"kfkd GPU run ({self.figures['mode']}): out {self.out}, scratch {self.scratch}, "
            f"budget {self.deadline - self.start:.0f} s, stages {self.stages}"
        )
        self.save()
        self.stage("setup", "wheels, machine", self.setup)
        self.stage("a", "CUDA tests", self.cuda_tests)
        self.stage("b", "throughput against a hand loop and the peak", self.throughput)
        self.stage("c", "the fast preset on realfaces, unseen people", self.fast)
        self.stage("d", "the tutorial's specialists recipe, packed then one by one", self.specialists)
        self.save()
        self.summary()
        bad = [k for k, v in self.figures["stages"].items() if v["status"] in ("failed", "timeout")]
        return 1 if bad else 0

    def summary(self) -> None:
        """The short table the device tool's output tail shows."""
        f = self.figures
        env = f.get("environment", {})
        self.say(
            f"device: {env.get('gpu') or 'no GPU'}; torch {env.get('torch')} (CUDA {env.get('cuda')}), "
            f"Lightning {env.get('lightning')}; {f['elapsed_s']} s of {f['budget_s']:.0f}"
        )
        for key, stage in f["stages"].items():
            self.say(
                f"  {key:5s} {stage['status']:8s} {stage.get('seconds', 0):6.1f} s  {stage.get('title', '')}"
                + (f"  ({stage['detail']})" if stage.get("detail") else "")
            )
        tests = f.get("cuda_tests")
        if tests:
            self.say(
                f"  cuda tests: {tests.get('passed')} passed, {tests.get('failed')} failed, "
                f"{tests.get('skipped')} skipped"
            )
        for net, t in f.get("throughput", {}).items():
            self.say(
                f"  {net}: "
                + ", ".join(
                    f"{k} {v:.0f} img/s ({t['fraction_of_peak'][k]:.1%})" for k, v in t["median_img_per_s"].items()
                )
            )
        if "fast" in f:
            self.say(f"  fast: {f['fast']}")
        for name, sweep in f.get("specialists", {}).items():
            self.say(f"  specialists {name}: " + json.dumps({k: v for k, v in sweep.items() if k != "runs"}))
        self.say(f"files: {', '.join(p.name for p in sorted(self.out.iterdir()) if p.name in FILES)} in {self.out}")


# --- helpers: process groups, results ----------------------------------------------------------------


def _signal_group(pid: int, sig) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group(pid: int, seconds: float) -> None:
    """Until no process of the group is alive (zombies, which wait to be reaped, are not), at most `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and _alive_in_group(pid):
        time.sleep(0.2)


def _alive_in_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return not Path("/proc/self/stat").exists()  # no /proc: trust killpg


def _combined(parts: dict[str, dict]) -> dict:
    """One status for several commands: the first that was not ok, else ok."""
    worst = next((p for p in parts.values() if p["status"] not in ("ok", "skipped")), None)
    status = worst["status"] if worst else ("ok" if any(p["status"] == "ok" for p in parts.values()) else "skipped")
    detail = "; ".join(
        f"{k}: {p['status']}" + (f" ({p['detail']})" if p.get("detail") else "")
        for k, p in parts.items()
        if p["status"] != "ok"
    )
    return {
        "status": status,
        **({"detail": detail} if detail else {}),
        "steps": {
            k: {x: y for x, y in p.items() if x != "output_tail" or p["status"] != "ok"} for k, p in parts.items()
        },
    }


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def junit(path: Path) -> dict:
    """Counts and failures from pytest's JUnit XML; {} where there is none (pytest killed)."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "").strip()[:500]
                break
        cases.append(
            {
                "test": case.get("name"),
                "outcome": outcome,
                "seconds": float(case.get("time", 0)),
                **({"message": message} if outcome != "passed" else {}),
            }
        )
    count = lambda o: sum(c["outcome"] == o for c in cases)
    return {
        "tests": len(cases),
        "passed": count("passed"),
        "failed": count("failed") + count("error"),
        "skipped": count("skipped"),
        "cases": cases,
    }


def overall_rmse(table: str) -> float | None:
    """The overall RMSE from `submit evaluate`'s table (its columns: values, rmse_px, nme_pct)."""
    match = re.search(r"^overall\s+\d+\s+([0-9.]+|nan)\s", table + "\n", re.MULTILINE)
    return float(match.group(1)) if match else None


def commit() -> str | None:
    """The checkout's commit: git's where it is there, else what prepare.sh wrote down."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            return head.stdout.strip() + (" (with changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    noted = ROOT / ".data" / "commit.txt"
    return noted.read_text().strip() if noted.is_file() else None


# --- modes run in the measured Python: the machine, the runs, the wheels ----------------------------


def probe() -> dict:
    """The machine and its packages, as the runs will see them; what fails to import is named, not fatal."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version(), "host": platform.node(), "cpus": os.cpu_count(), "errors": {}}
    for name in (
        "torch",
        "pytorch-lightning",
        "torchmetrics",
        "hydra-core",
        "omegaconf",
        "optuna",
        "submitit",
        "numpy",
        "onnxruntime",
        "onnxscript",
        "tensorboard",
    ):
        try:
            found[{"pytorch-lightning": "lightning", "hydra-core": "hydra"}.get(name, name)] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        import torch

        found["cuda"], found["cudnn"] = torch.version.cuda, torch.backends.cudnn.version()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            found.update(
                gpu=props.name,
                gpus=torch.cuda.device_count(),
                capability=f"{props.major}.{props.minor}",
                gpu_memory_gib=round(props.total_memory / 2**30, 1),
                multiprocessors=props.multi_processor_count,
                bf16=torch.cuda.is_bf16_supported(),
            )
            try:
                found["driver"] = (
                    subprocess.run(
                        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                        capture_output=True,
                        text=True,
                        timeout=20,
                    ).stdout.strip()
                    or None
                )
            except (OSError, subprocess.SubprocessError):
                found["driver"] = None
    except Exception as error:  # noqa: BLE001
        found["errors"]["torch"] = f"{type(error).__name__}: {error}"
    try:
        from hydra.core.plugins import Plugins
        from hydra.plugins.launcher import Launcher

        import keypoints.training.fit  # noqa: F401  everything a run imports

        found["launchers"] = sorted(p.__name__ for p in Plugins.instance().discover(Launcher))
    except Exception as error:  # noqa: BLE001
        found["errors"]["kfkd"] = f"{type(error).__name__}: {error}"
    return found


def tiny_data(directory: Path) -> None:
    """The smoke run's data: 80 synthetic faces, with a person (four rows each) for the split by people."""
    from keypoints.data import synthetic

    synthetic.generate(directory, n_train=80, n_test=12, seed=1)
    (directory / "training_people.csv").write_text("row,person\n" + "".join(f"{i},{i // 4}\n" for i in range(80)))


def collect(directory: Path, events: bool = False) -> dict:
    """Every run in `directory` (itself, or the run directories of a sweep): its metrics.json, or for a
    run cut short, with `events`, how far its TensorBoard logs got."""
    runs = {}
    configs = sorted(directory.glob("config.yaml")) + sorted(directory.glob("*/config.yaml"))
    for run in (c.parent for c in configs if not c.parent.name.startswith(".")):  # not Hydra's .hydra/
        name = "." if run == directory else run.name
        metrics = run / "metrics.json"
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            runs[name] = {
                "finished": True,
                "epochs": m["epochs"],
                "best_epoch": m["best_epoch"],
                "valid_rmse_px": m["valid_rmse_px"],
                "wall_time_s": m["wall_time_s"],
                "n_train": m.get("n_train"),
                "metrics": m,
            }
            continue
        if not events:
            runs[name] = {"finished": False}
            continue
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        losses = [e.value for e in events.Scalars("valid_loss")] if "valid_loss" in events.Tags()["scalars"] else []
        finite = [v for v in losses if math.isfinite(v)]
        best = losses.index(min(finite)) if finite else None
        runs[name] = {
            "finished": False,
            "epochs": len(losses),
            "best_epoch": best,
            "valid_rmse_px": math.sqrt(losses[best]) * 48 if best is not None else None,
        }
    return runs


def missing_requirements(wheels: list[Path], image: set[str]) -> list[str]:
    """The wheels' requirements (for CPython 3.12 on Linux x86-64) that neither another wheel nor the
    image provides: each would fail an import on the GPU machine."""
    import zipfile
    from email.parser import Parser

    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

    environment = {
        "python_version": "3.12",
        "python_full_version": "3.12.3",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    metadata = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            metadata[wheel] = Parser().parsestr(z.read(name).decode())
    provided = {canonicalize_name(m["Name"]) for m in metadata.values()} | {canonicalize_name(n) for n in image}
    missing = []
    for wheel, meta in metadata.items():
        for line in meta.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            if canonicalize_name(requirement.name) not in provided:
                missing.append(f"{wheel.name} needs {requirement}")
    names = [canonicalize_name(m["Name"]) for m in metadata.values()]
    missing += [f"two wheels of {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out", nargs="?", help="the folder for the four result files (default: $OUT, else outputs/gpu/<time>)"
    )
    parser.add_argument("--smoke", action="store_true", help="on CPU, tiny data, nets and epochs")
    parser.add_argument("--stages", default="abcd", help="which of the stages a, b, c, d to run (default all)")
    parser.add_argument("--budget", type=float, help="seconds for everything (default 480; smoke 240)")
    parser.add_argument("--scratch", help="the folder for runs and data (default outputs/gpu/<time>/scratch)")
    parser.add_argument("--data", help="realfaces (default .data/realfaces, which prepare.sh fills)")
    parser.add_argument("--wheels", default=str(ROOT / ".whl"), help="the wheels to install first")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tiny-data", help=argparse.SUPPRESS)
    parser.add_argument("--collect", help=argparse.SUPPRESS)
    parser.add_argument("--check-wheels", help="list what the wheels in this folder need and nothing provides")
    args = parser.parse_args(argv)
    if args.probe:
        if args.tiny_data:
            tiny_data(Path(args.tiny_data))
        print(json.dumps(probe()))
        return 0
    if args.collect:
        print(json.dumps(collect(Path(args.collect), events=True), allow_nan=True))
        return 0
    if args.check_wheels:
        missing = missing_requirements(sorted(Path(args.check_wheels).glob("*.whl")), IMAGE)
        print("\n".join(missing) or "every requirement is met by a wheel or by the GPU image")
        return 1 if missing else 0
    settings = Settings(args.smoke)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or os.environ.get("OUT") or ROOT / "outputs" / "gpu" / stamp).absolute()
    scratch = Path(args.scratch or (ROOT / "outputs" / "gpu" / stamp / "scratch")).absolute()
    if scratch.is_relative_to(out):
        sys.exit(f"error: --scratch {scratch} lies inside the output folder {out}, which may hold only the results")
    data = Path(args.data).absolute() if args.data else (None if args.smoke else ROOT / ".data" / "realfaces")
    run = GpuRun(
        out, scratch, settings, args.stages, args.budget or settings.budget, sys.executable, Path(args.wheels), data
    )
    if data is not None and not (data / "training.csv.gz").is_file() and not (data / "training.csv").is_file():
        run.say(
            f"warning: {data} has no training.csv: stages c and d will fail (benchmarks/gpu/prepare.sh copies realfaces)"
        )

    def stopped(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stopped)  # e.g. run.sh's own timeout: what was measured is still written
    try:
        return run.main()
    except BaseException as error:  # noqa: BLE001 - the driver's own failure: keep what it has, say why
        run.figures["driver_error"] = f"{type(error).__name__}: {error}"
        run.say(f"the run itself stopped: {traceback.format_exc()}")
        run.save()
        return 1


if __name__ == "__main__":
    sys.exit(main())
