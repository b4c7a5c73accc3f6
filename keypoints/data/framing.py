"""Framing a face as the training faces are framed (Kaggle's: 96x96), and back.

A `Frame` is the square of a photo that becomes a face's crop of `pixels` x `pixels` (the model's
data.size): its centre, its side in photo pixels and its roll. It comes from a face detector's box (through a map learned from labelled faces,
`keypoints.framing_fit`) or from keypoints (the least-squares similarity that puts the face's
anchor keypoints, eyes and mouth, where they sit on average in the training faces). The crop is
resampled exactly as realfaces' faces were made (kfkd data realfaces): grey, bilinear without antialiasing, the
photo's edge pixels repeated where the square leaves the photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Frame:
    """The square of a photo that maps onto the `pixels` x `pixels` crop: photo point `centre` ->
    the crop's centre, `size` photo pixels -> `pixels` crop pixels, the crop's x axis at `angle`
    radians in the photo.

    Coordinates are continuous: pixel (i, j) covers [i, i + 1) x [j, j + 1), as in Kaggle's labels."""

    cx: float
    cy: float
    size: float
    pixels: int
    angle: float = 0.0

    def _basis(self) -> np.ndarray:
        """Photo displacement per crop pixel along the crop's x and y axes (columns)."""
        c, s, k = math.cos(self.angle), math.sin(self.angle), self.size / self.pixels
        return np.array([[c, -s], [s, c]]) * k

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Crop coordinates (..., 2) -> photo coordinates."""
        return (np.asarray(points) - self.pixels / 2) @ self._basis().T + (self.cx, self.cy)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo coordinates (..., 2) -> crop coordinates."""
        return (np.asarray(points) - (self.cx, self.cy)) @ np.linalg.inv(self._basis()).T + self.pixels / 2

    def crop(self, grey: np.ndarray, max_step: float) -> np.ndarray:
        """The `pixels` x `pixels` uint8 crop of the (H, W) uint8 photo `grey`.

        Where one crop pixel steps over more than `max_step` photo pixels, the photo is first reduced
        by box filtering (Pillow's `reduce`), so that a big face is not sampled to noise."""
        basis = self._basis()
        n = self.pixels
        corners = self.to_photo(np.array([[0, 0], [n, 0], [0, n], [n, n]]))
        left, top = np.floor(corners.min(0)).astype(int) - 2
        right, bottom = np.ceil(corners.max(0)).astype(int) + 2
        if top >= 0 and left >= 0 and bottom <= grey.shape[0] and right <= grey.shape[1]:
            region = grey[top:bottom, left:right]  # a view: 60x faster than the indices below
        else:  # clipped indices repeat the edge pixels where the square leaves the photo
            rows = np.clip(np.arange(top, bottom), 0, grey.shape[0] - 1)
            cols = np.clip(np.arange(left, right), 0, grey.shape[1] - 1)
            region = grey[rows[:, None], cols[None, :]]
        region = Image.fromarray(np.ascontiguousarray(region), "L")
        origin = np.array([self.cx - left, self.cy - top])  # the centre, in the region's pixels
        factor = math.ceil(self.size / n / max_step)
        if factor > 1:
            region, basis, origin = region.reduce(factor), basis / factor, origin / factor
        offset = origin - basis @ (n / 2, n / 2)
        data = (basis[0, 0], basis[0, 1], offset[0], basis[1, 0], basis[1, 1], offset[1])
        return np.asarray(region.transform((n, n), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR))


def from_box(box: np.ndarray, box_to_frame: dict, pixels: int) -> Frame:
    """The frame a detector's box (left, top, right, bottom) predicts for a crop of `pixels`: centre at
    `x`, `y` of the box's width and height from its top-left corner, side `size` times the box's side
    (geometric mean)."""
    left, top, right, bottom = map(float, box)
    w, h = right - left, bottom - top
    return Frame(
        left + box_to_frame["x"] * w, top + box_to_frame["y"] * h, box_to_frame["size"] * math.sqrt(w * h), pixels
    )


def from_points(points: np.ndarray, canonical: np.ndarray, rotate: bool, pixels: int) -> Frame:
    """The frame whose crop of `pixels` puts `points` (K, 2, photo pixels) nearest, in least squares,
    to their `canonical` crop positions (K, 2), by scale and shift, and with `rotate` also by rotation."""
    return similarity(points, canonical, rotate, pixels)[0]


def similarity(points: np.ndarray, canonical: np.ndarray, rotate: bool, pixels: int) -> tuple[Frame, float]:
    """`from_points`'s frame, and how far the points stay from their canonical positions in its crop: the
    root mean square distance, in crop pixels (NaN or inf where the points are missing or all at one place)."""
    p, c = np.asarray(points, float), np.asarray(canonical, float)
    pm, cm = p.mean(0), c.mean(0)
    p0, c0 = p - pm, c - cm
    a = (p0 * c0).sum()
    b = (p0[:, 0] * c0[:, 1] - p0[:, 1] * c0[:, 0]).sum() if rotate else 0.0
    spread = (p0**2).sum()
    scale = math.hypot(a, b) / spread  # crop pixels per photo pixel
    theta = math.atan2(b, a)  # crop = scale * R(theta) @ photo + shift
    # The photo point that lands on the crop's centre: solve scale * R(theta) (q - pm) + cm = (n/2, n/2).
    c_, s_ = math.cos(theta), math.sin(theta)
    d = (np.array([pixels / 2, pixels / 2]) - cm) / scale
    q = pm + np.array([c_ * d[0] + s_ * d[1], -s_ * d[0] + c_ * d[1]])
    # The least-squares fit leaves this much of the canonical positions' spread unexplained (Procrustes).
    left = max((c0**2).sum() - (a * a + b * b) / spread, 0.0)
    return Frame(float(q[0]), float(q[1]), float(pixels / scale), pixels, -theta), math.sqrt(left / len(p))


def box_ratios(box: np.ndarray, frame: Frame) -> np.ndarray:
    """The frame as fractions of the box: centre x of its width, centre y of its height, side of its side."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    return np.array([(frame.cx - left) / w, (frame.cy - top) / h, frame.size / np.sqrt(w * h)])


def medians(ratios: list[np.ndarray], faces: int) -> tuple[dict | None, dict]:
    """The box-to-frame map, the medians of the faces' `ratios` (box_ratios), and how the fit went:
    of how many `faces` it found, and the ratios' interquartile range; no map where none was found."""
    stats = {"faces": int(faces), "found": len(ratios)}
    if not ratios:
        return None, stats
    ratios = np.array(ratios)
    median = np.median(ratios, 0)
    spread = (np.percentile(ratios, 75, 0) - np.percentile(ratios, 25, 0)).round(4).tolist()
    return (
        dict(zip(("x", "y", "size"), median.tolist())),
        {**stats, "interquartile_range": dict(zip("xy", spread[:2]), size=spread[2])},
    )
