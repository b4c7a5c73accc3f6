"""Keypoints on any photo: find every face, frame it as the training faces are framed, predict, map back.

    kfkd detect MODEL PHOTO_OR_DIR... [--out DIR] [--tta flip]

MODEL: a run directory, a checkpoint, a sweep directory (its nets assembled as `submit` does) or an
exported .onnx file (run by onnxruntime, without torch). Writes DIR/keypoints.csv (file, face, box,
the columns of the model's keypoint set in the photo's pixels) and DIR/<photo stem>.png (the photo
with boxes, the set's skeleton and keypoints drawn). A face finder's box is framed through the map
learned for the model's training faces: conf/framing.yaml for models of Kaggle-format crops, a COCO
run's own RUN/framing.yaml (carried into an exported model's metadata). The Python API:

    detector = Detector("outputs/runs/RUN")            # load once
    for face in detector(image):                       # image: (H, W) or (H, W, 3) uint8 array
        face.box, face.keypoints                       # (4,) and (K, 2) in the image's pixels (K: the set's keypoints)
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, PngImagePlugin

from keypoints.core.errors import DataError
from keypoints.core.keypointset import columns
from keypoints.core.paths import DETECT as SETTINGS
from keypoints.core.paths import FRAMING
from keypoints.data import framing, images
from keypoints.inference import predictor as inference

HEADER = ["file", "face", "box_left", "box_top", "box_right", "box_bottom"]  # then the keypoint set's columns
STAMP = ("Software", "kfkd detect")  # marks the PNGs this command wrote, which a later run may replace
STAGES = ("detect", "frame", "predict")
log = logging.getLogger(__name__)


@dataclass
class Face:
    box: np.ndarray  # (4,): left, top, right, bottom in the image's pixels
    keypoints: (
        np.ndarray
    )  # (K, 2): x, y in the image's pixels, in the keypoint set's order; NaN where the model has none


@dataclass
class Found:
    faces: list[Face]
    too_small: list[np.ndarray]  # boxes of faces too small to frame (side under min_face_px)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


def settings(path: Path = SETTINGS, fitted: Path | tuple[str, dict] = FRAMING):
    """conf/detect.yaml with a framing fit: the box-to-frame map of its finder, and where the anchors sit
    in faces of `canonical_size` pixels. `fitted`: conf/framing.yaml (models trained on Kaggle-format
    crops), or a model's own fit as (where it is, its contents): a COCO run's RUN/framing.yaml, or
    an exported model's metadata. A fit for another finder, or one without a map, is refused."""
    cfg = OmegaConf.load(path)
    source, fit = (
        (str(fitted), OmegaConf.load(fitted))
        if isinstance(fitted, (str, Path))
        else (fitted[0], OmegaConf.create(fitted[1]))
    )
    refit = (
        "kfkd framefit"
        if Path(source) == FRAMING
        else f"kfkd framefit --run {Path(source).parent}"
        if source.endswith(".yaml")
        else "kfkd framefit --run RUN for the run it was exported from, then export it again"
    )
    if OmegaConf.to_container(cfg.finder) != OmegaConf.to_container(fit.finder):
        raise DataError(f"{source}: fitted for another finder than {path}'s; refit with {refit}")
    if fit.box_to_frame is None:
        raise DataError(
            f"{source}: the finder found none of the {fit.fit.faces} training faces, so there is no "
            f"box-to-frame map for it; choose another finder in {path}, then {refit}"
        )
    return OmegaConf.merge(
        cfg,
        {
            "canonical": fit.canonical,
            "canonical_size": fit.size,
            "box_to_frame": fit.box_to_frame,
            "keypoint_set": fit.get("keypoint_set"),
            "framing": source,
        },
    )


def boxes(finder, grey: np.ndarray, max_side: int) -> np.ndarray:
    """The finder's boxes in the photo's pixels; a photo larger than max_side is searched reduced."""
    factor = math.ceil(max(grey.shape) / max_side)
    small = np.asarray(Image.fromarray(grey).reduce(factor)) if factor > 1 else grey
    found = finder(small) * factor
    return found[np.argsort(found[:, 0], kind="stable")]  # faces numbered left to right


