import torch

from keypoints.augment import Flip

PAIRS = [[0, 2], [1, 3]]  # the eyes specialist: left x, left y, right x, right y


def batch(n=6):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 96, 96, generator=g), torch.rand(n, 4, generator=g) * 2 - 1, (torch.rand(n, 4, generator=g) > 0.3).float()


def test_mirror_flips_pixels_negates_x_and_swaps_pairs():
    x, y, mask = batch()
    fx, fy, fm = Flip(PAIRS).mirror(x, y, mask)
    assert torch.equal(fx[..., 0], x[..., 95])
    # The flipped left eye is the mirrored right eye: x negated, y kept.
    assert torch.equal(fy[:, 0], -y[:, 2]) and torch.equal(fy[:, 1], y[:, 3])
    assert torch.equal(fy[:, 2], -y[:, 0]) and torch.equal(fm[:, 0], mask[:, 2])


def test_flipping_twice_is_identity():
    x, y, mask = batch()
    flip = Flip(PAIRS)
    assert all(torch.equal(a, b) for a, b in zip(flip.mirror(*flip.mirror(x, y, mask)), (x, y, mask)))


def test_flip_mirrors_about_half_the_batch_and_keeps_the_rest():
    torch.manual_seed(0)
    x, y, mask = batch(400)
    fx, fy, fm = Flip(PAIRS)(x, y, mask)
    mirrored = (fx != x).flatten(1).any(1)
    assert 150 < mirrored.sum() < 250
    assert torch.equal(fy[~mirrored], y[~mirrored])
    assert torch.equal(fy[mirrored], Flip(PAIRS).mirror(x, y, mask)[1][mirrored])


def test_no_pairs_only_negates_x():
    x, y, mask = batch()
    _, fy, _ = Flip([]).mirror(x, y[:, :2], mask[:, :2])
    assert torch.equal(fy, y[:, :2] * torch.tensor([-1.0, 1.0]))
