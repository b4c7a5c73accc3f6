"""Learn how a face's box maps to its frame, from labelled faces: the face finder's map that detect
frames faces with, and the same medians for the boxes of COCO annotations (keypoints.data.coco).

    kfkd framefit --data DATA/realfaces [--exclude PEOPLE.csv]
    kfkd framefit --run RUN

The target frame of a face is the one that puts its anchor keypoints (the keypoint set's `anchors`) where
they sit on average in the training faces (`canonical`). The finder of conf/detect.yaml is run on
every training photo; each found box gives the frame's centre and side as fractions of the box, and
their medians are the map (`box_to_frame`).

- Without --run, for models trained on Kaggle-format crops (realfaces), into conf/framing.yaml: the
  faces are realfaces' 96x96 training faces, each upscaled and padded with its edge pixels, as the
  faces were cut from their photos; `canonical` is the mean of kaggle15's anchors in them. Rows of the
  excluded people (by default the shared photos' people, which the photos benchmark scores) are not used.
- With --run, for a run trained on COCO data, into RUN/framing.yaml: its own training photos, where its
  training faces' anchors sit in its crops. Training writes it at the end of the run; refit it after
  changing conf/detect.yaml's finder (detect refuses a fit made for another finder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from keypoints.core.errors import DataError
from keypoints.core.paths import DETECT, FRAMING
from keypoints.data import framing
from keypoints.inference.runs import RUN_FIT
from keypoints.training.callbacks import RunEnd

log = logging.getLogger(__name__)

UPSCALE = 3  # each face is padded by half its side all round, then upscaled: 96x96 becomes 576x576
HEADER = (
    "# canonical: where the anchor keypoints sit on average in the training faces (size x size pixels);\n"
    "# box_to_frame: the frame's centre (x of the box's width, y of its height, from its top-left\n"
    "# corner) and side (of the box's side), medians over the training faces the finder found.\n"
)


def anchor_points(rows: pd.DataFrame, anchors: list[str]) -> np.ndarray:
    """The anchors' (x, y) of every row: (N, len(anchors), 2)."""
    return rows[[f"{a}_{axis}" for a in anchors for axis in "xy"]].to_numpy(np.float64).reshape(len(rows), -1, 2)


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
    return np.asarray(
        Image.fromarray(np.pad(face, size // 2, mode="edge")).resize(
            ((size + 2 * (size // 2)) * UPSCALE,) * 2, Image.Resampling.BILINEAR
        )
    )


def in_photo(points: np.ndarray, size: int) -> np.ndarray:
    """Points (..., 2) of a size x size face, in the pixels of its `as_photo`."""
    return (np.asarray(points) + size // 2) * UPSCALE


def finder_fit(
    finder, photos: Iterable[tuple[np.ndarray, list[np.ndarray]]], canonical: np.ndarray, size: int
) -> tuple[dict | None, dict]:
    """The box-to-frame map of `finder` (grey photo -> boxes) for crops of `size`, from `photos`: each a
    grey photo and the anchors (A, 2) of each face in it, whose target frame puts them at `canonical` (A, 2)."""
    ratios, faces = [], 0
    for grey, points in photos:
        found = finder(grey)
        for p in points:
            faces += 1
            i = face_in(found, p.mean(0))
            if i is not None:
                ratios.append(framing.box_ratios(found[i], framing.from_points(p, canonical, False, size)))
    return framing.medians(ratios, faces)


def fit(finder, rows: pd.DataFrame, images: np.ndarray, anchors: list[str]) -> tuple[dict, dict, int, dict]:
    """canonical anchor positions, the box-to-frame map (medians), the faces' size they are in, and
    how the fit went."""
    points, labelled = labelled_anchors(rows, anchors)
    images = images[labelled]
    canonical = points.mean(0)
    size = images.shape[-1]
    photos = ((as_photo(face), [in_photo(pts, size)]) for face, pts in zip(images, points))
    box_to_frame, stats = finder_fit(finder, photos, canonical, size)
    if box_to_frame is None:
        raise DataError(f"the finder found none of the {len(images)} training faces; no map to learn")
    return (
        {a: [round(float(v), 3) for v in p] for a, p in zip(anchors, canonical)},
        {k: round(v, 4) for k, v in box_to_frame.items()},
        size,
        stats,
    )


def fit_run(run: str | Path, datamodule=None) -> Path:
    """Fit conf/detect.yaml's finder on a COCO run's training photos (`datamodule`: its data; by
    default rebuilt from the run's config) and write RUN/framing.yaml. The fit is cached in
    paths.cache_dir, keyed by the data's framing and the finder, so a sweep's runs fit once."""
    from functools import partial

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from keypoints.photos.detect import boxes

    run = Path(run)
    if datamodule is None:
        from keypoints.inference import runs

        found = runs.find([run])[0]
        if found.dir.resolve() != run.resolve() or "annotations" not in found.cfg.data:
            raise DataError(
                f"{run}: not a run trained on COCO data (data=coco); runs trained on Kaggle-format "
                f"crops use conf/framing.yaml (kfkd framefit)"
            )
        datamodule = instantiate(found.cfg.data, columns=found.columns)
    framed = datamodule.framing()
    settings = OmegaConf.load(DETECT)
    finder = OmegaConf.to_container(settings.finder)
    key = hashlib.sha1(json.dumps([framed, finder, settings.max_side]).encode()).hexdigest()[:16]
    cache = Path(datamodule.cache_dir) / f"framing-{key}.json" if datamodule.cache_dir is not None else None
    if cache is not None and cache.is_file():
        box_to_frame, stats = json.loads(cache.read_text())
    else:
        box_to_frame, stats = finder_fit(
            partial(boxes, instantiate(finder), max_side=settings.max_side),
            datamodule.training_photos(),
            np.array(list(framed["canonical"].values())),
            framed["size"],
        )
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps([box_to_frame, stats]))
            except OSError:
                pass  # the cache only saves time
    body = {
        "keypoint_set": framed["keypoint_set"],
        "finder": finder,
        "size": framed["size"],
        "canonical": framed["canonical"],
        "box_to_frame": None if box_to_frame is None else {k: round(v, 4) for k, v in box_to_frame.items()},
        "fit": stats,
        "annotation_box_to_frame": framed["annotation_box_to_frame"],
        "data": framed["data"],
    }
    out = run / RUN_FIT
    out.write_text(
        f"# Written by `kfkd framefit --run {run}` (training runs it at its end): do not "
        f"edit.\n{HEADER}# annotation_box_to_frame: the same for the annotations' boxes (the training crops' "
        f"frames with data.frame_by=box).\n" + yaml.safe_dump(body, sort_keys=False)
    )
    return out


class FramingFit(RunEnd):
    """Once a run on COCO data has ended, how a face finder's box frames its faces: RUN/framing.yaml."""

    def on_run_end(self, run: Path, datamodule) -> None:
        if hasattr(datamodule, "framing"):  # COCO data; Kaggle-format crops use conf/framing.yaml
            log.info(f"framing fit for detect: {fit_run(run, datamodule)}")


def main(argv: list[str] | None = None) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from keypoints.core import keypointset

    parser = argparse.ArgumentParser(prog="kfkd framefit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="realfaces' folder (kfkd data realfaces); needed without --run")
    parser.add_argument(
        "--exclude", type=Path, help="a CSV with a `person` column: people left out of the fit (the photos' people)"
    )
    parser.add_argument("--out", type=Path, default=FRAMING)
    parser.add_argument(
        "--run", type=Path, help="a run (or sweep) trained on COCO data: refit RUN/framing.yaml instead"
    )
    args = parser.parse_args(argv)
    if args.run is not None:
        from keypoints.inference import runs

        try:
            for run in runs.find([args.run]):  # a sweep's runs one by one: the cache fits them once
                out = fit_run(run.dir)
                print(f"wrote {out}: {OmegaConf.load(out).box_to_frame}, {dict(OmegaConf.load(out).fit)}")
        except DataError as e:
            sys.exit(f"error: {e}")
        return
    if args.data is None:
        parser.error("--data DIR (realfaces' folder) is needed without --run")
    detect = OmegaConf.load(DETECT)
    kaggle15 = keypointset.load("kaggle15")
    try:
        rows, images = training_faces(args.data, args.exclude)
    except (OSError, KeyError) as e:
        sys.exit(f"error: {args.data}: cannot read realfaces' training.csv.gz and training_people.csv ({e})")
    canonical, box_to_frame, size, stats = fit(instantiate(detect.finder), rows, images, kaggle15.anchors)
    command = f"kfkd framefit --data {args.data}" + (f" --exclude {args.exclude}" if args.exclude else "")
    header = f"# Written by `{command}`: do not edit.\n"
    body = {
        "keypoint_set": kaggle15.name,
        "finder": OmegaConf.to_container(detect.finder),
        "size": size,
        "canonical": canonical,
        "box_to_frame": box_to_frame,
        "fit": stats,
    }
    args.out.write_text(header + HEADER + yaml.safe_dump(body, sort_keys=False))
    print(f"wrote {args.out}: {box_to_frame}, {stats}")


if __name__ == "__main__":
    main()
