"""Build the datasets realfaces (Kaggle's CSVs of 96x96 grey faces) and faces68 (COCO keypoints of the whole
photos) from their public source.

    kfkd data realfaces SOURCE --out DIR [--seed N]
    kfkd data faces68 SOURCE --out DIR [--seed N]

SOURCE is the `data/` folder of Udacity's facial keypoints project, github.com/udacity/P1_Facial_Keypoints
(frames of the YouTube Faces collection): `training_frames_keypoints.csv` and `test_frames_keypoints.csv`,
whose rows are a frame's file name then its 68 iBUG landmarks as x0, y0, ... x67, y67 in its pixels, and
the frames in `training/` and `test/`. A frame `Person_Name_NN.jpg` is of the person before `_NN`.

Udacity's two folders hold the same people (test/ has other frames of the same videos), so the split is
made here, by person: a seeded fifth of the people (Kaggle's test share) are the test people, and
test.csv holds all their frames; training.csv holds the other people's training/ frames (their test/
frames, near-copies of those, are left out). faces68 is those training frames whole, with the same person
ids as realfaces' training_people.csv when both are built with the same seed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keypoints.core import keypointset
from keypoints.core.errors import DataError
from keypoints.data import framing, images

KAGGLE15 = keypointset.load("kaggle15")
UDACITY = "give the data/ folder of Udacity's P1_Facial_Keypoints (github.com/udacity/P1_Facial_Keypoints)"
CSVS = {"training": "training_frames_keypoints.csv", "test": "test_frames_keypoints.csv"}
MARK = ".kfkd-data"  # in --out: written by this command, so a rebuild may overwrite it
N = 96  # px: Kaggle's faces
TEST_SHARE = 0.2  # of the people: Kaggle's test set is 1783 of 8832 faces
# Where a crop puts a face, as realfaces' crops do (fitted to them): the eye midpoint at EYES, and the
# inter-ocular distance plus the eye midpoint's distance to the bottom lip REACH px (Kaggle's mean face:
# 36.1 + 41.2); a sum, so that a face turned aside (eyes closer) or nodding (mouth closer) keeps its size.
EYES, REACH = np.array([48.4, 37.6]), 77.8
SHIFT_PX, SCALE_SD = 3.0, 0.07  # Kaggle's faces scatter about that much about their mean place and size
COMPLETE = 2140 / 7049  # Kaggle's share of training rows with all 15 keypoints
ALWAYS = ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip")  # labelled in every row
# Kaggle's 15 keypoints as iBUG's points (0-based): the eye centres are their contours' means.
FROM_68 = {
    "left_eye_center": range(42, 48),
    "right_eye_center": range(36, 42),
    "left_eye_inner_corner": [42],
    "left_eye_outer_corner": [45],
    "right_eye_inner_corner": [39],
    "right_eye_outer_corner": [36],
    "left_eyebrow_inner_end": [22],
    "left_eyebrow_outer_end": [26],
    "right_eyebrow_inner_end": [21],
    "right_eyebrow_outer_end": [17],
    "nose_tip": [30],
    "mouth_left_corner": [54],
    "mouth_right_corner": [48],
    "mouth_center_top_lip": [51],
    "mouth_center_bottom_lip": [57],
}


class Photo(NamedTuple):
    path: Path
    person: str
    points: np.ndarray  # (68, 2), the photo's pixels


def person(name: str) -> str:
    """Whose frame `Person_Name_NN.jpg` is: the name before the frame number (the stem, if it has none)."""
    return re.sub(r"_\d+$", "", Path(name).stem)


def read_frames(source: Path, split: str) -> list[Photo]:
    """The frames one of Udacity's CSVs labels, checked: 136 numbers a row, its image there."""
    path = source / CSVS[split]
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]  # the header: an unnamed column, then 0..135
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {UDACITY}") from None
    photos = []
    for line, row in enumerate(rows, 2):
        where = f"{path}: line {line}"
        if len(row) != 137:
            raise DataError(f"{where}: {len(row) - 1} values after the file name, expected 136 (68 points' x, y)")
        try:
            points = np.array(row[1:], float).reshape(68, 2)
        except ValueError:
            raise DataError(f"{where}: a value is not a number; expected the file name, then 136 numbers") from None
        image = source / split / row[0]
        if not image.is_file():
            raise DataError(f"{image}: no such file (line {line} of {path} names it); {UDACITY}")
        photos.append(Photo(image, person(row[0]), points))
    return photos


