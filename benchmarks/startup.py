"""Start-up: seconds from launching a command to its first words (`--help`, a mistake's one line) and,
given data, from launching `python train.py` to its first training step (data cached).

python -m benchmarks.startup --first-words --repeats 5            # help and mistakes only: no data needed
python -m benchmarks.startup data=kaggle data.dir=DATA/realfaces  # and the first training step

DATA: the folder `kfkd data` builds (docs/data.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

from keypoints.training.hardware import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
# What answers before torch is imported: its command line after `python` (DIR: a scratch folder), and its exit status.
FIRST_WORDS = {
    "python train.py --help": ([TRAIN, "--help"], 0),
    "kfkd --help": (["-m", "keypoints", "--help"], 0),
    "kfkd train --help": (["-m", "keypoints", "train", "--help"], 0),
    "a keypoint set's mistake (hydra.searchpath)": ([TRAIN, "hydra.searchpath=[file://DIR/sets]", "keypoints=typo"], 1),
    "a mistyped setting (trainer.max_epoch=3)": ([TRAIN, "trainer.max_epoch=3"], 1),
    "a mistyped option (net=cnnn)": ([TRAIN, "net=cnnn"], 1),
    "a missing data folder": ([TRAIN, "data=kaggle", "data.dir=DIR/nowhere"], 1),
    "a wrong keypoint count in annotations.json": ([TRAIN, "data=coco", "data.dir=DIR/coco"], 1),
}


class FirstStep(pl.Callback):
    """Writes the wall-clock time of the first training step to $KFKD_FIRST_STEP."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            Path(os.environ["KFKD_FIRST_STEP"]).write_text(repr(time.time()))


def startup(overrides: list[str], out: Path) -> float:
    stamp = out / "first_step"
    stamp.unlink(missing_ok=True)
    argv = [
        sys.executable,
        TRAIN,
        *overrides,
        f"hydra.run.dir={out}/run",
        "+callbacks.first_step._target_=benchmarks.startup.FirstStep",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
    ]
    start = time.time()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "KFKD_FIRST_STEP": str(stamp)})
    return float(stamp.read_text()) - start


def mistakes(folder: Path) -> None:
    """The files the mistakes of FIRST_WORDS read: a keypoint set whose mirror pair names a keypoint it
    lacks, and a COCO annotations.json whose face has one keypoint too few."""
    (folder / "sets" / "keypoints").mkdir(parents=True)
    (folder / "sets" / "keypoints" / "typo.yaml").write_text(
        "name: typo\nnames: [left_eye_center, right_eye_center]\n"
        "mirror_pairs: [[left_eye_center, right_eye]]\nnme: [left_eye_center, right_eye_center]\n"
    )
    names = ["left_eye_center", "right_eye_center"]
    (folder / "coco").mkdir()
    (folder / "coco" / "annotations.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1.png", "width": 96, "height": 96}],
                "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 96, 96], "keypoints": [30, 40, 2]}],
                "categories": [{"id": 1, "name": "face", "keypoints": names}],
            }
        )
    )


def first_words(command: list[str], status: int, folder: Path) -> float:
    """Seconds from launching `python COMMAND` to its exit."""
    start = time.time()
    proc = subprocess.run(python(command, folder), cwd=folder, capture_output=True, text=True)
    if proc.returncode != status:
        raise RuntimeError(
            f"{' '.join(proc.args)}: exit status {proc.returncode}, not {status}:\n{proc.stderr[-2000:]}"
        )
    return time.time() - start


def imports_torch(command: list[str], folder: Path) -> bool:
    """Whether `python COMMAND` imports torch (python -X importtime lists what it imports)."""
    proc = subprocess.run(python(["-X", "importtime", *command], folder), cwd=folder, capture_output=True, text=True)
    return any(line.rstrip().endswith("| torch") for line in proc.stderr.splitlines())


def python(command: list[str], folder: Path) -> list[str]:
    return [sys.executable, *(a.replace("DIR", str(folder)) for a in command)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-words", action="store_true", help="help and mistakes only")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_args()
    host = "AVX-512 BF16" if "avx512_bf16" in cpu_flags() else "AVX2"
    load = os.getloadavg()[0]  # other work on the host slows every command alike
    print(f"host: {host}, {os.cpu_count()} cores, load average {load:.1f}; medians of {args.repeats} runs")
    with tempfile.TemporaryDirectory() as scratch:
        mistakes(Path(scratch))
        for name, (command, status) in FIRST_WORDS.items():
            times = [first_words(command, status, Path(scratch)) for _ in range(args.repeats)]
            print(
                f"{name:<45} {statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}); "
                + ("imports torch" if imports_torch(command, Path(scratch)) else "without torch")
            )
    if args.first_words:
        return
    with tempfile.TemporaryDirectory() as out:
        startup(args.overrides, Path(out))  # parses and caches the data
        times = [startup(args.overrides, Path(out)) for _ in range(args.repeats)]
    print(
        f"start-up to first training step: median {statistics.median(times):.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
