"""The BlazePose pipeline: frames in, poses out, one tracker per camera, any runtime underneath.

Per camera, as MediaPipe's legacy Pose solution in video mode (shared/research/blazepose.md §10):
when the previous frame gave landmarks, its auxiliary landmarks place this frame's crop and the
detector is skipped; otherwise the detector finds the person on the whole frame. The landmark model
then reads a rotated 256×256 crop; a pose counts only when its presence score beats the threshold.
Landmarks are smoothed with One-Euro filters keyed on the frames' own timestamps.

A batch holds at most one frame per camera and costs at most one detector call and one landmark
call, whatever its size. ``infer`` may run on several threads at once for disjoint cameras (each
thread has its own input buffers); the runner must then allow concurrent calls, as ONNX Runtime
does.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from engines import LANDMARK_COUNT, CameraFrame, Pose, RegionOfInterest
from engines.detection import (
    DETECTOR_INPUT_SIZE,
    MIN_DETECTION_SCORE,
    Letterbox,
    best_detection,
    roi_from_alignment_points,
    roi_from_detection,
)
from engines.landmarks import (
    AUXILIARY_CENTER,
    AUXILIARY_SCALE_POINT,
    LANDMARK_INPUT_SIZE,
    crop_matrix,
    decode_landmarks,
    project_to_frame,
    refine_with_heatmap,
    roi_arrays,
)
from engines.smoothing import (
    AUXILIARY_LANDMARK_FILTER,
    POSE_LANDMARK_FILTER,
    OneEuroFilter,
    VisibilityFilter,
)
from engines.warping import FixedPointWarper

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorOutputs:
    regressors: NDArray[np.float32]
    """(N, 2254, 12) box and keypoint offsets in detector-input pixels."""
    scores: NDArray[np.float32]
    """(N, 2254, 1) logits."""


@dataclass(frozen=True)
class LandmarkOutputs:
    landmarks: NDArray[np.float32]
    """(N, 195): 39 × (x, y, z, visibility logit, presence logit), crop pixels."""
    pose_flag: NDArray[np.float32]
    """(N, 1) pose presence, already a probability."""
    heatmaps: NDArray[np.float32] | None = None
    """(N, 64, 64, 39) heatmap logits, or None when the model's heatmap head was pruned."""


class ModelRunner(Protocol):
    """One runtime's view of the two BlazePose models. Inputs are NHWC float32, C-contiguous."""

    @property
    def name(self) -> str: ...

    @property
    def preferred_batch(self) -> int: ...

    @property
    def max_batch(self) -> int: ...

    def detect(self, images: NDArray[np.float32]) -> DetectorOutputs:
        """(N, 224, 224, 3) letterboxed frames in [-1, 1]."""
        ...

    def landmarks(self, crops: NDArray[np.float32]) -> LandmarkOutputs:
        """(N, 256, 256, 3) ROI crops in [0, 1]."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    min_detection_score: float = MIN_DETECTION_SCORE
    """``min_detection_confidence``."""
    min_presence_score: float = 0.5
    """``min_tracking_confidence``: a pose counts only when its flag is strictly greater."""
    smooth_landmarks: bool = True
    """One-Euro on the 33 body landmarks and a low-pass on their visibility (the auxiliary
    landmarks that place the next crop are always smoothed), as MediaPipe's video mode."""
    refine_with_heatmap: bool = True
    """Use the heatmap head when the runner returns it."""


class TrackerState(enum.Enum):
    SEARCHING = "searching"
    """No pose on the previous frame: the detector runs on the next one."""
    TRACKING = "tracking"
    """The previous frame's landmarks place the next crop."""


class _Tracker:
    """Per-camera state carried from one frame to the next."""

    def __init__(self) -> None:
        self.next_roi: RegionOfInterest | None = None
        self.frame_size: tuple[int, int] | None = None
        self.pose_filter = OneEuroFilter(POSE_LANDMARK_FILTER)
        self.auxiliary_filter = OneEuroFilter(AUXILIARY_LANDMARK_FILTER)
        self.visibility_filter = VisibilityFilter()

    @property
    def state(self) -> TrackerState:
        return TrackerState.SEARCHING if self.next_roi is None else TrackerState.TRACKING

    def lose(self) -> None:
        """No landmarks on this frame: search next time, restart the coordinate filters."""
        self.next_roi = None
        self.pose_filter.reset()
        self.auxiliary_filter.reset()