def split(source: Path, rng: np.random.Generator) -> tuple[list[Photo], list[Photo], dict[str, int]]:
    """The training photos, the test photos (people disjoint) and the training people's integer ids."""
    training, test = read_frames(source, "training"), read_frames(source, "test")
    people = sorted({p.person for p in training + test})
    if len(people) < 2:
        raise DataError(f"{source}: frames of {len(people)} person; a split by person needs two or more")
    held = set(rng.choice(people, min(max(1, round(TEST_SHARE * len(people))), len(people) - 1), replace=False))
    kept = [p for p in training if p.person not in held]
    ids = {name: i for i, name in enumerate(sorted({p.person for p in kept}))}
    return kept, [p for p in training + test if p.person in held], ids


def kaggle15(points: np.ndarray) -> np.ndarray:
    """Kaggle's 15 keypoints (..., 15, 2), in its order, from iBUG's 68 (..., 68, 2)."""
    return np.stack([points[..., list(FROM_68[k]), :].mean(-2) for k in KAGGLE15.names], -2)


def crop(photo: Photo, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The face as a 96x96 grey crop, its eyes and mouth about where Kaggle's sit, randomly shifted and
    scaled as Kaggle's are (upright: Kaggle's faces are not turned level), and its 15 keypoints in the crop."""
    eyes = np.array([photo.points[42:48].mean(0), photo.points[36:42].mean(0)])
    middle = eyes.mean(0)
    reach = np.linalg.norm(eyes[0] - eyes[1]) + np.linalg.norm(photo.points[57] - middle)
    size = N * reach / REACH * math.exp(rng.normal(0, SCALE_SD))  # photo px that become the crop's 96
    centre = middle + (N / 2 - EYES - rng.normal(0, SHIFT_PX, 2)) * size / N
    frame = framing.Frame(centre[0], centre[1], size, N)
    # Frame.crop is Pillow's bilinear EXTENT transform of the edge-repeated photo; no reduction (no antialias).
    return frame.crop(images.grey(images.read(photo.path)), math.inf), frame.to_crop(kaggle15(photo.points))


def thin(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kaggle's missing pattern on (F, 15, 2) keypoints: about 30 % of faces keep all, the others only ALWAYS;
    a keypoint outside the crop is missing too. NaN where missing."""
    always = np.isin(KAGGLE15.names, ALWAYS)
    kept = (rng.random(len(points))[:, None] < COMPLETE) | always
    kept &= ((points >= 0) & (points <= N)).all(2)
    return np.where(kept[:, :, None], points, np.nan)


def crops(photos: list[Photo], rng: np.random.Generator, what: str) -> tuple[list[str], np.ndarray]:
    """Every photo's crop as Kaggle's pixel text, and its keypoints (F, 15, 2), thinned; progress printed."""
    texts, points = [], []
    for i, photo in enumerate(photos, 1):
        pixels, p = crop(photo, rng)
        texts.append(" ".join(map(str, pixels.ravel().tolist())))
        points.append(p)
        if i % 500 == 0 or i == len(photos):
            print(f"{what}: {i} of {len(photos)} faces cropped", flush=True)
    return texts, thin(np.array(points).reshape(-1, 15, 2), rng)


