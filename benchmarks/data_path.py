"""Data path: Kaggle CSV parsing vs the tutorial's per-row `np.fromstring`, and the cached load.

python -m benchmarks.data_path DATA/realfaces/training.csv.gz

DATA: the folder `kfkd data` builds (docs/data.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from keypoints.data.kaggle import parse_pixels, read_csv


def tutorial_load(path: Path) -> np.ndarray:
    """The tutorial's `load`: pandas, then one `np.fromstring` per row."""
    frame = pd.read_csv(path)
    images = frame["Image"].apply(lambda im: np.fromstring(im, sep=" "))
    return np.vstack(images.values) / 255.0


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    column = pd.read_csv(args.csv)["Image"]
    assert (parse_pixels(column, "check").reshape(len(column), -1) == tutorial_load(args.csv) * 255).all()
    with tempfile.TemporaryDirectory() as cache:
        read_csv(args.csv, cache)  # fills the cache
        rows = [
            (
                "tutorial load: read_csv + per-row np.fromstring",
                median_time(lambda: tutorial_load(args.csv), args.repeats),
            ),
            (
                "kfkd read_csv, no cache (read, check, parse)",
                median_time(lambda: read_csv(args.csv, None), args.repeats),
            ),
            (
                "pixels only: per-row np.fromstring",
                median_time(
                    lambda: np.vstack(column.apply(lambda im: np.fromstring(im, sep=" ")).values), args.repeats
                ),
            ),
            ("pixels only: kfkd parse_pixels", median_time(lambda: parse_pixels(column, "bench"), args.repeats)),
            ("kfkd read_csv, cached", median_time(lambda: read_csv(args.csv, cache), args.repeats)),
        ]
    print(f"{args.csv}: {len(column)} images, median of {args.repeats}\n")
    print("| step | seconds |\n| --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    print(
        f"\nparsing speed-up, whole load: {rows[0][1] / rows[1][1]:.1f}x; pixels only: {rows[2][1] / rows[3][1]:.1f}x"
    )


if __name__ == "__main__":
    main()