class _InputBuffers:
    """Preallocated model inputs for one thread: uint8 warp targets and their float32 copies."""

    def __init__(self, max_batch: int) -> None:
        detector_shape = (max_batch, DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE, 3)
        landmark_shape = (max_batch, LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE, 3)
        self.detector_pixels = np.zeros(detector_shape, dtype=np.uint8)
        self.detector_input = np.zeros(detector_shape, dtype=np.float32)
        self.landmark_pixels = np.zeros(landmark_shape, dtype=np.uint8)
        self.landmark_input = np.zeros(landmark_shape, dtype=np.float32)
        self.detector_warper = FixedPointWarper(DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE)
        self.landmark_warper = FixedPointWarper(LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE)


def _usable(roi: RegionOfInterest) -> bool:
    """A crop that can be cut: finite numbers and at least a pixel on a side."""
    values = (roi.center_x_px, roi.center_y_px, roi.size_px, roi.rotation_rad)
    return all(math.isfinite(value) for value in values) and roi.size_px >= 1.0


class BlazePoseEngine:
    """:class:`engines.PoseEngine` over any :class:`ModelRunner`."""

    def __init__(self, runner: ModelRunner, settings: PipelineSettings | None = None) -> None:
        self._runner = runner
        self._settings = settings or PipelineSettings()
        self._trackers: dict[str, _Tracker] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._buffers = threading.local()

    @property
    def name(self) -> str:
        return f"blazepose-full/{self._runner.name}"

    @property
    def preferred_batch(self) -> int:
        return self._runner.preferred_batch

    @property
    def max_batch(self) -> int:
        return self._runner.max_batch

    @property
    def runner(self) -> ModelRunner:
        return self._runner

    def tracker_state(self, camera_id: str) -> TrackerState:
        with self._lock:
            tracker = self._trackers.get(camera_id)
        return TrackerState.SEARCHING if tracker is None else tracker.state

    def forget(self, camera_id: str) -> None:
        with self._lock:
            self._trackers.pop(camera_id, None)

    def close(self) -> None:
        self._runner.close()

    def infer(self, frames: Sequence[CameraFrame]) -> list[Pose | None]:
        if not frames:
            return []
        self._check_batch(frames)
        trackers = self._claim(frames)
        try:
            return self._infer(frames, trackers)
        finally:
            with self._lock:
                self._in_flight.difference_update(frame.camera_id for frame in frames)

    def _check_batch(self, frames: Sequence[CameraFrame]) -> None:
        if len(frames) > self.max_batch:
            raise ValueError(f"batch of {len(frames)} frames exceeds max_batch {self.max_batch}")
        seen: set[str] = set()
        for frame in frames:
            if frame.camera_id in seen:
                raise ValueError(f"camera {frame.camera_id!r} appears twice in one batch")
            seen.add(frame.camera_id)
            image = frame.image_rgb
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(
                    f"camera {frame.camera_id!r}: expected H×W×3 uint8 RGB, "
                    f"got {image.dtype} {image.shape}"
                )

    def _claim(self, frames: Sequence[CameraFrame]) -> list[_Tracker]:
        with self._lock:
            busy = [frame.camera_id for frame in frames if frame.camera_id in self._in_flight]
            if busy:
                raise ValueError(f"camera {busy[0]!r} is already being inferred on another thread")
            self._in_flight.update(frame.camera_id for frame in frames)
            trackers = []
            for frame in frames:
                tracker = self._trackers.setdefault(frame.camera_id, _Tracker())
                height, width = frame.image_rgb.shape[:2]
                if tracker.frame_size not in (None, (width, height)):
                    logger.info(
                        "camera %s: frame size changed to %dx%d, tracking restarts",
                        frame.camera_id,
                        width,
                        height,
                    )
                    tracker = self._trackers[frame.camera_id] = _Tracker()
                tracker.frame_size = (width, height)
                trackers.append(tracker)
            return trackers

    def _thread_buffers(self) -> _InputBuffers:
        buffers: _InputBuffers | None = getattr(self._buffers, "value", None)
        if buffers is None:
            buffers = _InputBuffers(self.max_batch)
            self._buffers.value = buffers
        return buffers

    def _infer(self, frames: Sequence[CameraFrame], trackers: list[_Tracker]) -> list[Pose | None]:
        buffers = self._thread_buffers()
        rois: list[RegionOfInterest | None] = [tracker.next_roi for tracker in trackers]
        searching = [index for index, roi in enumerate(rois) if roi is None]
        if searching:
            for index, roi in zip(searching, self._detect(frames, searching, buffers), strict=True):
                rois[index] = roi

        cropped = [index for index, roi in enumerate(rois) if roi is not None]
        results: list[Pose | None] = [None] * len(frames)
        for index, tracker in enumerate(trackers):
            if rois[index] is None:
                tracker.lose()
        if not cropped:
            return results

        crop_rois = [roi for roi in rois if roi is not None]
        count = len(cropped)
        for slot, (index, roi) in enumerate(zip(cropped, crop_rois, strict=True)):
            buffers.landmark_warper.warp(
                frames[index].image_rgb,
                crop_matrix(roi),
                buffers.landmark_pixels[slot],
                border_mode=cv2.BORDER_REPLICATE,
            )
        crops = buffers.landmark_input[:count]
        np.multiply(buffers.landmark_pixels[:count], np.float32(1.0 / 255.0), out=crops)
        outputs = self._runner.landmarks(crops)

        decoded = decode_landmarks(outputs.landmarks[:count])
        if self._settings.refine_with_heatmap and outputs.heatmaps is not None:
            refine_with_heatmap(decoded, outputs.heatmaps[:count])
        projected = project_to_frame(decoded, roi_arrays(crop_rois))
        flags = outputs.pose_flag.reshape(-1)[:count].astype(np.float64)

        for slot, index in enumerate(cropped):
            tracker = trackers[index]
            if not flags[slot] > self._settings.min_presence_score:
                tracker.lose()
                continue
            results[index] = self._track(
                tracker, frames[index], projected[slot], float(flags[slot]), crop_rois[slot]
            )
        return results

    def _detect(
        self, frames: Sequence[CameraFrame], searching: list[int], buffers: _InputBuffers
    ) -> list[RegionOfInterest | None]:
        """Run the detector once on every searching frame; the body ROI of each, or None."""
        letterboxes = []
        for slot, index in enumerate(searching):
            height, width = frames[index].image_rgb.shape[:2]
            letterbox = Letterbox.for_frame(width, height)
            letterboxes.append(letterbox)
            buffers.detector_warper.warp(
                frames[index].image_rgb,
                letterbox.tensor_to_frame_matrix(),
                buffers.detector_pixels[slot],
                border_mode=cv2.BORDER_CONSTANT,
            )
        count = len(searching)
        images = buffers.detector_input[:count]
        np.multiply(buffers.detector_pixels[:count], np.float32(2.0 / 255.0), out=images)
        np.subtract(images, np.float32(1.0), out=images)
        outputs = self._runner.detect(images)
        rois: list[RegionOfInterest | None] = []
        for slot, letterbox in enumerate(letterboxes):
            detection = best_detection(
                outputs.regressors[slot],
                outputs.scores[slot],
                min_score=self._settings.min_detection_score,
            )
            roi = None if detection is None else roi_from_detection(detection, letterbox)
            rois.append(roi if roi is not None and _usable(roi) else None)
        return rois

    def _track(
        self,
        tracker: _Tracker,
        frame: CameraFrame,
        landmarks: NDArray[np.float64],
        score: float,
        roi: RegionOfInterest,
    ) -> Pose:
        """Smooth one frame's projected landmarks (39×5 pixels), set the next ROI, make the Pose."""
        center = landmarks[AUXILIARY_CENTER, 0:2]
        scale_point = landmarks[AUXILIARY_SCALE_POINT, 0:2]
        object_scale_px = 2.0 * float(np.hypot(*(scale_point - center)))

        auxiliary = tracker.auxiliary_filter.apply(
            landmarks[AUXILIARY_CENTER : AUXILIARY_SCALE_POINT + 1, 0:3],
            frame.time_s,
            object_scale_px,
        )
        next_roi = roi_from_alignment_points(auxiliary[0, 0:2], auxiliary[1, 0:2])
        tracker.next_roi = next_roi if _usable(next_roi) else None

        keypoints = landmarks[:LANDMARK_COUNT].copy()
        if self._settings.smooth_landmarks:
            keypoints[:, 3] = tracker.visibility_filter.apply(keypoints[:, 3])
            keypoints[:, 0:3] = tracker.pose_filter.apply(
                keypoints[:, 0:3], frame.time_s, object_scale_px
            )
        return Pose(keypoints=keypoints.astype(np.float32), score=score, roi=roi)
