"""Landmark smoothing as MediaPipe's ``pose_landmark_filtering.pbtxt`` does it.

Two filters, both vectorised over every landmark coordinate at once:

* :class:`OneEuroFilter` on pixel coordinates, its speed term scaled by 1 / object size;
* :class:`VisibilityFilter`, a plain low-pass on visibility.

Parameters and reset rules: shared/research/blazepose.md §8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DEFAULT_FREQUENCY_HZ = 30.0
"""Used until two timestamps give a real frame rate."""

MIN_OBJECT_SCALE_PX = 1e-6
"""Below this object size the landmarks pass through unfiltered."""


@dataclass(frozen=True)
class OneEuroParameters:
    min_cutoff_hz: float
    beta: float
    derivative_cutoff_hz: float


POSE_LANDMARK_FILTER = OneEuroParameters(min_cutoff_hz=0.05, beta=80.0, derivative_cutoff_hz=1.0)
"""The 33 body landmarks."""

AUXILIARY_LANDMARK_FILTER = OneEuroParameters(
    min_cutoff_hz=0.01, beta=10.0, derivative_cutoff_hz=1.0
)
"""The 2 auxiliary landmarks that place the next frame's ROI."""

VISIBILITY_ALPHA = 0.1


def _alpha(cutoff_hz: NDArray[np.float64] | float, frequency_hz: float) -> NDArray[np.float64]:
    """Smoothing factor of a first-order low-pass at ``cutoff_hz`` sampled at ``frequency_hz``."""
    time_constant_s = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return np.asarray(1.0 / (1.0 + time_constant_s * frequency_hz), dtype=np.float64)


class OneEuroFilter:
    """One-Euro filter over an array of values (e.g. 33×3 pixel coordinates).

    ``apply`` ignores a sample whose timestamp is not after the previous one (the value passes
    through and the state is unchanged), like MediaPipe. ``reset`` forgets everything; the next
    sample passes through raw and starts a new history.
    """

    def __init__(self, parameters: OneEuroParameters) -> None:
        self._parameters = parameters
        self._last_time_s: float | None = None
        self._frequency_hz = DEFAULT_FREQUENCY_HZ
        self._last_raw: NDArray[np.float64] | None = None
        self._filtered: NDArray[np.float64] | None = None
        self._filtered_speed: NDArray[np.float64] | None = None

    def reset(self) -> None:
        self._last_time_s = None
        self._frequency_hz = DEFAULT_FREQUENCY_HZ
        self._last_raw = None
        self._filtered = None
        self._filtered_speed = None

    def apply(
        self, values: NDArray[np.floating], time_s: float, object_scale_px: float
    ) -> NDArray[np.float64]:
        """Filter one sample; ``object_scale_px`` normalises the speed (MediaPipe's value scale)."""
        raw = np.asarray(values, dtype=np.float64)
        if object_scale_px < MIN_OBJECT_SCALE_PX:
            return raw.copy()
        if self._last_time_s is not None:
            if time_s <= self._last_time_s:
                return raw.copy()
            self._frequency_hz = 1.0 / (time_s - self._last_time_s)
        self._last_time_s = time_s
        parameters = self._parameters

        if self._last_raw is None or self._filtered is None or self._filtered_speed is None:
            filtered_speed = np.zeros_like(raw)
            filtered = raw.copy()
        else:
            speed = (raw - self._last_raw) * (self._frequency_hz / object_scale_px)
            speed_alpha = _alpha(parameters.derivative_cutoff_hz, self._frequency_hz)
            filtered_speed = speed_alpha * speed + (1.0 - speed_alpha) * self._filtered_speed
            cutoff_hz = parameters.min_cutoff_hz + parameters.beta * np.abs(filtered_speed)
            value_alpha = _alpha(cutoff_hz, self._frequency_hz)
            filtered = value_alpha * raw + (1.0 - value_alpha) * self._filtered
        self._last_raw = raw
        self._filtered_speed = filtered_speed
        self._filtered = filtered
        return filtered.copy()


class VisibilityFilter:
    """Exponential low-pass on visibility: out = 0.1·new + 0.9·previous out. Never reset by gaps."""

    def __init__(self, alpha: float = VISIBILITY_ALPHA) -> None:
        self._alpha = alpha
        self._previous: NDArray[np.float64] | None = None

    def apply(self, visibility: NDArray[np.floating]) -> NDArray[np.float64]:
        current = np.asarray(visibility, dtype=np.float64)
        if self._previous is None:
            smoothed = current.copy()
        else:
            smoothed = self._alpha * current + (1.0 - self._alpha) * self._previous
        self._previous = smoothed
        return smoothed.copy()
