import pytest
import torch

from keypoints.data.augment import (
    Affine,
    BrightnessContrast,
    Flip,
    mirror_offsets,
    mirror_targets,
    unmirror_predictions,
)

PAIRS = [[0, 2], [1, 3]]  # the eyes specialist: left x, left y, right x, right y


def batch(n=6):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n, 1, 96, 96, generator=g),
        torch.rand(n, 4, generator=g) * 2 - 1,
        (torch.rand(n, 4, generator=g) > 0.3).float(),
    )


def test_mirror_flips_pixels_negates_x_and_swaps_pairs():
    x, y, mask = batch()
    fx, fy, fm = Flip(PAIRS, p=0.5).mirror(x, y, mask)
    assert torch.equal(fx[..., 0], x[..., 95])
    # The flipped left eye is the mirrored right eye: x negated, y kept.
    assert torch.equal(fy[:, 0], -y[:, 2]) and torch.equal(fy[:, 1], y[:, 3])
    assert torch.equal(fy[:, 2], -y[:, 0]) and torch.equal(fm[:, 0], mask[:, 2])


def test_flipping_twice_is_identity():
    x, y, mask = batch()
    flip = Flip(PAIRS, p=0.5)
    assert all(torch.equal(a, b) for a, b in zip(flip.mirror(*flip.mirror(x, y, mask)), (x, y, mask)))


def test_flip_mirrors_about_half_the_batch_and_keeps_the_rest():
    torch.manual_seed(0)
    x, y, mask = batch(400)
    fx, fy, fm = Flip(PAIRS, p=0.5)(x, y, mask)
    mirrored = (fx != x).flatten(1).any(1)
    assert 150 < mirrored.sum() < 250
    assert torch.equal(fy[~mirrored], y[~mirrored])
    assert torch.equal(fy[mirrored], Flip(PAIRS, p=0.5).mirror(x, y, mask)[1][mirrored])


EYES = ["left_eye_center_x", "left_eye_center_y", "right_eye_center_x", "right_eye_center_y"]


@pytest.mark.parametrize("size", [96, 128])
def test_mirror_offsets_move_the_mirrored_labels_and_tta_takes_them_off(size):
    x, y, mask = batch()
    x = torch.nn.functional.interpolate(x, size=size)  # faces of `size` pixels: offsets are in its pixels
    offsets = {"left_eye_center_x": 2.4, "right_eye_center_y": -0.48}
    flip = Flip(PAIRS, p=0.5, columns=EYES, offsets=offsets)
    _, fy, _ = flip.mirror(x, y, mask)
    exact = Flip(PAIRS, p=0.5).mirror(x, y, mask)[1]
    assert torch.allclose(fy - exact, torch.tensor([2.4, 0.0, 0.0, -0.48]).expand_as(fy) / (size / 2))
    # Flip TTA mirrors a prediction for the mirrored face back: the offsets come off before the mirror.
    assert torch.allclose(unmirror_predictions(fy, flip.flip_indices, mirror_offsets(offsets, EYES, size)), y)
    assert torch.equal(unmirror_predictions(exact, flip.flip_indices), y)
    assert torch.equal(mirror_targets(y, flip.flip_indices), exact)


def test_no_pairs_only_negates_x():
    x, y, mask = batch()
    _, fy, _ = Flip([], p=0.5).mirror(x, y[:, :2], mask[:, :2])
    assert torch.equal(fy, y[:, :2] * torch.tensor([-1.0, 1.0]))


