"""The embedded default dataset: synthetic 96x96 grey faces in Kaggle's Facial Keypoints Detection format.

A fresh clone has no data, so the project can generate, deterministically, a stand-in with the same
files, columns and missing-label pattern. Every keypoint is a vertex of a rendered shape (eye corners
are the tips of the eye's almond, the nose tip is the bottom of the nostril stroke, ...), so the labels
are exactly where the features are; pose, lighting, clutter, blur and noise keep the task from being
a lookup.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from keypoints.core.keypointset import columns

N = 96  # px: Kaggle's faces are 96x96
# The template face: (x, y, depth towards the camera) in pixels, at Kaggle's average positions.
# The first 15 points are the labelled KEYPOINTS, Kaggle's in its order (the kaggle15 keypoint
# set's names); the rest are helpers that shape the drawing.
_TEMPLATE = {
    "left_eye_center": (66, 37, 6),
    "right_eye_center": (30, 37, 6),
    "left_eye_inner_corner": (59, 37, 5),
    "left_eye_outer_corner": (73, 38, 0),
    "right_eye_inner_corner": (36, 37, 5),
    "right_eye_outer_corner": (22, 38, 0),
    "left_eyebrow_inner_end": (56, 29, 8),
    "left_eyebrow_outer_end": (80, 30, 0),
    "right_eyebrow_inner_end": (39, 29, 8),
    "right_eyebrow_outer_end": (16, 30, 0),
    "nose_tip": (48, 62, 22),
    "mouth_left_corner": (63, 76, 6),
    "mouth_right_corner": (33, 76, 6),
    "mouth_center_top_lip": (48, 72, 10),
    "mouth_center_bottom_lip": (48, 80, 10),
    "head": (48, 52, -15),
    "hair": (48, 44, -15),  # the outline is the silhouette of a head behind the face
    "left_lid_top": (66, 33, 6),
    "left_lid_bottom": (66, 40, 6),
    "right_lid_top": (30, 33, 6),
    "right_lid_bottom": (30, 40, 6),
    "left_brow_arch": (68, 26, 5),
    "right_brow_arch": (28, 26, 5),
    "left_nose_top": (52, 40, 12),
    "left_nose_bottom": (53, 57, 14),
    "right_nose_top": (44, 40, 12),
    "right_nose_bottom": (43, 57, 14),
    "left_nose_wing": (55, 59, 14),
    "right_nose_wing": (41, 59, 14),
    "mouth_gap_top": (48, 75, 10),
    "mouth_gap_bottom": (48, 76.5, 10),
}
KEYPOINTS = tuple(_TEMPLATE)[:15]
COLUMNS = columns(KEYPOINTS)
# The keypoints every Kaggle training row has; the other 11 are missing in ~70% of rows.
ALWAYS_LABELLED = ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip")
_INDEX = {name: i for i, name in enumerate(_TEMPLATE)}
_FOCAL = 150.0  # perspective: the far side of a turned face looks compressed
_AXIS = np.arange(N, dtype=np.float32)
_UPSAMPLE = np.clip(1 - np.abs(np.linspace(0, 3, N)[:, None] - np.arange(4)), 0, None)  # 4 -> 96, bilinear
_ALWAYS = np.isin(KEYPOINTS, ALWAYS_LABELLED)
_BATCH = 250  # fixed, so the random stream (and thus the output) doesn't depend on memory


def _pose(rng: np.random.Generator, n: int):
    """Project the template under random yaw, in-plane roll, scale and shift: points (n, P, 2), roll, scale."""
    x, y, z = (np.array(list(_TEMPLATE.values()), dtype=float) - (48, 50, 0)).T
    yaw = rng.uniform(-0.3, 0.3, (n, 1))
    xr, zr = x * np.cos(yaw) + z * np.sin(yaw), z * np.cos(yaw) - x * np.sin(yaw)
    px, py = xr * _FOCAL / (_FOCAL - zr), y * _FOCAL / (_FOCAL - zr)
    roll, scale = rng.uniform(-0.28, 0.28, (n, 1)), rng.uniform(0.9, 1.1, (n, 1))
    cos, sin, shift = np.cos(roll) * scale, np.sin(roll) * scale, rng.uniform(-5, 5, (n, 2, 1))
    points = np.stack([48 + cos * px - sin * py + shift[:, 0], 50 + sin * px + cos * py + shift[:, 1]], -1)
    return points, roll[:, :, None].astype(np.float32), scale[:, :, None].astype(np.float32)


def _xy(p):
    p = p.astype(np.float32)  # float64 points would make every pixel array float64, twice as slow
    return p[:, 0, None, None], p[:, 1, None, None]


def _paint(img, dist, tone):
    """Blend tone into img where the signed distance to a shape is negative, anti-aliased over a pixel."""
    img += np.clip(0.5 - dist, 0, 1) * (tone - img)


def _segment(g, a, b, radius):
    (x, y), (ax, ay), (bx, by) = g, _xy(a), _xy(b)
    dx, dy = bx - ax, by - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy + 1e-6), 0, 1)
    return np.hypot(x - ax - t * dx, y - ay - t * dy) - radius


def _ellipse(g, c, ax, ay, angle):
    (x, y), (cx, cy) = g, _xy(c)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = (y - cy) * np.cos(angle) - (x - cx) * np.sin(angle)
    return (np.sqrt((u / ax) ** 2 + (v / ay) ** 2) - 1) * ax


def _lens(g, a, b, top, bottom):
    """Signed distance (roughly) to the almond with tips a, b whose two edges bend through top and bottom."""
    (x, y), (ax, ay), (bx, by) = g, _xy(a), _xy(b)
    length = np.hypot(bx - ax, by - ay)
    ex, ey = (bx - ax) / length, (by - ay) / length
    u, v = (x - ax) * ex + (y - ay) * ey, (y - ay) * ex - (x - ax) * ey
    edges = []
    for px, py in (_xy(top), _xy(bottom)):
        pu, pv = (px - ax) * ex + (py - ay) * ey, (py - ay) * ex - (px - ax) * ey
        edges.append(pv * np.minimum(u / pu, (length - u) / (length - pu)))  # piecewise linear a -> p -> b
    inside = np.maximum(np.minimum(*edges) - v, v - np.maximum(*edges))
    return np.maximum(inside, np.maximum(-u, u - length))


@contextmanager
def _patch(img, centre, size: int = 40):
    """The size x size patch of every image around its centre point (moved inside the image), and its
    pixel grid; drawn on, it is written back. Features are small: drawing them on the whole frame is slow."""
    o = np.clip(np.rint(centre) - size // 2, 0, N - size).astype(int)
    xs, ys = o[:, :1] + np.arange(size), o[:, 1:] + np.arange(size)
    index = (np.arange(len(o))[:, None, None], ys[:, :, None], xs[:, None, :])
    patch = img[index]
    yield patch, (xs[:, None, :].astype(np.float32), ys[:, :, None].astype(np.float32))
    img[index] = patch


def _render(pts, roll, scale, rng) -> np.ndarray:
    """Draw a batch of faces: uint8 (B, 96, 96)."""
    b = len(pts)
    at = lambda name: pts[:, _INDEX[name]]  # noqa: E731
    tone = lambda lo, hi: rng.uniform(lo, hi, (b, 1, 1)).astype(np.float32)  # noqa: E731
    full = (_AXIS[None, None, :], _AXIS[None, :, None])
    # Background: a smooth random texture plus a few strokes and blobs of clutter.
    img = (_UPSAMPLE @ rng.uniform(0, 255, (b, 4, 4)) @ _UPSAMPLE.T).astype(np.float32)
    for _ in range(3):
        a = rng.uniform(0, N, (b, 2))
        with _patch(img, a) as (patch, g):
            _paint(patch, _segment(g, a, a + rng.uniform(-10, 10, (b, 2)), tone(1, 6)), tone(0, 255))
    skin = tone(90, 220)
    _paint(img, _ellipse(full, at("hair"), 42 * scale, 46 * scale, roll), tone(0, 255))
    _paint(img, _ellipse(full, at("head"), 38 * scale, 42 * scale, roll), skin)
    for side in ("left", "right"):
        centre, arch = at(f"{side}_eye_center"), at(f"{side}_brow_arch")
        with _patch(img, centre) as (patch, g):
            eye = _lens(
                g,
                at(f"{side}_eye_inner_corner"),
                at(f"{side}_eye_outer_corner"),
                at(f"{side}_lid_top"),
                at(f"{side}_lid_bottom"),
            )
            _paint(patch, eye, np.minimum(skin + tone(20, 80), 255))  # the white of the eye
            _paint(patch, np.maximum(eye, _segment(g, centre, centre, 2.6)), tone(0, 60))  # iris, cut by the lids
            _paint(
                patch,
                np.minimum(
                    _segment(g, at(f"{side}_eyebrow_inner_end"), arch, 1.6),
                    _segment(g, arch, at(f"{side}_eyebrow_outer_end"), 1.1),
                ),
                skin * tone(0.2, 0.6),
            )
    with _patch(img, (at("left_nose_top") + at("nose_tip")) / 2) as (patch, g):
        for side in ("left", "right"):  # shading along the sides of the nose, then the nostrils' stroke
            _paint(patch, _segment(g, at(f"{side}_nose_top"), at(f"{side}_nose_bottom"), 1.0), skin * tone(0.75, 0.95))
            _paint(patch, _segment(g, at(f"{side}_nose_wing"), at("nose_tip"), 0.9), skin * tone(0.3, 0.6))
    corners = at("mouth_right_corner"), at("mouth_left_corner")
    with _patch(img, (corners[0] + corners[1]) / 2) as (patch, g):
        _paint(
            patch, _lens(g, *corners, at("mouth_center_top_lip"), at("mouth_center_bottom_lip")), skin * tone(0.5, 0.85)
        )
        _paint(patch, _lens(g, *corners, at("mouth_gap_top"), at("mouth_gap_bottom")), skin * tone(0.1, 0.4))
    # Lighting: a gradient in a random direction, then contrast and brightness; then blur and sensor noise.
    angle = tone(0, 2 * np.pi)
    img *= 1 + tone(-0.4, 0.4) * ((full[0] - 48) * np.cos(angle) + (full[1] - 48) * np.sin(angle)) / 48
    img = (img - 128) * tone(0.5, 1.2) + 128 + tone(-40, 40)
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = pad[:, :-2] + pad[:, 1:-1] + pad[:, 2:]
    img += tone(0, 1) * ((rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9 - img)  # partly out of focus
    img += rng.standard_normal(img.shape, dtype=np.float32) * tone(2, 12)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# "i " for every byte value, NUL-padded to 4 bytes: turns a whole image into Kaggle's text in one lookup.
_DIGITS = np.array([list(f"{i} ".encode().ljust(4, b"\0")) for i in range(256)], dtype=np.uint8)


def _faces(rng: np.random.Generator, n: int):
    """n random faces: keypoints (n, 15, 2) and images as Kaggle's space-separated pixel strings."""
    points, texts = [], []
    for start in range(0, n, _BATCH):
        pts, roll, scale = _pose(rng, min(_BATCH, n - start))
        chars = _DIGITS[_render(pts, roll, scale, rng).reshape(len(pts), -1)].reshape(len(pts), -1)
        texts += [row[row != 0][:-1].tobytes().decode() for row in chars]
        points.append(pts[:, : len(KEYPOINTS)])
    return np.concatenate(points) if points else np.zeros((0, len(KEYPOINTS), 2)), texts


