"""The One Euro filter (Casiez, Roussel and Vogel, CHI 2012), written here (it is a few lines): a low-pass
filter whose cutoff rises with the signal's speed, so that a still point stops jittering and a moving one
does not lag. Applied elementwise to an array of coordinates."""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """The smoothing factor of a first-order low-pass filter of `cutoff` Hz over `dt` seconds."""
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """`min_cutoff` (Hz): the cutoff of a still signal (lower: smoother, more lag); `beta`: how fast the
    cutoff rises with speed (higher: less lag when moving); `d_cutoff` (Hz): the cutoff of the speed
    estimate. `scale`, per call: the unit the speed is measured in (a face's size, so that the same
    settings suit a face near and far: as if the values were divided by it before filtering and
    multiplied back after, without turning the size's own jitter into the points')."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the signal: the next sample is taken as it is."""
        self.t = self.x = self.dx = None

    def __call__(self, t: float, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.t is None or t <= self.t:  # the first sample, or a clock that did not advance: nothing to filter
            if self.t is None:
                self.t, self.x, self.dx = t, x, np.zeros_like(x)
            return self.x
        dt, self.t = t - self.t, t
        a_d = _alpha(self.d_cutoff, dt)
        self.dx = a_d * (x - self.x) / dt + (1 - a_d) * self.dx
        a = _alpha(self.min_cutoff + self.beta * np.abs(self.dx) / scale, dt)
        self.x = a * x + (1 - a) * self.x
        return self.x