class Detector:
    """Faces and their keypoints in images. `model`: a run, checkpoint or sweep directory, an .onnx
    file, or a loaded model (keypoints.inference.predictor); `tta="flip"` averages with the mirrored face; `cfg`:
    detect's settings with a framing fit (default: `settings` with the model's own fit); `threads`: an .onnx
    model's onnxruntime threads (default: one per core)."""

    def __init__(self, model, tta: str | None = None, cfg=None, threads: int | None = None):
        from hydra.utils import instantiate

        batch_size = (cfg if cfg is not None else OmegaConf.load(SETTINGS)).batch_size
        self.model = model if callable(model) else inference.load(model, tta == "flip", batch_size, threads)
        self.cfg = cfg if cfg is not None else settings(fitted=getattr(self.model, "framing", None) or FRAMING)
        self.finder = instantiate(self.cfg.finder)
        anchors = [a for a in self.cfg.canonical if a in self.model.keypoints]
        if len(anchors) < 2:  # a fit for other faces: its map frames them otherwise
            raise DataError(
                f"{self.cfg.framing}: a framing fit for the anchors of keypoint set "
                f"{self.cfg.keypoint_set or 'kaggle15'} ({', '.join(self.cfg.canonical)}), but the model "
                f"predicts keypoint set {getattr(self.model, 'keypoint_set', '?')}; detect needs the fit "
                f"made for the model's training faces (a COCO run's RUN/framing.yaml)"
            )
        # The anchors' places in the model's faces (the fit's are in faces of canonical_size pixels).
        scale = self.model.size / self.cfg.canonical_size
        self.anchor_names = anchors
        self.canonical = np.array([self.cfg.canonical[a] for a in anchors], np.float64) * scale
        names = columns(anchors)
        self.anchors = [self.model.columns.index(c) for c in names] if set(names) <= set(self.model.columns) else None
        if self.anchors is None and self.cfg.refine:
            log.warning(f"detect: no re-framing: the model predicts none or only some of the anchors {anchors}")
        # Plain values of settings read for every face of every frame of a video (a DictConfig's costs ~20 us).
        self.rotate, self.max_step = bool(self.cfg.rotate), float(self.cfg.max_step)
        every = columns(self.model.keypoints)
        self.header = HEADER + every
        self.columns = [every.index(c) for c in self.model.columns]
        self.skeleton = [
            (self.model.keypoints.index(a), self.model.keypoints.index(b))
            for a, b in getattr(self.model, "skeleton", [])
        ]

    def __call__(self, image: np.ndarray) -> list[Face]:
        """The faces in an image array, (H, W) grey or (H, W, 3) RGB, uint8."""
        return self.find(images.grey(images.from_array(image)))[0].faces

    def find(self, grey: np.ndarray, refine: int | None = None) -> tuple[Found, list[np.ndarray]]:
        """The faces in a grey (H, W) uint8 photo, with the seconds each stage took, and the keypoints
        after each pass (the first frame's, then each refinement's) for measuring what refining gives."""
        refine = self.cfg.refine if refine is None else refine
        found = Found([], [])
        start = time.perf_counter()
        boxes = self.boxes(grey)
        found.seconds["detect"] += time.perf_counter() - start
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        found.too_small = list(boxes[side < self.cfg.min_face_px])
        boxes = boxes[side >= self.cfg.min_face_px]
        frames = [framing.from_box(b, self.cfg.box_to_frame, self.model.size) for b in boxes]
        passes = []
        for step in range(1 + (refine if self.anchors is not None else 0)):
            if step:
                frames = [
                    framing.from_points(p[self.anchors].reshape(-1, 2), self.canonical, self.rotate, self.model.size)
                    for p in points  # noqa: F821 - the previous pass's, bound on step 0
                ]
            points = self.predict(grey, frames, found.seconds)
            passes.append(points)
        found.faces = [Face(b, self.as_keypoints(p)) for b, p in zip(boxes, points)]
        return found, passes

    def boxes(self, grey: np.ndarray) -> np.ndarray:
        """The finder's boxes in the photo's pixels."""
        return boxes(self.finder, grey, self.cfg.max_side)

    def predict(self, grey: np.ndarray, frames: list[framing.Frame], seconds: dict) -> list[np.ndarray]:
        """The model's columns, mapped to photo pixels, for each frame: (len(columns),) arrays."""
        if not frames:
            return []
        start = time.perf_counter()
        crops = np.stack([f.crop(grey, self.max_step) for f in frames])[:, None].astype(np.float32) / 255
        seconds["frame"] += time.perf_counter() - start
        start = time.perf_counter()
        out = self.model(crops)
        seconds["predict"] += time.perf_counter() - start
        return [f.to_photo(o.reshape(-1, 2)).reshape(-1) for f, o in zip(frames, out)]

    def as_keypoints(self, values: np.ndarray) -> np.ndarray:
        """The model's columns as (K, 2) keypoints of its set, NaN where it predicts none."""
        full = np.full(2 * len(self.model.keypoints), np.nan)
        full[self.columns] = values
        return full.reshape(-1, 2)


