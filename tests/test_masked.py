"""The masked loss: MSE over the keypoints each row has."""
import torch

from keypoints.module import masked_mse


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
