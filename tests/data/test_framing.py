"""Framing: a face put into a larger photo at a known scale, rotation and offset comes back in photo pixels."""

import math

import cv2
import numpy as np
import pytest
from conftest import KAGGLE15
from omegaconf import OmegaConf

from keypoints.data import framing
from keypoints.photos import detect

COLUMNS, KEYPOINTS = KAGGLE15.columns, KAGGLE15.names

# A face of 15 discs, one grey level each, at these 96x96 positions: the eyes and the bottom lip where
# conf/framing.yaml's canonical anchors are, the others spread out so that no two discs touch.
PLACES = {"left_eye_center": (65, 37), "right_eye_center": (32, 38), "mouth_center_bottom_lip": (49.5, 81.4)}
OTHERS = [
    (48, 20),
    (80, 20),
    (16, 20),
    (48, 37),
    (80, 37),
    (16, 37),
    (48, 54),
    (80, 54),
    (16, 54),
    (32, 66),
    (66, 66),
    (20, 82),
]
FACE = np.array([PLACES[k] if k in PLACES else OTHERS.pop(0) for k in KEYPOINTS], float)
LEVELS = 10 + 15 * np.arange(len(KEYPOINTS))  # grey levels of the discs; the background is 255
RADIUS = 5  # crop pixels


class DiscFinder:
    """A stand-in for a trained net of faces of `size` pixels: each keypoint is the darkness-weighted
    centroid of its disc in the crop, the disc told from the others by its grey level."""

    columns, keypoints, flip = COLUMNS, KEYPOINTS, False

    def __init__(self, size=96):
        self.size = size

    def __call__(self, faces):
        out = np.full((len(faces), len(COLUMNS)), self.size / 2)
        for n, face in enumerate(faces[:, 0] * 255):
            for k, level in enumerate(LEVELS):
                level_set = (np.abs(face - level) < 0.5).astype(np.uint8)
                count, labels, stats, _ = cv2.connectedComponentsWithStats(level_set)
                if count > 1:  # the disc's inside, grown to take in its anti-aliased rim
                    inside = (labels == 1 + stats[1:, cv2.CC_STAT_AREA].argmax()).astype(np.uint8)
                    disc = cv2.dilate(inside, np.ones((7, 7), np.uint8)) > 0
                    ys, xs = np.nonzero(disc)
                    weight = 255 - face[ys, xs]
                    out[n, 2 * k : 2 * k + 2] = (xs + 0.5) @ weight / weight.sum(), (ys + 0.5) @ weight / weight.sum()
        return out


