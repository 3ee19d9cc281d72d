"""Per-frame keypoints of an assessment, kept beside its video so a disputed result can be
re-judged or rendered later without the model (the same npz format as `score --pose-out`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engines import LANDMARK_COUNT
from engines.tracks import PoseTrack, save_npz

_NO_PERSON = np.full((LANDMARK_COUNT, 5), np.nan, dtype=np.float32)


class PoseRecord:
    """Keypoints of every judged frame, in judging order (NaN rows: no person)."""

    def __init__(self) -> None:
        self._frame_indexes: list[int] = []
        self._times_s: list[float] = []
        self._keypoints: list[NDArray[np.float32]] = []

    def __len__(self) -> int:
        return len(self._frame_indexes)

    def add(self, frame_index: int, time_s: float, keypoints: NDArray[np.float32] | None) -> None:
        self._frame_indexes.append(frame_index)
        self._times_s.append(time_s)
        self._keypoints.append(_NO_PERSON if keypoints is None else keypoints)

    def track(self) -> PoseTrack:
        count = len(self._frame_indexes)
        keypoints = (
            np.stack(self._keypoints).astype(np.float32)
            if count
            else np.zeros((0, LANDMARK_COUNT, 5), np.float32)
        )
        return PoseTrack(
            frame_index=np.asarray(self._frame_indexes, dtype=np.int64),
            time_s=np.asarray(self._times_s, dtype=np.float64),
            keypoints=keypoints,
        )


def save_pose_record(record: PoseRecord, path: Path) -> None:
    """Write the record to ``path`` atomically (a partial file never takes the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp.npz")
    save_npz(record.track(), partial)
    os.replace(partial, path)
