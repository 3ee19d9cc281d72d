"""Pose tracks: each frame's keypoints of one video, computed, saved, loaded or read from MediaPipe.

A :class:`PoseTrack` is what ``fitscore-server score VIDEO --pose-out FILE.npz`` writes and what a
disputed result is re-judged from. Keypoint columns are those of :attr:`engines.Pose.keypoints`
(x_px, y_px, z, visibility, presence); a frame without a person is a row of NaN.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from engines import LANDMARK_COUNT, CameraFrame, PoseEngine

logger = logging.getLogger(__name__)

KEYPOINT_VALUES = 5
NPZ_ARRAYS = ("frame_index", "time_s", "keypoints")
"""The arrays of a saved track, by name; nothing else is stored."""


@dataclass(frozen=True)
class PoseTrack:
    frame_index: NDArray[np.int64]
    """(T,) frame number in the video, 0-based."""
    time_s: NDArray[np.float64]
    """(T,) presentation time of each frame, seconds."""
    keypoints: NDArray[np.float32]
    """(T, 33, 5) x_px, y_px, z, visibility, presence; all NaN where no person was found."""

    def __post_init__(self) -> None:
        count = self.frame_index.shape[0] if self.frame_index.ndim == 1 else -1
        checks = (
            (self.frame_index, np.int64, (count,)),
            (self.time_s, np.float64, (count,)),
            (self.keypoints, np.float32, (count, LANDMARK_COUNT, KEYPOINT_VALUES)),
        )
        for array, dtype, shape in checks:
            if array.dtype != dtype or array.shape != shape:
                raise ValueError(
                    f"pose track arrays must be frame_index (T,) int64, time_s (T,) float64, "
                    f"keypoints (T, 33, 5) float32; got {self.frame_index.dtype} "
                    f"{self.frame_index.shape}, {self.time_s.dtype} {self.time_s.shape}, "
                    f"{self.keypoints.dtype} {self.keypoints.shape}"
                )

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])

    @property
    def present(self) -> NDArray[np.bool_]:
        """(T,) True where the frame has a person."""
        return np.asarray(~np.isnan(self.keypoints[:, :, 0]).all(axis=1), dtype=np.bool_)


def _track_from_rows(
    indices: list[int], times_s: list[float], rows: list[NDArray[np.float32] | None]
) -> PoseTrack:
    keypoints = np.full((len(rows), LANDMARK_COUNT, KEYPOINT_VALUES), np.nan, dtype=np.float32)
    for position, row in enumerate(rows):
        if row is not None:
            keypoints[position] = row
    return PoseTrack(
        frame_index=np.asarray(indices, dtype=np.int64),
        time_s=np.asarray(times_s, dtype=np.float64),
        keypoints=keypoints,
    )


def track_video(
    path: Path,
    engine: PoseEngine,
    *,
    camera_id: str = "file",
    clock_hz: float | None = None,
) -> PoseTrack:
    """Run ``engine`` over every frame of a video file, as fast as it decodes, one frame per call.

    Tracking starts fresh (the camera's state is forgotten before and after). Frame times are the
    stream's presentation times, so the smoothing sees the video's real frame rate; ``clock_hz``
    stamps frame k at k / clock_hz instead (MediaPipe's Python API uses 30 whatever the video's
    rate, which matters when comparing with its output).
    """
    indices: list[int] = []
    times_s: list[float] = []
    rows: list[NDArray[np.float32] | None] = []
    engine.forget(camera_id)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            for index, frame in enumerate(container.decode(stream)):
                if clock_hz is not None:
                    time_s = index / clock_hz
                elif frame.time is not None:
                    time_s = float(frame.time)
                else:
                    time_s = _fallback(index, rate)
                image = np.ascontiguousarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
                (pose,) = engine.infer([CameraFrame(camera_id, index, time_s, image)])
                indices.append(index)
                times_s.append(time_s)
                rows.append(None if pose is None else pose.keypoints)
    finally:
        engine.forget(camera_id)
    track = _track_from_rows(indices, times_s, rows)
    logger.info(
        "%s: %d frames, person on %d, engine %s",
        path.name,
        len(track),
        int(track.present.sum()),
        engine.name,
    )
    return track


def _fallback(index: int, rate_hz: float) -> float:
    return index / rate_hz if rate_hz > 0 else float(index)


def save_npz(track: PoseTrack, path: Path) -> None:
    """Write ``track`` to ``path`` exactly (no suffix added), compressed."""
    with path.open("wb") as stream:
        np.savez_compressed(
            stream,
            frame_index=track.frame_index,
            time_s=track.time_s,
            keypoints=track.keypoints,
        )


def load_npz(path: Path) -> PoseTrack:
    """Read a track written by :func:`save_npz`; ValueError if arrays are missing or malformed."""
    with np.load(path, allow_pickle=False) as archive:
        missing = [name for name in NPZ_ARRAYS if name not in archive.files]
        if missing:
            raise ValueError(f"{path} is not a pose track: arrays {missing} missing")
        return PoseTrack(
            frame_index=np.asarray(archive["frame_index"]),
            time_s=np.asarray(archive["time_s"]),
            keypoints=np.asarray(archive["keypoints"]),
        )


def load_reference_json(path: Path) -> PoseTrack:
    """MediaPipe's own landmarks for a clip (shared/reference/*.mediapipe.json) as a track.

    The file stores z as MediaPipe does, as a fraction of the image width; it is scaled to pixels
    here so that every column means what it means in :class:`engines.Pose`. Presence is kept as
    stored: MediaPipe's Python API clears that field, so it reads 0.0 on every landmark.
    """
    document: dict[str, Any] = json.loads(path.read_text())
    width_px = float(document["width"])
    indices: list[int] = []
    times_s: list[float] = []
    rows: list[NDArray[np.float32] | None] = []
    for entry in document["frames"]:
        indices.append(int(entry["i"]))
        times_s.append(float(entry["t"]))
        landmarks = entry["landmarks"]
        if landmarks is None:
            rows.append(None)
            continue
        row = np.asarray(landmarks, dtype=np.float32)
        if row.shape != (LANDMARK_COUNT, KEYPOINT_VALUES):
            raise ValueError(f"{path}: frame {entry['i']} has landmarks of shape {row.shape}")
        row[:, 2] *= width_px
        rows.append(row)
    return _track_from_rows(indices, times_s, rows)