def photo_of(frame: framing.Frame, shape=(300, 400), supersample=4) -> np.ndarray:
    """A white photo with the face's discs drawn, anti-aliased, where `frame` puts them."""
    photo = np.full(shape, 255.0)
    radius = RADIUS * frame.size / 96
    for (x, y), level in zip(frame.to_photo(FACE * frame.pixels / 96), LEVELS):
        top, left = int(y - radius - 2), int(x - radius - 2)
        side = (2 * int(radius) + 5) * supersample
        ys, xs = (np.mgrid[:side, :side] + 0.5) / supersample
        inside = np.hypot(xs + left - x, ys + top - y) <= radius
        cover = inside.reshape(inside.shape[0] // supersample, supersample, -1, supersample).mean((1, 3))
        patch = photo[top : top + cover.shape[0], left : left + cover.shape[1]]
        patch -= cover * (patch - level)
    return np.rint(photo).astype(np.uint8)


@pytest.mark.parametrize(
    "cx, cy, size, angle, pixels",
    [
        (210.3, 160.7, 211.0, 0.3, 96),
        (150.0, 120.0, 120.0, -0.2, 96),
        (200.5, 150.2, 96.0, 0.0, 96),
        (210.3, 160.7, 211.0, 0.3, 128),
    ],
)
def test_a_face_placed_at_a_known_scale_rotation_and_offset_comes_back_in_photo_pixels(cx, cy, size, angle, pixels):
    """Also for a model of 128 px faces: its frames are 128 px crops, its anchors' places scaled."""
    cfg = OmegaConf.merge(detect.settings(), {"refine": 1, "rotate": True})
    detector = detect.Detector(DiscFinder(pixels), cfg=cfg)
    truth = framing.Frame(cx, cy, size, pixels, angle)
    # The finder's box for this face: the box whose map gives the upright frame of the same centre and size.
    m = cfg.box_to_frame
    side = size / m.size
    box = np.array([cx - m.x * side, cy - m.y * side, cx - m.x * side + side, cy - m.y * side + side])
    detector.finder = lambda grey: box[None]
    found, passes = detector.find(photo_of(truth))
    (face,) = found.faces
    np.testing.assert_allclose(face.box, box)
    np.testing.assert_allclose(face.keypoints, truth.to_photo(FACE * pixels / 96), atol=0.1 * size / 96)
    assert len(passes) == 2


def test_frames_from_points_undo_scale_shift_and_roll():
    frame = framing.Frame(100.0, 50.0, 200.0, 96, 0.3)
    points = np.random.default_rng(0).uniform(0, 96, (5, 2))
    np.testing.assert_allclose(frame.to_crop(frame.to_photo(points)), points)
    again = framing.from_points(frame.to_photo(points), points, True, 96)
    assert again.cx == pytest.approx(100) and again.cy == pytest.approx(50)
    assert again.size == pytest.approx(200) and again.angle == pytest.approx(0.3)
    upright = framing.from_points(frame.to_photo(points), points, False, 96)
    assert upright.angle == 0 and math.isfinite(upright.size)


@pytest.mark.parametrize("rotate", [True, False])
def test_a_similarity_fit_says_how_far_the_points_stay_from_their_places(rotate):
    rng = np.random.default_rng(1)
    canonical = rng.uniform(20, 76, (6, 2))
    placed = framing.Frame(300.0, 200.0, 150.0, 96, 0.2 if rotate else 0.0)  # a roll only where the fit undoes it
    photo = placed.to_photo(canonical + rng.normal(0, 2.0, (6, 2)))
    frame, residual = framing.similarity(photo, canonical, rotate, 96)
    assert frame == framing.from_points(photo, canonical, rotate, 96)
    rms = np.sqrt(((frame.to_crop(photo) - canonical) ** 2).sum(1).mean())  # in the fit's own crop
    assert residual == pytest.approx(rms) and 0.5 < residual < 5
    assert framing.similarity(placed.to_photo(canonical), canonical, rotate, 96)[1] == pytest.approx(0, abs=1e-6)


def test_a_crop_is_resampled_as_the_training_faces_were_made():
    """Pillow's EXTENT transform, bilinear, on the photo with its edge pixels repeated beyond it."""
    from PIL import Image

    photo = np.random.default_rng(1).integers(0, 256, (60, 80), np.uint8)
    frame = framing.Frame(70.0, 20.0, 48.0, 96)  # leaves the photo on the right and at the top
    padded = Image.fromarray(np.pad(photo, 40, mode="edge"))
    x0, y0 = 70 - 24 + 40, 20 - 24 + 40
    expected = np.asarray(
        padded.transform((96, 96), Image.Transform.EXTENT, (x0, y0, x0 + 48, y0 + 48), Image.Resampling.BILINEAR)
    )
    assert np.abs(frame.crop(photo, max_step=4).astype(int) - expected).max() <= 1  # float rounding at most


def test_a_big_face_is_box_filtered_before_resampling():
    photo = np.random.default_rng(2).integers(0, 256, (2000, 2000), np.uint8)
    crop = framing.Frame(1000.0, 1000.0, 1900.0, 96).crop(photo, max_step=4)
    assert crop.shape == (96, 96) and crop.std() < photo.std() / 3  # noise averaged, not sampled


def test_the_shared_photos_give_back_realfaces_own_96x96_faces(realfaces):
    """Each photo is the uncropped frame of a realfaces training face: framed where that face's keypoints
    say, the crop is that face, pixel for pixel (up to rounding)."""
    import pandas as pd

    from keypoints.data import images

    photos = realfaces.parent / "photos"
    labels = pd.read_csv(photos / "keypoints.csv").head(6)
    rows = pd.read_csv(realfaces / "training.csv.gz").iloc[labels["training_row"]]
    for (_, label), (_, row) in zip(labels.iterrows(), rows.iterrows()):
        photo_points = label[list(COLUMNS)].to_numpy(float).reshape(-1, 2)
        face_points = row[list(COLUMNS)].to_numpy(float).reshape(-1, 2)
        known = ~np.isnan(face_points[:, 0])
        frame = framing.from_points(photo_points[known], face_points[known], False, 96)
        crop = frame.crop(images.grey(images.read(photos / label["file"])), max_step=4)
        face = np.array(row["Image"].split(), int).reshape(96, 96)
        assert np.abs(crop.astype(int) - face).max() <= 1, label["file"]


def test_a_face_set_into_a_photo_keeps_its_points_where_in_photo_says():
    """framefit and benchmarks.reframe place 96x96 faces in photos; a dark spot must land where in_photo
    puts its centre, or the box-to-frame map and the re-framing scores would be measured off target."""
    from keypoints.photos.framefit import as_photo, in_photo

    face = np.full((96, 96), 200, np.uint8)
    face[30:32, 40:42] = 0  # centre (41, 31) in continuous pixel coordinates
    photo = as_photo(face).astype(float)
    darkness = np.clip(200 - photo, 0, None)
    ys, xs = np.indices(photo.shape)
    centroid = ((xs + 0.5) * darkness).sum() / darkness.sum(), ((ys + 0.5) * darkness).sum() / darkness.sum()
    assert photo.shape == (576, 576)
    np.testing.assert_allclose(centroid, in_photo(np.array([41.0, 31.0]), 96), atol=0.05)
