"""The COCO reader: keypoints in COCO format (what CVAT, Label Studio, Roboflow and mmpose export), each
annotated face framed (from its anchors, or its box) and cropped to data.size px grey, cached.

    python train.py data=coco data.dir=DIR keypoints=SET [data.groups=person]

`DIR/annotations.json` (`data.annotations`; its fields: keypoints/data/annotations.py) names the
images and, per face, its box and keypoints. The keypoint set's names are looked up in the category's
by name, so a set may take any of them in any order. A keypoint not labelled (v = 0) is missing, and
the masked loss skips it.

The framing (keypoints.data.framing): every dataset draws its boxes its own way, so the box-to-frame map is
learned from the training faces, as keypoints.photos.framefit learns a face finder's. A face's target frame
puts the set's `anchors` where they sit on average (`canonical`) in a crop whose mean face, all the
set's keypoints, fills `data.fill` of the crop's side; the map is the median frame of the training
faces as fractions of their boxes. Each face is then cropped from that target frame of its labelled
anchors (data.frame_by=anchors, the default), as detect re-frames a face from its predicted anchors,
or from its box through the map (data.frame_by=box, and faces with fewer than two anchors labelled), as
detect frames a face finder's box; its keypoints that fall outside the crop count as missing.
Crops are cached under `paths.cache_dir`, keyed by the annotation file's and the images' paths,
sizes and modification times, the crop size and the map.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from keypoints.core import codec
from keypoints.core.errors import DataError
from keypoints.core.paths import DETECT
from keypoints.data import framing, images
from keypoints.data.annotations import Coco, read
from keypoints.data.augment import centre_crop
from keypoints.data.kaggle import TensorBatches, as_is, excluded_groups, held_out_rows, to_tensors

CACHE_VERSION = 1
CUT_WARNING = 0.1  # the share of training faces with a keypoint outside the crop beyond which setup warns
log = logging.getLogger(__name__)


def canonical_face(points: np.ndarray, boxes: np.ndarray, fill: float, size: int) -> np.ndarray:
    """Where each keypoint sits on average in a crop of `size`: the faces' `points` (F, K, 2), each
    face's by its box (centre and side), averaged, then scaled and centred so that the mean face's
    keypoint box (the geometric mean of its sides) fills `fill` of the crop's side."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    mean = np.nanmean((points - centre[:, None]) / side[:, None, None], axis=0)
    low, high = np.nanmin(mean, 0), np.nanmax(mean, 0)
    return (mean - (low + high) / 2) * (fill * size / np.sqrt(np.prod(high - low))) + size / 2


def anchor_frames(points: np.ndarray, canonical: np.ndarray, size: int) -> list[framing.Frame | None]:
    """Each face's target frame: the upright frame that puts its labelled anchors `points` (F, A, 2)
    nearest their `canonical` places (A, 2); None for a face with fewer than two labelled anchors."""
    frames = []
    for p in points:
        known = ~np.isnan(p[:, 0])
        frames.append(framing.from_points(p[known], canonical[known], False, size) if known.sum() >= 2 else None)
    return frames


