"""The codec: keypoints in pixels <-> the nets' targets, and their mirror image.

Targets are keypoints scaled by the face's own size: on a face of `size` x `size` pixels, t = (px -
size/2) / (size/2), the face's centre 0 and its edges ±1, whatever the size; they are also
grid_sample's normalised coordinates (align_corners=False), which keypoints.data.augment relies on.
Mirroring a face (px -> size - px) negates its x targets and swaps its left/right keypoints.

Plain arithmetic, so numpy arrays, torch tensors and floats all pass, each in its own dtype, and the
core needs no torch. Every conversion goes through here, so that each site computes the same bits.
"""

from __future__ import annotations

from typing import TypeVar

Values = TypeVar("Values")  # a float, numpy array or torch tensor


def scale(size: float) -> float:
    """Pixels per target unit, size / 2: an RMSE or offset in target units times it is in pixels,
    one in pixels divided by it is in target units."""
    return size / 2


def to_targets(px: Values, size: float) -> Values:
    """Keypoints in pixels of faces of `size` -> targets."""
    half = scale(size)
    return (px - half) / half


def to_pixels(t: Values, size: float) -> Values:
    """Targets (or predictions) -> keypoints in pixels of faces of `size`: the inverse of to_targets."""
    half = scale(size)
    return t * half + half


def mirror_signs(n_outputs: int) -> list[int]:
    """Each column's sign in a mirrored face: x (the even columns; x, y alternate) negated, y kept."""
    return [-1 if i % 2 == 0 else 1 for i in range(n_outputs)]


def flip_permutation(n_outputs: int, flip_indices: list[tuple[int, int]]) -> list[int]:
    """The column order of a mirrored face: each left/right pair of `flip_indices` swapped."""
    perm = list(range(n_outputs))
    for a, b in flip_indices:
        perm[a], perm[b] = b, a
    return perm