def dots(points_px: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """One 96x96 image per (x, y) in pixels, each a Gaussian dot there (pixel i spans [i, i + 1])."""
    centres = torch.arange(96) + 0.5
    gx = torch.exp(-((centres - points_px[:, :1]) ** 2) / (2 * sigma**2))  # (n, 96) over columns
    gy = torch.exp(-((centres - points_px[:, 1:]) ** 2) / (2 * sigma**2))  # (n, 96) over rows
    return (gy[:, :, None] * gx[:, None, :]).unsqueeze(1)


def dot_centres(images: torch.Tensor) -> torch.Tensor:
    """Each image's intensity-weighted centre (x, y) in pixels."""
    centres = torch.arange(96) + 0.5
    weights = images[:, 0]
    total = weights.sum((1, 2))
    return torch.stack([(weights.sum(1) * centres).sum(1) / total, (weights.sum(2) * centres).sum(1) / total], 1)


def to_targets(px):
    return (px - 48) / 48


def test_a_dot_drawn_at_a_keypoint_lands_on_the_moved_keypoint():
    torch.manual_seed(0)
    n = 64
    points = 14 + torch.rand(n, 2) * 68  # far from the centre, where a scale error shows most
    affine = Affine(shift=4, degrees=25, scale=0.15)  # larger than in training: errors show more
    x, y, mask = affine(dots(points), to_targets(points), torch.ones(n, 2))
    assert mask.all()  # every dot stayed in the image
    moved = y * 48 + 48
    assert (moved - points).norm(dim=1).mean() > 3  # the transforms really move the keypoints
    # A quarter pixel: mixing grid_sample's pixel conventions (align_corners) misses by up to 0.5.
    assert (dot_centres(x) - moved).norm(dim=1).max() < 0.25


def test_a_dot_drawn_at_a_keypoint_lands_on_the_flipped_keypoint():
    points = torch.tensor([[20.3, 40.0], [70.0, 33.6], [48.0, 50.0]])
    x, y, _ = Flip([], p=0.5).mirror(dots(points), to_targets(points), torch.ones(3, 2))
    assert torch.allclose(dot_centres(x), y * 48 + 48, atol=0.05)


def test_keypoints_that_leave_the_image_become_missing():
    affine = Affine(shift=0, degrees=0, scale=0)
    y = to_targets(torch.tensor([[90.0, 40.0, 50.0, 50.0]]))  # a keypoint near the right edge, one central
    a, b = torch.eye(2).unsqueeze(0), torch.tensor([[10 / 48, 0.0]])  # 10 pixels to the right
    _, moved, mask = affine.apply(torch.zeros(1, 1, 96, 96), y, torch.ones(1, 4), a, b)
    assert mask.tolist() == [[0, 0, 1, 1]] and moved[0, :2].tolist() == [0, 0]
    assert torch.allclose(moved[0, 2:] * 48 + 48, torch.tensor([60.0, 50.0]))


@pytest.mark.parametrize("size", [96, 128])
def test_affine_shifts_are_in_the_faces_own_pixels(size):
    torch.manual_seed(0)
    _, b = Affine(shift=4, degrees=0, scale=0).matrices(2000, size, "cpu", torch.float32)
    assert 3.9 < float(b.abs().max()) * size / 2 <= 4.0


def test_missing_keypoints_stay_missing_under_affine():
    torch.manual_seed(0)
    x, y, mask = batch(32)
    _, _, moved_mask = Affine(shift=4, degrees=10, scale=0.08)(x, y, mask)
    assert not moved_mask[mask == 0].any()


def test_brightness_contrast_keeps_keypoints_and_the_pixel_range():
    torch.manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(200, 1, 96, 96)
    _, y, mask = batch(200)
    out, out_y, out_mask = BrightnessContrast(brightness=0.1, contrast=0.2)(x, y, mask)
    assert torch.equal(out_y, y) and torch.equal(out_mask, mask)
    assert out.min() >= 0 and out.max() <= 1
    shift = out.mean((1, 2, 3)) - x.mean((1, 2, 3))
    ratio = out.std((1, 2, 3)) / x.std((1, 2, 3))
    assert shift.abs().max() <= 0.1 + 1e-5 and shift.std() > 0.03  # each sample its own brightness
    assert ratio.min() >= 0.8 - 1e-4 and ratio.max() <= 1.2 + 1e-4 and ratio.std() > 0.05