def _write(path: Path, header: str, lines) -> None:
    """Write a CSV via a temporary name, so an interrupted run never leaves a complete-looking file.

    By hand rather than with pandas: the csv module crawls through 36 kB pixel strings char by char.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(header + "\n")
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def generate(out_dir: str | Path, n_train: int, n_test: int, seed: int) -> Path:
    """Write training.csv, test.csv, IdLookupTable.csv into out_dir (created if needed); return out_dir.

    training.csv is written last, so its presence means the whole dataset is there.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Independent streams: the training set doesn't change with n_test.
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    points, train_images = _faces(train_rng, n_train)
    _, test_images = _faces(test_rng, n_test)
    # Like Kaggle: ~30% of rows fully labelled, the rest only ALWAYS_LABELLED; nothing outside the image.
    complete = train_rng.random(n_train) < 0.3
    labelled = (complete[:, None] | _ALWAYS) & ((points >= 0) & (points <= N)).all(axis=2)
    labels = np.where(labelled[:, :, None], points, np.nan).reshape(n_train, len(COLUMNS))
    asked = np.repeat((test_rng.random(n_test)[:, None] < 0.3) | _ALWAYS, 2, axis=1)  # x and y of each keypoint
    image, column = np.nonzero(asked)
    _write(out / "test.csv", "ImageId,Image", (f"{i},{text}" for i, text in enumerate(test_images, 1)))
    _write(
        out / "IdLookupTable.csv",
        "RowId,ImageId,FeatureName,Location",
        (f"{row},{i + 1},{COLUMNS[c]}," for row, (i, c) in enumerate(zip(image, column), 1)),
    )
    _write(
        out / "training.csv",
        ",".join((*COLUMNS, "Image")),
        (
            ",".join("" if v != v else f"{v:.4f}" for v in row) + "," + text  # v != v: NaN, empty as in Kaggle
            for row, text in zip(labels.tolist(), train_images)
        ),
    )
    return out