def photos(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The files to read: each file named, and in each folder named the files with an image suffix
    Pillow knows; and one line for each path that gives none."""
    suffixes = {s.lower() for s in Image.registered_extensions()}
    files, problems = [], []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                problems.append(f"{path}: empty folder, no image files in it")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def outputs(files: list[Path], out: Path) -> tuple[Path, list[Path]]:
    """DIR/keypoints.csv and a DIR/<stem>.png for each photo (<stem>-2.png, ... where stems repeat),
    refusing any that exists and was not written by this command."""
    taken: dict[str, int] = {}
    drawings = []
    for f in files:
        taken[f.stem] = taken.get(f.stem, 0) + 1
        drawings.append(out / (f.stem + (f"-{taken[f.stem]}" if taken[f.stem] > 1 else "") + ".png"))
    table = out / "keypoints.csv"
    for path in [table, *drawings]:
        if path.exists() and not _ours(path):
            raise DataError(f"{path}: exists and was not written by kfkd detect; choose another --out")
    return table, drawings


def _ours(path: Path) -> bool:
    try:
        if path.suffix == ".csv":
            with open(path, newline="") as f:
                return (next(csv.reader(f), None) or [])[: len(HEADER)] == HEADER
        with Image.open(path) as image:
            return image.info.get(STAMP[0]) == STAMP[1]
    except (OSError, ValueError, SyntaxError, UnicodeDecodeError):
        return False


def draw(image: Image.Image, found: Found, path: Path, skeleton: list[tuple[int, int]]) -> None:
    """The photo with each face's box (green; red when too small to frame), its keypoint set's skeleton
    (yellow lines between keypoints `skeleton` pairs) and keypoints (red) drawn."""
    canvas = image.convert("RGB")
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 400))
    for face in found.faces:
        draw_face(pen, face.box, face.keypoints, skeleton, width)
    for box in found.too_small:
        pen.rectangle(box.tolist(), outline=(255, 0, 0), width=width)
    info = PngImagePlugin.PngInfo()
    info.add_text(*STAMP)
    canvas.save(path, pnginfo=info)


def draw_face(pen: ImageDraw.ImageDraw, box: np.ndarray, keypoints: np.ndarray, skeleton, width: int) -> None:
    """A face's box (green), its keypoint set's skeleton (yellow lines between the `skeleton` pairs of
    keypoint indices) and keypoints (red; NaN ones left out)."""
    pen.rectangle(box.tolist(), outline=(0, 255, 0), width=width)
    for a, b in skeleton:
        if np.isfinite(keypoints[[a, b]]).all():
            pen.line(keypoints[[a, b]].reshape(-1).tolist(), fill=(255, 220, 0), width=width)
    r = max(1.5, (box[2] - box[0]) / 60)
    for x, y in keypoints[np.isfinite(keypoints).all(1)]:
        pen.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(prog="kfkd detect", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a run, checkpoint or sweep directory, or an exported .onnx file")
    parser.add_argument("photos", nargs="+", help="photos, or folders of photos")
    parser.add_argument("--out", default="outputs/detect", help="the folder for keypoints.csv and the drawings")
    parser.add_argument("--tta", choices=["flip"], help="average with the prediction for the mirrored face")
    args = parser.parse_args(argv)
    files, problems = photos(args.photos)
    for line in problems:
        print(line, file=sys.stderr)
    try:
        out = Path(args.out)
        table, drawings = outputs(files, out)
        detector = Detector(args.model, args.tta)
    except DataError as error:
        sys.exit(f"error: {error}")
    if getattr(detector.model, "flip", False) and args.tta != "flip":
        print(f"{args.model}: flip TTA is built into this model", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    rows, read, faces, small, faceless = [], 0, 0, 0, []
    for path, drawing in zip(tqdm(files, desc="photos", unit="photo", file=sys.stderr), drawings):
        try:
            image = images.read(path)
        except DataError as error:
            tqdm.write(str(error), file=sys.stderr)
            continue
        read += 1
        found, _ = detector.find(images.grey(image))
        for box in found.too_small:
            tqdm.write(
                f"{path}: a face at box {np.round(box).astype(int).tolist()} is "
                f"{math.sqrt((box[2] - box[0]) * (box[3] - box[1])):.0f} px, under min_face_px="
                f"{detector.cfg.min_face_px} (conf/detect.yaml): too small to frame",
                file=sys.stderr,
            )
        if not found.faces:
            faceless.append(path)
            tqdm.write(f"{path}: no face found", file=sys.stderr)
        for i, face in enumerate(found.faces):
            rows.append(
                [
                    str(path),
                    i,
                    *np.round(face.box, 2).tolist(),
                    *["" if np.isnan(v) else round(float(v), 2) for v in face.keypoints.reshape(-1)],
                ]
            )
        faces, small = faces + len(found.faces), small + len(found.too_small)
        draw(image, found, drawing, detector.skeleton)
    staged = table.with_name(f".{table.name}.{os.getpid()}")
    with open(staged, "w", newline="") as f:
        csv.writer(f).writerows([detector.header, *rows])
    staged.replace(table)
    print(
        f"photos read: {read} of {len(files)}, faces found: {faces}, photos with no face: {len(faceless)}"
        + (f", faces too small to frame: {small}" if small else "")
        + f"; wrote {table}"
    )
    if read == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
