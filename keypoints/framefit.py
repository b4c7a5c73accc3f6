"""Learn how a face finder's box maps to Kaggle's framing, from labelled faces; write conf/framing.yaml.

    python -m keypoints.framefit [--data ../shared/data/realfaces] [--exclude ../shared/data/photos/keypoints.csv]

The target frame of a face is the one that puts its anchor keypoints (conf/detect.yaml's `anchors`: eye
centres, bottom lip) where they sit on average in realfaces' training faces (`canonical`). The finder of conf/detect.yaml is
run on every training face (upscaled and padded with its edge pixels, as the faces were cut from
their photos) of the people not excluded; each found box gives the frame's centre and side as
fractions of the box, and their medians are the map (`box_to_frame`). Rows of the excluded people
(by default the shared photos' people, which the photos benchmark scores) are not used.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
import yaml

from keypoints import framing

ROOT = Path(__file__).resolve().parents[1]
FRAMING = ROOT / "conf" / "framing.yaml"
UPSCALE = 3  # each face is padded by half its side all round, then upscaled: 96x96 becomes 576x576


def anchor_points(rows: pd.DataFrame, anchors: list[str]) -> np.ndarray:
    """The anchors' (x, y) of every row: (N, len(anchors), 2)."""
    return rows[[f"{a}_{axis}" for a in anchors for axis in "xy"]].to_numpy(np.float64).reshape(len(rows), -1, 2)


def box_ratios(box: np.ndarray, frame: framing.Frame) -> np.ndarray:
    """The frame as fractions of the box: centre x of its width, centre y of its height, side of its side."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    return np.array([(frame.cx - left) / w, (frame.cy - top) / h, frame.size / np.sqrt(w * h)])


def face_in(boxes: np.ndarray, point: np.ndarray) -> int | None:
    """The box holding `point` (a face's eye midpoint), nearest by centre where several do; None if none."""
    inside = [i for i, (l, t, r, b) in enumerate(boxes) if l <= point[0] < r and t <= point[1] < b]
    if not inside:
        return None
    return min(inside, key=lambda i: np.hypot(*(boxes[i, :2] + boxes[i, 2:] - 2 * point)))


def training_faces(data: Path, exclude: Path | None) -> tuple[pd.DataFrame, np.ndarray]:
    """realfaces' training rows (keypoints, and images as (N, size, size) uint8: 96), the excluded
    people's left out."""
    rows = pd.read_csv(data / "training.csv.gz")
    if exclude is not None:
        people = pd.read_csv(data / "training_people.csv")["person"].to_numpy()
        rows = rows[~np.isin(people, pd.read_csv(exclude)["person"].to_numpy())]
    images = np.stack([np.array(s.split(), np.uint8) for s in rows["Image"]])
    size = math.isqrt(images.shape[1])
    return rows.drop(columns="Image"), images.reshape(-1, size, size)


def labelled_anchors(rows: pd.DataFrame, anchors: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The anchors of the rows that have them all (an anchor that left the 96x96 face is unlabelled),
    and which rows those are."""
    points = anchor_points(rows, anchors)
    labelled = ~np.isnan(points).any((1, 2))
    return points[labelled], labelled


def as_photo(face: np.ndarray) -> np.ndarray:
    """A size x size uint8 face as the finder sees a photo: padded with its edge pixels, as the faces
    were cut from their photos, and upscaled; a point of the face lands on `in_photo(point, size)`."""
    size = face.shape[0]
    return np.asarray(Image.fromarray(np.pad(face, size // 2, mode="edge")).resize(
        ((size + 2 * (size // 2)) * UPSCALE,) * 2, Image.Resampling.BILINEAR))


def in_photo(points: np.ndarray, size: int) -> np.ndarray:
    """Points (..., 2) of a size x size face, in the pixels of its `as_photo`."""
    return (np.asarray(points) + size // 2) * UPSCALE


def fit(finder, rows: pd.DataFrame, images: np.ndarray, anchors: list[str]) -> tuple[dict, dict, dict]:
    """canonical anchor positions, the box-to-frame map (medians), the faces' size they are in, and
    how the fit went."""
    points, labelled = labelled_anchors(rows, anchors)
    images = images[labelled]
    canonical = points.mean(0)
    ratios = []
    size = images.shape[-1]
    for face, pts in zip(images, points):
        big, pts_big = as_photo(face), in_photo(pts, size)
        boxes = finder(big)
        found = face_in(boxes, pts_big.mean(0))
        if found is not None:
            ratios.append(box_ratios(boxes[found], framing.from_points(pts_big, canonical, False, size)))
    ratios = np.array(ratios)
    median = np.median(ratios, 0)
    box_to_frame = {"x": float(median[0]), "y": float(median[1]), "size": float(median[2])}
    spread = (np.percentile(ratios, 75, 0) - np.percentile(ratios, 25, 0)).round(4).tolist()
    return ({a: [round(float(v), 3) for v in p] for a, p in zip(anchors, canonical)},
            {k: round(v, 4) for k, v in box_to_frame.items()},
            size, {"faces": len(images), "found": len(ratios),
             "interquartile_range": dict(zip("xy", spread[:2]), size=spread[2])})


def main(argv: list[str] | None = None) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(prog="python -m keypoints.framefit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/realfaces"), help="realfaces' folder")
    parser.add_argument("--exclude", type=Path, default=Path("../shared/data/photos/keypoints.csv"),
                        help="a CSV with a `person` column: people left out of the fit")
    parser.add_argument("--out", type=Path, default=FRAMING)
    args = parser.parse_args(argv)
    detect = OmegaConf.load(ROOT / "conf" / "detect.yaml")
    try:
        rows, images = training_faces(args.data, args.exclude)
    except (OSError, KeyError) as e:
        sys.exit(f"error: {args.data}: cannot read realfaces' training.csv.gz and training_people.csv ({e})")
    canonical, box_to_frame, size, stats = fit(instantiate(detect.finder), rows, images, list(detect.anchors))
    header = (f"# Written by `python -m keypoints.framefit --data {args.data} --exclude {args.exclude}`: do not edit.\n"
              f"# canonical: where the anchor keypoints sit on average in the training faces (size x size pixels);\n"
              f"# box_to_frame: the frame's centre (x of the box's width, y of its height, from its top-left\n"
              f"# corner) and side (of the box's side), medians over the training faces the finder found.\n")
    body = {"finder": OmegaConf.to_container(detect.finder), "size": size, "canonical": canonical,
            "box_to_frame": box_to_frame, "fit": stats}
    args.out.write_text(header + yaml.safe_dump(body, sort_keys=False))
    print(f"wrote {args.out}: {box_to_frame}, {stats}")


if __name__ == "__main__":
    main()
