"""The masked losses: MSE (or Huber's loss) over the keypoints each row has."""

import torch
from conftest import compose
from hydra.utils import instantiate

from keypoints.training.module import masked_mean, masked_mse


def data(n=16, k=30):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, k, generator=g), torch.randn(n, k, generator=g), (torch.rand(n, k, generator=g) > 0.4).float()


def test_equals_plain_mse_when_nothing_is_missing():
    pred, target, _ = data()
    assert torch.allclose(masked_mse(pred, target, torch.ones_like(target)), torch.nn.functional.mse_loss(pred, target))


def test_is_the_mean_over_present_targets_only():
    pred, target, mask = data()
    present = mask.bool()
    expected = ((pred[present] - target[present]) ** 2).mean()
    assert torch.allclose(masked_mse(pred, target, mask), expected)
    # Whatever sits in a missing target's place changes nothing.
    assert torch.equal(masked_mse(pred, target + 100 * (1 - mask), mask), masked_mse(pred, target, mask))


def test_missing_targets_get_no_gradient():
    pred, target, mask = data()
    pred.requires_grad_(True)
    masked_mse(pred, target, mask).backward()
    assert torch.all(pred.grad[mask == 0] == 0)
    assert torch.all(pred.grad[mask == 1] != 0)


def test_the_huber_loss_is_the_mse_below_three_pixels_and_linear_beyond():
    loss = compose("loss=huber").loss
    criterion = instantiate(loss.criterion)
    error = torch.tensor([[1.0, 2.9, 10.0, 40.0]]) / 48  # pixels, in the targets' units
    delta = 3 / 48
    expected = torch.where(error < delta, error**2 / 2, delta * (error - delta / 2))
    torch.testing.assert_close(criterion(error, torch.zeros_like(error)), expected)
    # Over the present targets only, like the masked MSE; on every row that has any keypoint.
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(
        masked_mean(criterion(error, torch.zeros_like(error)), mask), (expected[0, 0] + expected[0, 2]) / 2
    )
    assert loss.drop_incomplete is False
