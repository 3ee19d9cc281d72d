"""One running assessment: camera frames in, judged events out, evidence on disk.

Threads touch an assessment only through three doors: the camera thread's frame sink (counts the
frame, ends the clock, hands the frame to the batcher), the camera's state listener, and the
batcher's result sink. Each of them forwards to the event loop with ``call_soon_threadsafe``;
everything else here runs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client import assessment_pb2 as pb
from engines import CameraFrame, Pose
from server.admission import AssessmentPlan
from server.batching import BatchTiming, CameraSink, FrameBatcher
from server.camera_registry import CameraLease
from server.cameras import CameraState, CameraStatus
from server.events import EventLog
from server.evidence import PoseRecord, save_pose_record
from server.metrics import Metrics
from server.recording import Recorder, RecordingError
from server.scoring import Scorer, ScoringEvent
from server.translation import phase_of, translate

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
OUTAGE_GAP_S = 1.0
"""A hole this long between judged frames is a camera outage (see :class:`JudgingClock`)."""
SKIP_EPISODE_GAP_S = 2.0
"""A new FRAMES_SKIPPED warning needs this much stream time without skipping since the last skip."""
DRAIN_TIMEOUT_S = 5.0


class JudgingClock:
    """The scorer's clock: stream time with camera outages cut out.

    A hole longer than :data:`OUTAGE_GAP_S` between judged frames means the camera delivered
    nothing; the judge's clock stops over it, so an outage never counts as the examinee pausing or
    leaving. Evidence times are mapped back to stream time for the video.
    """

    def __init__(self) -> None:
        self._last_stream_s: float | None = None
        self._frame_period_s = 0.05
        self._cut_s = 0.0
        self._cuts: list[tuple[float, float]] = []  # (judging time from which, total cut)

    def judging_s(self, stream_s: float) -> float:
        """Judging time of a judged frame at ``stream_s`` (call in frame order)."""
        if self._last_stream_s is not None:
            gap_s = stream_s - self._last_stream_s
            if gap_s > OUTAGE_GAP_S:
                resumed_s = self._last_stream_s - self._cut_s + self._frame_period_s
                self._cut_s += gap_s - self._frame_period_s
                self._cuts.append((resumed_s, self._cut_s))
            elif gap_s > 0:
                self._frame_period_s = gap_s
        self._last_stream_s = stream_s
        return stream_s - self._cut_s

    def stream_s(self, judging_s: float) -> float:
        """Stream time of a judging time."""
        cut_s = 0.0
        for since_s, total_s in self._cuts:
            if judging_s >= since_s - 1e-9:
                cut_s = total_s
        return judging_s + cut_s


@dataclass(frozen=True)
class Parts:
    """What a session uses, owned by the session manager."""

    batcher: FrameBatcher
    metrics: Metrics
    max_gap_s: float


class AssessmentSession:
    """Runs one assessment from its first frame to Finished."""

    def __init__(
        self,
        plan: AssessmentPlan,
        record: pb.Assessment,
        log: EventLog,
        scorer: Scorer,
        parts: Parts,
        *,
        on_finished: Callable[[AssessmentSession], None],
    ) -> None:
        self.plan = plan
        self.record = record
        self.log = log
        self._scorer = scorer
        self._parts = parts
        self._on_finished = on_finished
        self._loop = asyncio.get_running_loop()
        self._lease: CameraLease | None = None
        self._recorder: Recorder | None = None
        self._feeding = True  # camera thread: frames go to the batcher
        self._accepting_results = True
        self._first_index: int | None = None
        self._first_time_s = 0.0
        self._last_frame_monotonic = time.monotonic()
        self._received = 0  # written by the camera thread only
        self._resolved = 0  # frames judged, skipped or failed (event loop)
        self._drained = asyncio.Event()
        self._last_time_s = 0.0  # judging time of the newest judged frame
        self._clock = JudgingClock()
        self._last_progress_s = 0.0
        self._last_skip_s: float | None = None
        self._camera_trouble = False
        self._poses = PoseRecord()
        # Per-camera metric series, looked up once (they are counted per frame).
        metrics, camera_id = parts.metrics, plan.camera_id
        self._received_total = metrics.frames_received.labels(camera_id)
        self._judged_total = metrics.frames_judged.labels(camera_id)
        self._skipped_total = metrics.frames_skipped.labels(camera_id)
        self._ending: asyncio.Task[None] | None = None
        self._finished = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def assessment_id(self) -> str:
        return self.plan.assessment_id

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def frames_received(self) -> int:
        return self._received

    # --- starting ---------------------------------------------------------------------------

    def sink(self) -> CameraSink:
        return CameraSink(
            on_result=lambda frame, pose, timing: self._loop.call_soon_threadsafe(
                self._on_pose, frame, pose, timing
            ),
            on_skipped=lambda frame: self._loop.call_soon_threadsafe(self._on_skipped, frame),
            on_error=lambda frame, error: self._loop.call_soon_threadsafe(
                self._on_engine_error, error
            ),
        )

    def begin(self, lease: CameraLease, recorder: Recorder) -> None:
        """The camera is leased and the recorder attached; frames start flowing."""
        self._lease = lease
        self._recorder = recorder
        self._last_frame_monotonic = time.monotonic()
        self._watchdog = asyncio.create_task(self._watch_gap())

    # --- camera thread ------------------------------------------------------------------------

    def on_frame(self, frame: CameraFrame) -> bool:
        """The camera's frame sink (camera thread). Never blocks."""
        if not self._feeding:
            return True
        if self._first_index is None:
            self._first_index = frame.index
            self._first_time_s = frame.time_s
            self._loop.call_soon_threadsafe(self._on_started, frame)
        relative_index = frame.index - self._first_index
        elapsed_s = frame.time_s - self._first_time_s
        plan = self.plan
        if (plan.frame_count and relative_index >= plan.frame_count) or (
            plan.duration_s and elapsed_s >= plan.duration_s
        ):
            self._feeding = False
            self._loop.call_soon_threadsafe(self._complete)
            return True
        self._received += 1
        self._last_frame_monotonic = time.monotonic()
        self._received_total.inc()
        self._parts.batcher.submit(frame)
        return True

    def on_camera_state(self, status: CameraStatus) -> None:
        """The camera's state listener (camera thread)."""
        self._loop.call_soon_threadsafe(self._on_camera_state, status)

    # --- event loop ---------------------------------------------------------------------------

    def _emit(self, event: pb.AssessmentEvent) -> None:
        if not self.log.closed:
            self.log.append(event)

    @property
    def _preroll_s(self) -> float:
        """How much earlier than the first judged frame the evidence video begins."""
        recorder = self._recorder
        start_s = None if recorder is None else recorder.start_time_s
        return 0.0 if start_s is None else max(0.0, self._first_time_s - start_s)

    def _media_offset_s(self, elapsed_s: float) -> float:
        """Evidence video time of a stream time (seconds since the first frame)."""
        return max(0.0, elapsed_s + self._preroll_s)

    def _judging_media_s(self, judging_s: float) -> float:
        """Evidence video time of a judging time (the scorer's clock)."""
        return self._media_offset_s(self._clock.stream_s(judging_s))

    def _event(self, frame_index: int, elapsed_s: float | None) -> pb.AssessmentEvent:
        event = pb.AssessmentEvent(frame_index=frame_index)
        if elapsed_s is not None:
            event.media_offset.FromNanoseconds(int(self._media_offset_s(elapsed_s) * 1e9))
        return event

    def _on_started(self, frame: CameraFrame) -> None:
        if self.finished or self._ending is not None:
            return
        self.record.state = pb.ASSESSMENT_STATE_RUNNING
        self.record.start_time.GetCurrentTime()
        height, width = frame.image_rgb.shape[:2]
        event = self._event(0, 0.0)
        event.started.CopyFrom(
            pb.Started(camera_id=self.plan.camera_id, frame_width=width, frame_height=height)
        )
        event.started.assessment.CopyFrom(self.record)
        self._emit(event)

    def _resolve(self) -> None:
        """One more submitted frame came back (judged, skipped or failed)."""
        self._resolved += 1
        if not self._feeding and self._resolved >= self._received:
            self._drained.set()

    def _on_pose(self, frame: CameraFrame, pose: Pose | None, timing: BatchTiming) -> None:
        self._resolve()
        if not self._accepting_results or self._first_index is None:
            return
        metrics = self._parts.metrics
        self._judged_total.inc()
        metrics.observe_frame_latency(time.monotonic() - timing.handed_over_monotonic)
        relative_index = frame.index - self._first_index
        stream_s = frame.time_s - self._first_time_s
        elapsed_s = self._clock.judging_s(stream_s)
        self._last_time_s = elapsed_s
        self.record.frames_judged += 1
        keypoints = None if pose is None else pose.keypoints
        self._poses.add(relative_index, stream_s, keypoints)
        if self._last_skip_s is not None and stream_s - self._last_skip_s >= SKIP_EPISODE_GAP_S:
            self._last_skip_s = None
        for scoring_event in self._scorer.update(
            frame_index=relative_index, time_s=elapsed_s, keypoints=keypoints
        ):
            self._apply(scoring_event, relative_index)
            if self._ending is not None:
                return
        if stream_s - self._last_progress_s >= PROGRESS_INTERVAL_S:
            self._last_progress_s = stream_s
            self._emit_progress(relative_index, stream_s)

    def _apply(self, scoring_event: ScoringEvent, frame_index: int) -> None:
        translated = translate(
            scoring_event, frame_index=frame_index, media_s=self._judging_media_s
        )
        event = translated.event
        if event is not None:
            payload = event.WhichOneof("payload")
            if payload == "rep_counted":
                self.record.rep_count = event.rep_counted.rep_count
            elif payload == "foul":
                name = pb.FoulCode.Name(event.foul.code)
                self.record.fouls[name] = self.record.fouls.get(name, 0) + 1
            self._emit(event)
        if translated.violation:
            self.record.violation = translated.violation
            self._end(pb.END_REASON_VIOLATION, translated.detail)

    def _emit_progress(self, frame_index: int, elapsed_s: float) -> None:
        record = self.record
        record.frames_received = self._received
        event = self._event(frame_index, elapsed_s)
        progress = event.progress
        progress.frames_received = self._received
        progress.frames_judged = record.frames_judged
        progress.frames_skipped = record.frames_skipped
        progress.rep_count = record.rep_count
        progress.phase = phase_of(self._scorer)
        progress.elapsed.FromNanoseconds(int(elapsed_s * 1e9))
        progress.frame_count = record.frame_count
        if record.HasField("duration"):
            progress.duration.CopyFrom(record.duration)
        self._emit(event)

    def _on_skipped(self, frame: CameraFrame) -> None:
        self._resolve()
        if not self._accepting_results or self._first_index is None:
            return
        self.record.frames_skipped += 1
        self._skipped_total.inc()
        elapsed_s = frame.time_s - self._first_time_s
        if self._last_skip_s is None:
            event = self._event(frame.index - self._first_index, elapsed_s)
            event.warning.CopyFrom(
                pb.Warning(
                    code=pb.WARNING_CODE_FRAMES_SKIPPED,
                    detail="inference fell behind; frames are skipped evenly across cameras",
                )
            )
            self._emit(event)
        self._last_skip_s = elapsed_s

    def _on_engine_error(self, error: Exception) -> None:
        self._resolve()
        self._end(pb.END_REASON_FAILED, f"pose engine error: {error}")

    def on_recording_failure(self, failure: RecordingError) -> None:
        """The recorder's failure callback (camera thread): the assessment fails, others go on."""
        self._loop.call_soon_threadsafe(self._end, pb.END_REASON_FAILED, str(failure))

    def _on_camera_state(self, status: CameraStatus) -> None:
        if self.finished or self._ending is not None:
            return
        trouble = status.state in (CameraState.STALLED, CameraState.RECONNECTING)
        if trouble and not self._camera_trouble:
            self._camera_trouble = True
            self._parts.metrics.camera_reconnects.labels(self.plan.camera_id).inc()
            code, detail = pb.WARNING_CODE_CAMERA_RECONNECTING, status.detail
        elif status.state == CameraState.STREAMING and self._camera_trouble:
            self._camera_trouble = False
            code, detail = pb.WARNING_CODE_CAMERA_RECOVERED, "frames flow again"
        else:
            return
        event = self._event(-1, None)
        event.warning.CopyFrom(pb.Warning(code=code, detail=detail))
        self._emit(event)

    async def _watch_gap(self) -> None:
        max_gap_s = self._parts.max_gap_s
        while not self.finished and self._ending is None:
            await asyncio.sleep(min(0.5, max_gap_s / 4))
            gap_s = time.monotonic() - self._last_frame_monotonic
            if self._feeding and gap_s > max_gap_s:
                self._end(pb.END_REASON_FAILED, f"camera lost: no frame for {gap_s:.1f} s")
                return

    # --- ending -------------------------------------------------------------------------------

    def _complete(self) -> None:
        self._end(pb.END_REASON_COMPLETED, "all frames judged")

    def _end(self, reason: pb.EndReason.ValueType, detail: str) -> None:
        if self._ending is None and not self.finished:
            self._ending = asyncio.create_task(self._finish(reason, detail))

    async def end(self, reason: pb.EndReason.ValueType, detail: str) -> pb.Assessment:
        """End the assessment (if it still runs) and wait until everything is final."""
        self._end(reason, detail)
        await self._finished.wait()
        return self.record

    async def _finish(self, reason: pb.EndReason.ValueType, detail: str) -> None:
        self._feeding = False
        self.record.state = pb.ASSESSMENT_STATE_FINISHING
        batcher = self._parts.batcher
        if reason == pb.END_REASON_COMPLETED and self._resolved < self._received:
            # Judge every frame up to the last one counted.
            try:
                await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT_S)
            except TimeoutError:
                logger.error("assessment %s: frames still unjudged", self.assessment_id)
        self._accepting_results = False
        batcher.unregister(self.plan.camera_id)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        if reason == pb.END_REASON_COMPLETED:
            last_index = max(self.record.frames_judged - 1, 0)
            for scoring_event in self._scorer.finish(time_s=self._last_time_s):
                self._apply(scoring_event, last_index)
        problem = await self._close_evidence(detail)
        record = self.record
        record.state = pb.ASSESSMENT_STATE_FINISHED
        record.end_reason = reason
        record.end_detail = detail if not problem else f"{detail}; {problem}"
        record.frames_received = self._received
        record.end_time.GetCurrentTime()
        finished = self._event(-1, None)
        finished.finished.assessment.CopyFrom(record)
        finished.finished.assessment.last_sequence = self.log.last_sequence + 1
        self._emit(finished)
        # A finished assessment stays queryable for retention_s: keep its record and events only.
        # The recorder holds the camera connection's stream (and its decoder threads) and the
        # keypoints are on disk: let both go now.
        self._recorder = None
        self._lease = None
        self._poses = PoseRecord()
        self._finished.set()
        self._on_finished(self)

    async def _close_evidence(self, detail: str) -> str:
        """Finalise the video and keypoints; returns what went wrong ("" when nothing did)."""
        problems: list[str] = []
        if self._recorder is not None:
            try:
                await asyncio.to_thread(self._recorder.finish)
            except RecordingError as error:  # the judged result stands; the video's loss is told
                logger.error("assessment %s: %s", self.assessment_id, error)
                if str(error) not in detail:
                    problems.append(f"video: {error}")
        if self._lease is not None:
            self._lease.release()
        try:
            await asyncio.to_thread(save_pose_record, self._poses, Path(self.record.pose_path))
        except OSError as error:
            logger.error("assessment %s: keypoints not saved: %s", self.assessment_id, error)
            problems.append(f"keypoints: {error}")
        return "; ".join(problems)
