"""Augmentation on whole batches, on the batch's device: the tutorial's FlipBatchIterator, plus
random shifts, rotations and scale changes and brightness/contrast changes.

Each transform is a callable (x, y, mask) -> (x, y, mask) applied in training_step. Settings in
pixels are scaled by the faces' own size, as the targets are (keypoints.core.codec), for faces x of
(N, 1, size, size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache

import torch
import torch.nn.functional as F

from keypoints.core import codec


def mirror_offsets(offsets: Mapping[str, float] | None, columns: list[str], size: int) -> torch.Tensor | None:
    """`offsets` (pixels, by column name; conf/mirror) as a vector in `columns`' order and the
    normalised units of targets on faces of `size` pixels; None when there are none."""
    if not offsets:
        return None
    return torch.tensor([offsets.get(c, 0.0) / codec.scale(size) for c in columns])


@cache
def _mirror(n_outputs: int, flip_indices: tuple[tuple[int, int], ...], device: torch.device, dtype: torch.dtype):
    """Each column's sign in a mirrored face and the mirrored column order, as tensors made once per
    device: no copy from the host per batch (which a CUDA graph could not record either)."""
    with torch.inference_mode(False):  # kept for later batches, in or out of inference mode
        sign = torch.tensor(codec.mirror_signs(n_outputs), device=device, dtype=dtype)
        return sign, torch.tensor(codec.flip_permutation(n_outputs, list(flip_indices)), device=device)


def mirror_targets(
    y: torch.Tensor, flip_indices: list[tuple[int, int]], offset: torch.Tensor | None = None
) -> torch.Tensor:
    """Targets (N, K) of mirrored faces: x negated (targets are scaled to [-1, 1] about the image
    centre) and the left/right `flip_indices` pairs swapped, then `offset` (mirror_offsets) added:
    where the labels' own habits put a mirrored face's keypoints, when that is not the exact mirror."""
    # Traced (torch.export's fake tensors), the tensors belong to the trace: made anew, never cached.
    mirror = _mirror if type(y) is torch.Tensor else _mirror.__wrapped__
    sign, order = mirror(y.shape[1], tuple(map(tuple, flip_indices)), y.device, y.dtype)
    mirrored = (y * sign)[:, order]
    return mirrored if offset is None else mirrored + offset.to(y)


def unmirror_predictions(
    y: torch.Tensor, flip_indices: list[tuple[int, int]], offset: torch.Tensor | None = None
) -> torch.Tensor:
    """A mirrored face's predicted targets, mirrored back: the inverse of mirror_targets."""
    return mirror_targets(y if offset is None else y - offset.to(y), flip_indices)


def inside(y: torch.Tensor) -> torch.Tensor:
    """Which targets (N, K) belong to keypoints within the face, [-1, 1] in both x and y."""
    points = y.reshape(len(y), -1, 2)
    return (points.abs() <= 1).all(2, keepdim=True).expand_as(points).reshape(y.shape)


def centre_crop(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, size: int):
    """The middle `size` x `size` of faces x cropped with a margin (keypoints.data.coco's `data.margin`,
    so that shifted, turned and zoomed training faces show the photo rather than repeated edge
    pixels), targets rescaled to it; keypoints outside it become missing. Faces of `size` pass as they are."""
    if x.shape[-1] == size:
        return x, y, mask
    m = (x.shape[-1] - size) // 2
    y = y * (x.shape[-1] / size)
    mask = mask * inside(y)
    return x[..., m : m + size, m : m + size], y * mask, mask


class Flip:
    """Mirror a random half of the batch: x targets negated, left/right `flip_indices` pairs swapped,
    plus the labels' mirror `offsets` (pixels by column name of `columns`, conf/mirror) where they are
    measured.

    The presence mask is permuted with the targets, so a missing keypoint stays missing.
    """

    def __init__(
        self,
        flip_indices: list[list[int]],
        p: float,
        columns: list[str] | None = None,
        offsets: Mapping[str, float] | None = None,
    ):
        self.p = p
        self.flip_indices = [tuple(pair) for pair in flip_indices]
        self.columns, self.offsets = list(columns or []), offsets
        self._offsets: dict[tuple, torch.Tensor | None] = {}

    def mirror(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
        """Mirror every sample of the batch."""
        # The offsets in target units, made once per device and face size: no copy from the host per batch.
        key = (y.device, x.shape[-1])
        if key not in self._offsets:
            offset = mirror_offsets(self.offsets, self.columns, x.shape[-1])
            self._offsets[key] = None if offset is None else offset.to(y.device)
        _, order = _mirror(mask.shape[1], tuple(self.flip_indices), mask.device, mask.dtype)
        return x.flip(-1), mirror_targets(y, self.flip_indices, self._offsets[key]), mask[:, order]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
        chosen = torch.rand(len(x), device=x.device) < self.p
        fx, fy, fm = self.mirror(x, y, mask)
        pick = lambda a, b: torch.where(chosen.view(-1, *[1] * (a.dim() - 1)), a, b)
        return pick(fx, x), pick(fy, y), pick(fm, mask)


class Affine:
    """Shift, rotate and rescale each sample at random; keypoints move with the pixels.

    Targets (px - size/2) / (size/2) are exactly grid_sample's normalised coordinates with
    align_corners=False (pixel i's centre at (i + 0.5 - size/2) / (size/2), as the flip's
    px -> size - px assumes), so one matrix moves both. A keypoint that leaves the image becomes missing.
    `shift` is in pixels.
    """

    def __init__(self, shift: float, degrees: float, scale: float):
        self.shift = shift
        self.radians = math.radians(degrees)
        self.scale = scale

    def matrices(self, n: int, size: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Random forward maps p_out = A p_in + b for faces of `size` pixels: A (n, 2, 2), b (n, 2)."""
        u = lambda *shape: torch.rand(*shape, device=device, dtype=dtype) * 2 - 1
        angle, zoom = u(n) * self.radians, 1 + u(n) * self.scale
        cos, sin = angle.cos() * zoom, angle.sin() * zoom
        return torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2), u(n, 2) * (self.shift / codec.scale(size))

    def apply(self, x, y, mask, a: torch.Tensor, b: torch.Tensor):
        """Transform every sample by its (a, b)."""
        # grid_sample asks, for each output pixel, where to read from: the 2x2 inverse, written out
        # (elementwise: no linear-algebra library call, nothing for a CUDA graph to trip on).
        p, q, r, s = a.flatten(1).unbind(1)  # a = [[p, q], [r, s]]
        inverse = torch.stack([s, -q, -r, p], 1).view(-1, 2, 2) / (p * s - q * r).view(-1, 1, 1)
        theta = torch.cat([inverse, -inverse @ b.unsqueeze(2)], 2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Edge pixels are repeated rather than black corners no real photo has.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        points = (y.reshape(len(y), -1, 2) @ a.transpose(1, 2) + b.unsqueeze(1)).reshape(y.shape)  # x, y alternate
        mask = mask * inside(points)
        return x, points * mask, mask

    def __call__(self, x, y, mask):
        return self.apply(x, y, mask, *self.matrices(len(x), x.shape[-1], x.device, y.dtype))


class BrightnessContrast:
    """Scale each sample's contrast about its mean by 1 ± contrast and add ± brightness, in [0, 1]."""

    def __init__(self, brightness: float, contrast: float):
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, x, y, mask):
        u = lambda: torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) * 2 - 1
        mean = x.mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * (1 + u() * self.contrast) + mean + u() * self.brightness).clamp(0, 1)
        return x, y, mask