def write(path: Path, header: str, lines) -> None:
    """A CSV (gzipped for .gz, with no timestamp: the same input gives the same bytes) via a temporary
    name, so an interrupted build never leaves a complete-looking file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as raw:
        binary = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
        with io.TextIOWrapper(binary, encoding="ascii", newline="\n") as f:
            f.write(header + "\n")
            f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent random streams for the split, the training faces and the test faces: faces68's split
    is realfaces' for the same seed."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))


def realfaces(source: Path, out: Path, seed: int) -> str:
    """Kaggle's training.csv.gz, test.csv.gz and IdLookupTable.csv, and training_people.csv."""
    split_rng, training_rng, test_rng = streams(seed)
    training, test, ids = split(source, split_rng)
    claim(out, "realfaces")
    training = [training[i] for i in training_rng.permutation(len(training))]  # Kaggle's rows are in no order
    test = [test[i] for i in test_rng.permutation(len(test))]
    columns = KAGGLE15.columns
    texts, labels = crops(training, training_rng, "training")
    number = lambda v: "" if np.isnan(v) else f"{v:.6f}"  # empty: missing, as in Kaggle's files
    rows = (",".join(map(number, row)) + "," + text for row, text in zip(labels.reshape(len(texts), -1), texts))
    write(out / "training.csv.gz", ",".join([*columns, "Image"]), rows)
    write(out / "training_people.csv", "row,person", (f"{i},{ids[p.person]}" for i, p in enumerate(training)))
    texts, asked = crops(test, test_rng, "test")
    write(out / "test.csv.gz", "ImageId,Image", (f"{i},{text}" for i, text in enumerate(texts, 1)))
    image, column = np.nonzero(~np.isnan(asked.reshape(len(texts), -1)))  # the keypoints a submission predicts
    lookup = (f"{row},{i + 1},{columns[c]}," for row, (i, c) in enumerate(zip(image, column), 1))
    write(out / "IdLookupTable.csv", "RowId,ImageId,FeatureName,Location", lookup)
    complete = int((~np.isnan(labels)).all((1, 2)).sum())
    return (
        f"training.csv.gz ({len(training)} faces of {len(ids)} people, {complete} with all 15 keypoints), "
        f"training_people.csv, test.csv.gz ({len(test)} faces of other people), IdLookupTable.csv ({len(image)} rows)"
    )


def faces68(source: Path, out: Path, seed: int) -> str:
    """annotations.json and images/: realfaces' training frames whole, with their 68 points."""
    training, _, ids = split(source, streams(seed)[0])
    claim(out, "faces68")
    training.sort(key=lambda p: p.path.name)
    ibug = keypointset.load("ibug68")
    shutil.rmtree(out / "images", ignore_errors=True)  # ours (MARK): a rebuild may hold other frames
    (out / "images").mkdir()
    entries, annotations = [], []
    for i, photo in enumerate(training, 1):
        width, height = images.read(photo.path).size  # upright, as kfkd's COCO reader checks them
        link(photo.path, out / "images" / photo.path.name)
        name = f"images/{photo.path.name}"
        entries.append({"id": i, "file_name": name, "width": width, "height": height, "person": ids[photo.person]})
        (left, top), (right, bottom) = photo.points.min(0), photo.points.max(0)
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [left, top, right - left, bottom - top],  # the tight box, as 300-W's
                "area": (right - left) * (bottom - top),
                "num_keypoints": 68,
                "keypoints": [v for x, y in photo.points.tolist() for v in (x, y, 2)],  # v = 2: labelled, visible
            }
        )
        if i % 500 == 0 or i == len(training):
            print(f"faces68: {i} of {len(training)} images", flush=True)
    at = {name: i + 1 for i, name in enumerate(ibug.names)}  # COCO's skeleton counts from 1
    category = {"id": 1, "name": "face", "supercategory": "face", "keypoints": ibug.names}
    category["skeleton"] = [[at[a], at[b]] for a, b in ibug.skeleton]
    info = {"description": "faces68: YouTube-Faces frames with iBUG 68-point landmarks"}
    document = {"info": info, "images": entries, "annotations": annotations, "categories": [category]}
    tmp = out / ".annotations.json.tmp"
    tmp.write_text(json.dumps(document))
    os.replace(tmp, out / "annotations.json")
    return f"annotations.json and images/ ({len(training)} photos of {len(ids)} people)"


def link(source: Path, target: Path) -> None:
    """`target` as a hard link to `source`'s file where the file system allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def claim(out: Path, command: str) -> None:
    """Make `out` ours: refuse a folder with files this command did not write."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: not a folder; give a new or empty folder as --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARK).is_file():
        raise DataError(f"{out}: not empty and not written by kfkd data; give a new or empty folder as --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARK).write_text(f"kfkd data {command}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kfkd data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, build in (("realfaces", realfaces), ("faces68", faces68)):
        command = commands.add_parser(name, help=build.__doc__, description=build.__doc__)
        command.add_argument("source", type=Path, metavar="SOURCE", help="the data/ folder of Udacity's project")
        command.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty folder to write")
        command.add_argument("--seed", type=int, default=0, help="the split by person, the crops' jitter (default 0)")
        command.set_defaults(build=build)
    args = parser.parse_args(argv)
    try:
        written = args.build(args.source, args.out, args.seed)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"{args.command}: wrote {args.out}: {written}")
