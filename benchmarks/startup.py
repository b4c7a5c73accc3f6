"""Start-up: seconds from launching `python train.py` to its first training step (data cached).

python -m benchmarks.startup data=kaggle data.dir=DATA/realfaces

DATA: the folder `kfkd data` builds (docs/data.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[1]


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
        str(ROOT / "train.py"),
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        startup(args.overrides, Path(out))  # parses and caches the data
        times = [startup(args.overrides, Path(out)) for _ in range(args.repeats)]
    print(
        f"start-up to first training step: median {statistics.median(times):.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
