import pytest
import torch

from keypoints.training.schedules import LinearLrMomentum


def test_linear_lr_and_momentum_at_first_and_last_epoch():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5, momentum=0.5, nesterov=True)
    schedule = LinearLrMomentum(optimizer, lr=(0.03, 0.0001), momentum=(0.9, 0.999), epochs=100)
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.03) and group["momentum"] == pytest.approx(0.9)
    for _ in range(50):
        optimizer.step()
        schedule.step()
    assert group["lr"] == pytest.approx(0.03 + 50 / 99 * (0.0001 - 0.03))
    for _ in range(49):
        optimizer.step()
        schedule.step()
    assert group["lr"] == pytest.approx(0.0001) and group["momentum"] == pytest.approx(0.999)
    optimizer.step()
    schedule.step()  # past max_epochs (a resumed run) it holds the last values
    assert group["lr"] == pytest.approx(0.0001)
