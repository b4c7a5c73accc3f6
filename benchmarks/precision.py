"""Accuracy of the fast default: final valid RMSE of bf16-mixed vs fp32, same seed and epochs.

python -m benchmarks.precision data=kaggle data.dir=DATA/realfaces trainer.max_epochs=30

DATA: the folder `kfkd data` builds (docs/data.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(overrides: list[str], out: Path) -> dict:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *overrides,
            f"hydra.run.dir={out}",
            "trainer.enable_progress_bar=false",
        ],
        check=True,
        capture_output=True,
    )
    return json.loads((out / "metrics.json").read_text())


def main():
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as out:
        metrics = {p: run([*overrides, f"trainer.precision={p}"], Path(out) / p) for p in ("32", "bf16-mixed")}
    print(
        f"overrides: {' '.join(overrides)}\n\n| precision | valid RMSE (px) | best epoch | wall time (s) |\n| --- | --- | --- | --- |"
    )
    for p, m in metrics.items():
        print(f"| {p} | {m['valid_rmse_px']:.3f} | {m['best_epoch']} | {m['wall_time_s']:.0f} |")
    ratio = metrics["bf16-mixed"]["valid_rmse_px"] / metrics["32"]["valid_rmse_px"]
    print(f"\nbf16-mixed / fp32 RMSE: {ratio:.3f} ({ratio - 1:+.1%})")


if __name__ == "__main__":
    main()
