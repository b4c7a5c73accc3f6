"""The mirror: where a dataset's labels put a mirrored face's keypoints, measured.

    kfkd mirror RUN [--data DIR] [--out FILE]

The tutorial's flip takes a mirrored face's keypoints to be its mirrored labels (x -> size - x, left
and right swapped). That holds only where the labels are mirror-symmetric. Labels drawn by people or
by a landmark model can lean one way; realfaces' sit 1-2.5 px off (RESULTS.md), so every flipped
training face teaches labels off by that much. A run trained *without* flips has learnt the labels'
habits and follows a face where it moves; asked for the mirror images of its own training faces, it
puts each keypoint where the labels would. The mean difference from the mirrored labels, per column,
is what conf/mirror holds and the flip adds (in training, and undone in flip TTA).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from keypoints.core import codec
from keypoints.core.errors import DataError
from keypoints.data.augment import Affine, mirror_targets
from keypoints.inference import runs as trained
from keypoints.inference.evaluate import labelled_faces
from keypoints.inference.submit import predict_columns


def offsets(
    predicted: np.ndarray, labels: np.ndarray, columns: list[str], flip_indices: list[list[int]], size: int
) -> dict[str, float]:
    """Per column of `columns`, the mean of `predicted` (pixels of faces of `size`, on the mirrored
    faces) minus the mirrored `labels` (pixels, mirrored as the flip mirrors them, with the run's
    `flip_indices`), over the faces where both exist; columns without any are left out."""
    mirrored = mirror_targets(torch.from_numpy(codec.to_targets(labels, size)), [tuple(p) for p in flip_indices])
    difference = predicted - codec.to_pixels(mirrored.numpy(), size)
    seen = ~np.isnan(difference)
    return {c: float(difference[seen[:, i], i].mean()) for i, c in enumerate(columns) if seen[:, i].any()}


def follows_shift(model: trained.Assembled, runs: list[trained.Run], x: torch.Tensor, px: float = 1.0) -> float:
    """How far the net's x predictions move, on average, when faces `x` move `px` to the right: near
    `px` where the net goes by what it sees, so that its offsets are the labels' habits; well below
    it where it leans on where keypoints usually are, and then the offsets measure that instead."""
    n = len(x)
    moved = Affine(0, 0, 0).apply(
        x,
        torch.zeros(n, 2),
        torch.ones(n, 2),
        torch.eye(2).expand(n, 2, 2),
        torch.tensor([px / codec.scale(x.shape[-1]), 0.0]).expand(n, 2),
    )[0]
    before, after = (predict_columns(model, runs, faces)[:, 0::2] for faces in (x, moved))
    return float(np.nanmean(after - before))


def measure(model: str | Path, data_dir: str | Path | None = None) -> tuple[dict[str, float], int, float]:
    """The mirror offsets (pixels by column) that the run `model`, trained without flips, finds on its
    training faces, how many faces they come from, and how far it follows a 1 px shift of them."""
    model_, runs = trained.load([model])
    if len(runs) != 1:
        raise DataError(f"{model}: {len(runs)} runs; expected one run (a run directory or checkpoint)")
    if "flip" in (runs[0].cfg.get("augment") or {}):
        raise DataError(
            f"{runs[0].dir}: trained with flips, so it learnt the mirror it was given; "
            f"measure with a run trained without them (e.g. augment=[affine,photometric])"
        )
    x, labels = labelled_faces(runs, None, data_dir, rows="train")
    run = runs[0].specialist
    columns = [model_.keypoint_set.columns.index(c) for c in run.columns]  # the set's -> the run's own, in its order
    found = offsets(
        predict_columns(model_, runs, x.flip(-1))[:, columns],
        labels[:, columns],
        run.columns,
        run.flip_indices,
        model_.size,
    )
    return found, len(x), follows_shift(model_, runs, x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kfkd mirror", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a run trained without flips (its directory or a checkpoint)")
    parser.add_argument("--data", metavar="DIR", help="the run's training.csv is here (default: its data.dir)")
    parser.add_argument("--out", metavar="FILE", help="write the conf/mirror YAML here (default: print it)")
    args = parser.parse_args(argv)
    try:
        if args.out and Path(args.out).exists():
            raise DataError(f"{args.out}: exists; give --out a new file")
        found, faces, follows = measure(args.model, args.data)
    except DataError as e:
        sys.exit(f"error: {str(e).splitlines()[0]}")
    command = " ".join(["kfkd mirror", args.model, *(["--data", args.data] if args.data else [])])
    text = (
        f"# Measured on {faces} training faces by `{command}` (keypoints/inference/mirror.py).\n"
        + OmegaConf.to_yaml({"offsets": {c: round(v, 2) for c, v in found.items()}})
    )
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    x, y = (
        np.array([v for c, v in found.items() if c.endswith("_x")]),
        np.array([v for c, v in found.items() if c.endswith("_y")]),
    )
    print(
        f"{faces} faces: mirrored labels are off by {x.mean():+.2f} px in x (mean; {x.min():+.2f} to {x.max():+.2f}), "
        f"{np.abs(y).mean():.2f} px in y (mean size); the net follows a 1 px shift of these faces by {follows:+.2f} px"
        + (f"; wrote {args.out}" if args.out else ""),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
