"""Image crops sampled the way MediaPipe's bundled OpenCV samples them.

MediaPipe cuts its model inputs with ``cv::warpPerspective`` from the OpenCV it was built with
(4.x). That implementation rounds every source coordinate to 1/32 pixel and blends the 4
neighbours with 15-bit fixed-point weights from a table. OpenCV 4.11+ (and 5.x, installed here)
compute ``warpAffine``/``warpPerspective`` in floating point instead, so the uint8 crops differ by
±1 in many pixels. BlazePose is sensitive to that: ±1 noise in the crop moves landmarks by almost a
pixel on a 720p frame. Reproducing the old rounding brings single-frame landmarks from ~0.9 px to
~0.1 px of MediaPipe's on the shared 720p clip.

:func:`warp_into` does it with ``cv2.remap`` and fixed-point maps (integer pixel + 5-bit fraction
index): ``remap`` still blends through the same interpolation table. Cost: about a quarter of a
millisecond for a 256×256 crop on the reference CPU, a few times ``warpAffine``'s.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
from numpy.typing import NDArray

_SUBPIXEL_STEPS = 32
"""OpenCV's INTER_TAB_SIZE: source coordinates are rounded to 1/32 pixel."""
_SUBPIXEL_BITS = 5
_FIXED_MIN = float(np.iinfo(np.int16).min * _SUBPIXEL_STEPS)
_FIXED_MAX = float(np.iinfo(np.int16).max * _SUBPIXEL_STEPS)


@cache
def _grid(width: int, height: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Destination pixel indices as a row (1, W) and a column (H, 1), read-only."""
    columns = np.arange(width, dtype=np.float64)[None, :]
    rows = np.arange(height, dtype=np.float64)[:, None]
    columns.setflags(write=False)
    rows.setflags(write=False)
    return columns, rows


def fixed_point_maps(
    matrix: NDArray[np.float64], width: int, height: int
) -> tuple[NDArray[np.int16], NDArray[np.uint16]]:
    """``cv2.remap`` maps for destination→source affine ``matrix`` (2×3), rounded as OpenCV 4.

    Returns (H, W, 2) integer source pixels and (H, W) table indices (fraction_y·32 + fraction_x).
    """
    columns, rows = _grid(width, height)
    scaled = matrix * _SUBPIXEL_STEPS
    source_x = np.rint(scaled[0, 0] * columns + (scaled[0, 1] * rows + scaled[0, 2]))
    source_y = np.rint(scaled[1, 0] * columns + (scaled[1, 1] * rows + scaled[1, 2]))
    # Saturate like OpenCV's short maps: a pixel that far out only ever reads the border.
    fixed_x = np.clip(source_x, _FIXED_MIN, _FIXED_MAX).astype(np.int32)
    fixed_y = np.clip(source_y, _FIXED_MIN, _FIXED_MAX).astype(np.int32)
    pixels = np.empty((height, width, 2), dtype=np.int16)
    np.right_shift(fixed_x, _SUBPIXEL_BITS, out=pixels[..., 0], casting="unsafe")
    np.right_shift(fixed_y, _SUBPIXEL_BITS, out=pixels[..., 1], casting="unsafe")
    fraction_mask = _SUBPIXEL_STEPS - 1
    fractions = ((fixed_y & fraction_mask) * _SUBPIXEL_STEPS + (fixed_x & fraction_mask)).astype(
        np.uint16
    )
    return pixels, fractions


def warp_into(
    image: NDArray[np.uint8],
    matrix: NDArray[np.float64],
    destination: NDArray[np.uint8],
    *,
    border_mode: int,
) -> None:
    """Bilinear crop of ``image`` into ``destination`` (H×W×3, written in place).

    ``matrix`` maps destination pixel (u, v) to the source pixel it samples. ``border_mode`` is
    ``cv2.BORDER_CONSTANT`` (black) or ``cv2.BORDER_REPLICATE``.
    """
    height, width = destination.shape[:2]
    pixels, fractions = fixed_point_maps(matrix, width, height)
    cv2.remap(
        image,
        pixels,
        fractions,
        cv2.INTER_LINEAR,
        dst=destination,
        borderMode=border_mode,
        borderValue=(0, 0, 0),
    )