class CocoDataModule(pl.LightningDataModule):
    """COCO keypoints for the selected `columns` of the keypoint set `keypoint_set` (its `keypoints`
    and `anchors`), faces cropped to `size` px grey, split by face, or by groups of faces (`groups`:
    an image field such as `person`) so that validation is on unseen people."""

    def __init__(
        self,
        dir: str,
        annotations: str,
        category: str | None,
        columns: list[str],
        keypoint_set: str,
        keypoints: list[str],
        anchors: list[str],
        size: int,
        fill: float,
        margin: float,
        frame_by: str,
        drop_incomplete: bool,
        batch_size: int,
        valid_fraction: float,
        split_seed: int,
        cache_dir: str | None,
        groups: str | None,
        exclude_groups: str | list | None,
    ):
        super().__init__()
        self.dir, self.annotations, self.category = Path(dir).expanduser(), annotations, category
        self.columns, self.keypoint_set, self.keypoints, self.anchors = (
            list(columns),
            keypoint_set,
            list(keypoints),
            list(anchors),
        )
        self.size, self.fill, self.drop_incomplete = size, fill, drop_incomplete
        self.frame_by = frame_by
        self.margin = round(margin * size)  # px on each side of a training face, cut off after augmentation
        self.batch_size, self.valid_fraction, self.split_seed = batch_size, valid_fraction, split_seed
        self.cache_dir, self.groups, self.exclude_groups = cache_dir, groups, exclude_groups

    def setup(self, stage: str | None = None):
        if hasattr(self, "train_set"):
            return
        if self.frame_by not in ("box", "anchors"):
            raise DataError(
                f"data.frame_by={self.frame_by}: expected box (each face framed from its box through "
                f"the learned map) or anchors (from its labelled anchors, as detect re-frames)"
            )
        coco = self.coco = read(self.dir / self.annotations, self.category)
        unknown = [c for c in self.columns if c[-2:] not in ("_x", "_y") or c[:-2] not in self.keypoints]
        if unknown:
            raise DataError(
                f"{coco.path}: column {unknown[0]!r} is not one of the keypoint set "
                f"{self.keypoint_set}'s (<name>_x, <name>_y)"
            )
        keypoints, anchors, group = coco.select(self.keypoint_set, self.keypoints, self.anchors, self.groups)
        left_out = np.zeros(len(coco.image), bool)
        if group is not None:
            left_out = np.isin(group, list(excluded_groups(self.exclude_groups, self.groups)))
        elif self.exclude_groups is not None:
            raise DataError("data.exclude_groups needs data.groups: the image field that says which group each face is")
        held_out = held_out_rows(len(coco.image), self.valid_fraction, self.split_seed, group)
        self.training = train = ~held_out & ~left_out  # the faces the net trains on: the framing's too
        if not train.any():
            raise DataError(
                f"{coco.path}: no face left to train on ({len(coco.image)} faces, "
                f"{left_out.sum()} excluded, {held_out.sum()} held out)"
            )
        canonical = canonical_face(coco.points[train][:, keypoints], coco.boxes[train], self.fill, self.size)
        self.canonical = dict(zip(self.anchors, canonical[[self.keypoints.index(a) for a in self.anchors]]))
        self.frames = anchor_frames(coco.points[:, anchors], np.array(list(self.canonical.values())), self.size)
        framed = [(box, f) for box, f in zip(coco.boxes[train], np.array(self.frames, object)[train]) if f is not None]
        if not framed:
            raise DataError(f"{coco.path}: no training face has two of the anchors {self.anchors} labelled")
        self.box_to_frame, self.fit_stats = framing.medians(
            [framing.box_ratios(b, f) for b, f in framed], int(train.sum())
        )
        faces, points = self._crops(coco)  # with the margin
        wanted = [keypoints[self.keypoints.index(c[:-2])] * 2 + (c[-1] == "y") for c in self.columns]
        targets = points.reshape(len(points), -1)[:, wanted]
        half = codec.scale(self.size)
        within = (np.abs(targets - half - self.margin) <= half).reshape(len(targets), -1, 2).all(2)
        present = ~np.isnan(targets) & np.repeat(within, 2, axis=1)  # in the face itself, not only its margin
        keep = (present.all(1) if self.drop_incomplete else present.any(1)) & ~left_out
        self._warn_if_cut(coco, wanted)
        self.validation = keep & held_out  # the faces validation scores (benchmarks/coco_photos.py: their photos)
        train_rows, valid_rows = np.flatnonzero(keep & ~held_out), np.flatnonzero(self.validation)
        if not len(train_rows) or not len(valid_rows):
            raise DataError(
                f"{coco.path}: {keep.sum()} usable faces cannot be split "
                f"{1 - self.valid_fraction:.0%}/{self.valid_fraction:.0%}"
            )
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        tensors = lambda idx: to_tensors(faces[idx], targets[idx])
        self.train_set = TensorBatches(*(t.to(device) for t in tensors(train_rows)))  # cropped after augmentation
        self.valid_set = TensorBatches(*(t.to(device) for t in centre_crop(*tensors(valid_rows), self.size)))

    def _frame(self, coco: Coco, f: int) -> framing.Frame:
        """Face f's frame: from its labelled anchors (frame_by anchors, where it has two), else from its box."""
        return (
            self.frames[f]
            if self.frame_by == "anchors" and self.frames[f] is not None
            else framing.from_box(coco.boxes[f], self.box_to_frame, self.size)
        )

    def _warn_if_cut(self, coco: Coco, wanted: list[int]) -> None:
        """A warning where more than CUT_WARNING of the training faces have a labelled keypoint (of the
        `wanted` columns) outside the crop, with the fill that frames enough of them whole: nets learn
        keypoints inside their crops only (and a heatmap places them nowhere else)."""
        points = coco.points.reshape(len(coco.points), -1)[:, wanted].reshape(len(coco.points), -1, 2)
        faces = np.flatnonzero(self.training & ~np.isnan(points).all((1, 2)))
        crop = lambda f: self._frame(coco, f).to_crop(points[f])
        reach = np.array([np.nanmax(np.abs(codec.to_targets(crop(f), self.size))) for f in faces])
        cut = reach > 1
        if cut.mean() > CUT_WARNING:
            whole = math.floor(np.quantile(self.fill / reach, CUT_WARNING) * 100) / 100  # the frame scales with fill
            log.warning(
                f"data.fill={self.fill}: {cut.sum()} of {len(faces)} training faces ({cut.mean():.0%}) have a "
                f"labelled keypoint outside their {self.size} px crop, left out as missing; data.fill={whole} "
                f"frames {1 - CUT_WARNING:.0%} of them whole"
            )

    def _key(self, coco: Coco) -> str:
        """What the crops depend on: the files (paths, sizes, modification times), the crop size, the
        framing (by box: the map; by anchors: where they sit) and the resampling; a missing image is
        reported here."""
        stats = [f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" for file, stat in zip(coco.files, coco.stats())]
        stat = coco.path.stat()
        key = [
            CACHE_VERSION,
            str(coco.path.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            coco.category,
            self.size,
            self.margin,
            self.max_step,
            sorted(self.box_to_frame.items()),
            self.frame_by,
            {a: p.tolist() for a, p in self.canonical.items()} if self.frame_by == "anchors" else None,
            hashlib.sha1("\n".join(stats).encode()).hexdigest(),
        ]
        return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]

    @property
    def max_step(self) -> float:
        """detect's resampling (conf/detect.yaml), so that training faces are cropped as detect crops."""
        from omegaconf import OmegaConf

        return float(OmegaConf.load(DETECT).max_step)

    def _crops(self, coco: Coco) -> tuple[np.ndarray, np.ndarray]:
        """Every face cropped with the margin all round, framed from its box through the map or, with
        frame_by anchors, from its labelled anchors (its box where it has fewer than two), (F, side, side)
        uint8 (side: size + 2 margin), and the category's keypoints in the crop's pixels (F, K, 2), NaN
        where unlabelled or outside the crop; from the cache where it holds them."""
        self.key = self._key(coco)
        cache = Path(self.cache_dir) / f"{coco.path.stem}-{self.key}.npz" if self.cache_dir is not None else None
        if cache is not None:
            try:
                with np.load(cache, allow_pickle=False) as z:
                    return z["faces"], z["points"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # missing, truncated or corrupt: crop again
        log.info(f"cropping {len(coco.image)} faces of {coco.path} to {self.size} px (cached for later runs)")
        side = self.size + 2 * self.margin
        faces = np.empty((len(coco.image), side, side), np.uint8)
        points = np.full(coco.points.shape, np.nan)
        max_step = self.max_step
        for i in np.unique(coco.image):
            grey = self._photo(coco, i)
            for f in np.flatnonzero(coco.image == i):
                face = self._frame(coco, f)
                frame = framing.Frame(face.cx, face.cy, face.size * side / self.size, side)  # the same scale
                faces[f] = frame.crop(grey, max_step)
                points[f] = frame.to_crop(coco.points[f])
        points[((points < 0) | (points > side)).any(2)] = np.nan  # left the crop: missing
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
                np.savez(tmp, faces=faces, points=points)
                os.replace(tmp, cache)
            except OSError as e:  # the cache only saves time
                log.warning(
                    f"{cache.parent}: cannot keep the crops there ({e.strerror or e}); "
                    f"set paths.cache_dir=DIR to a writable folder"
                )
        return faces, points

    @staticmethod
    def _photo(coco: Coco, i: int) -> np.ndarray:
        """Image i as grey (H, W) uint8, checked against its width and height."""
        where = f"{coco.path}: images[{i}].file_name"
        try:
            image = images.read(coco.files[i])
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        expected = (coco.images[i]["width"], coco.images[i]["height"])
        if image.size != expected:
            raise DataError(
                f"{where}: {coco.files[i]} is {image.size[0]}x{image.size[1]} px, but the annotations "
                f"give {expected[0]}x{expected[1]} (images[{i}].width, .height)"
            )
        return images.grey(image)

    def training_photos(self) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """Each photo with training faces, grey, and the anchors of its faces that have them all: what
        keypoints.photos.framefit fits a face finder's map on."""
        self.setup()
        anchors = self.coco.keypoints(self.anchors, "the anchors")
        points = self.coco.points[:, anchors]
        usable = self.training & ~np.isnan(points).any((1, 2))
        for i in np.unique(self.coco.image[usable]):
            yield self._photo(self.coco, i), list(points[usable & (self.coco.image == i)])

    def framing(self) -> dict:
        """How this data's faces are framed: the keypoint set, the crop size, where the anchors sit
        (`canonical`), the annotations' box-to-frame map, and where it was learned."""
        self.setup()
        return {
            "keypoint_set": self.keypoint_set,
            "size": self.size,
            "canonical": {a: [round(float(v), 3) for v in p] for a, p in self.canonical.items()},
            "annotation_box_to_frame": {k: round(v, 4) for k, v in self.box_to_frame.items()},
            "data": {
                "annotations": str(self.coco.path),
                "training_faces": int(self.training.sum()),
                "fill": self.fill,
                "frame_by": self.frame_by,
                "crops": self.key,
            },
        }

    def train_dataloader(self):
        return DataLoader(self.train_set, self.batch_size, shuffle=True, collate_fn=as_is)

    def val_dataloader(self):
        return DataLoader(self.valid_set, self.batch_size, collate_fn=as_is)
