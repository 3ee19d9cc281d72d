"""Assessments held by the server: starting, finding, stopping and forgetting them.

The session manager is the only owner of assessment state. It holds the pose engine and its
batcher, the camera registry and the judging rules; the gRPC layer asks it, worker threads reach
it only through the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client import assessment_pb2 as pb
from engines import PoseEngine
from server.admission import AssessmentPlan
from server.assessment import AssessmentSession, Parts
from server.batching import FrameBatcher
from server.camera_registry import CameraLease, CameraRegistry
from server.cameras import CameraBusy, CameraError, CameraOptions
from server.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from server.events import EventLog
from server.metrics import Metrics
from server.recording import InsufficientSpace, Recorder, RecordingError, recover_leftovers
from server.recovery import RestoredAssessment, recent_event_logs, restore
from server.scoring import Rules, create_scorer
from server.settings import Settings
from server.translation import EXERCISES

logger = logging.getLogger(__name__)

EngineFactory = Callable[[], PoseEngine]
NOMINAL_FPS = 20.0
"""For estimating a frame-count assessment's length (the space check) before the camera says."""


@dataclass
class _Held:
    """One assessment as the manager holds it."""

    plan: AssessmentPlan | None
    """None for an assessment restored from an earlier run's event log."""
    record: pb.Assessment
    log: EventLog
    session: AssessmentSession | None = None
    starting: asyncio.Future[None] = field(default_factory=lambda: asyncio.Future())
    finished_monotonic: float | None = None


class SessionManager:
    """Creates, tracks, stops and forgets assessments."""

    def __init__(
        self,
        settings: Settings,
        rules: Rules,
        engine_factory: EngineFactory,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._rules = rules
        self._engine_factory = engine_factory
        self._metrics = metrics
        self._engine: PoseEngine | None = None
        self._batcher: FrameBatcher | None = None
        self._held: dict[str, _Held] = {}
        self._cameras_in_use: dict[str, str] = {}  # camera_id → assessment_id
        self._shutting_down = False
        camera = settings.camera
        self._registry = CameraRegistry(
            dict(settings.cameras),
            CameraOptions(
                open_timeout_s=camera.open_timeout_s, stall_timeout_s=camera.stall_timeout_s
            ),
            idle_close_s=camera.idle_close_s,
        )

    @property
    def ready(self) -> bool:
        return self._batcher is not None and not self._shutting_down

    async def warm_up(self) -> None:
        """Finish leftover recordings, load the engine, open the configured cameras."""
        video_root = self._settings.video_root
        video_root.mkdir(parents=True, exist_ok=True)
        for recovered in await asyncio.to_thread(recover_leftovers, video_root):
            logger.warning(
                "finalised a recording left by an earlier run: %s (%d frames from %d parts)",
                recovered.path,
                recovered.frames,
                len(recovered.parts),
            )
        for restored in await asyncio.to_thread(
            _restore_all, video_root, self._settings.limits.retention_s
        ):
            self._adopt(restored)
        engine = await asyncio.to_thread(self._engine_factory)
        engine_settings = self._settings.engine
        workers = engine_settings.workers or (
            1 if engine_settings.runtime == "tensorrt" else os.cpu_count() or 1
        )
        batcher = FrameBatcher(
            engine,
            max_batch=engine_settings.max_batch,
            max_wait_ms=engine_settings.max_wait_ms,
            workers=workers,
            on_batch=self._metrics.observe_batch,
        )
        batcher.start()
        self._engine, self._batcher = engine, batcher
        self._registry.start()
        logger.info(
            "pose engine %s ready (batch up to %d, %d workers)",
            engine.name,
            batcher.max_batch,
            batcher.workers,
        )

    def _adopt(self, restored: RestoredAssessment) -> None:
        record = restored.record
        if record.assessment_id in self._held:
            return
        starting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        starting.set_result(None)
        self._held[record.assessment_id] = _Held(
            plan=None,
            record=record,
            log=restored.log,
            starting=starting,
            finished_monotonic=time.monotonic(),
        )
        if restored.interrupted:
            logger.warning(
                "assessment %s on camera %s was interrupted by a server stop: ended FAILED "
                "with %d reps (its events are served again)",
                record.assessment_id,
                record.camera_id,
                record.rep_count,
            )

    # --- the RPCs ---------------------------------------------------------------------------

    async def start(self, plan: AssessmentPlan) -> pb.Assessment:
        existing = self._held.get(plan.assessment_id)
        if existing is not None:
            return await self._repeat(existing, plan)
        if not self.ready or self._batcher is None:
            raise Unavailable("the server is not ready: the pose engine is still loading")
        running = sum(1 for held in self._held.values() if held.finished_monotonic is None)
        if running >= self._settings.limits.max_assessments:
            raise ResourceExhausted(
                f"this server already runs {running} assessments (limits.max_assessments)"
            )
        busy_with = self._cameras_in_use.get(plan.camera_id)
        if busy_with is not None:
            raise FailedPrecondition(
                f"camera {plan.camera_id!r} is running assessment {busy_with!r}"
            )
        if any(held.record.video_path == str(plan.video_path) for held in self._held.values()):
            raise AlreadyExists(f"output_path: {plan.video_path} is used by another assessment")

        held = self._reserve(plan)
        try:
            await self._open(held, self._batcher)
        except BaseException as error:
            self._unreserve(held)
            held.starting.set_exception(error)
            held.starting.exception()  # retrieved: nobody else may be waiting
            raise
        held.starting.set_result(None)
        return self.get(plan.assessment_id)

    async def _repeat(self, existing: _Held, plan: AssessmentPlan) -> pb.Assessment:
        """The same assessment_id again: the same assessment, or ALREADY_EXISTS."""
        if existing.plan is None or not existing.plan.same_parameters(plan):
            raise AlreadyExists(
                f"assessment_id {plan.assessment_id!r} exists with different parameters"
            )
        await asyncio.shield(existing.starting)
        return self.get(plan.assessment_id)

    def _reserve(self, plan: AssessmentPlan) -> _Held:
        record = pb.Assessment(
            assessment_id=plan.assessment_id,
            camera_id=plan.camera_id,
            exercise=plan.exercise,
            difficulty_level=plan.difficulty_level,
            state=pb.ASSESSMENT_STATE_PENDING,
            frame_count=plan.frame_count,
            labels=dict(plan.labels),
            video_path=str(plan.video_path),
            events_path=str(_beside(plan.video_path, ".events.jsonl")),
            pose_path=str(_beside(plan.video_path, ".pose.npz")),
        )
        if plan.duration_s:
            record.duration.FromNanoseconds(int(plan.duration_s * 1e9))
        record.create_time.GetCurrentTime()
        plan.video_path.parent.mkdir(parents=True, exist_ok=True)
        log = EventLog(
            plan.assessment_id,
            labels=plan.labels,
            jsonl_path=Path(record.events_path),
        )
        held = _Held(plan=plan, record=record, log=log)
        self._held[plan.assessment_id] = held
        self._cameras_in_use[plan.camera_id] = plan.assessment_id
        return held

    def _unreserve(self, held: _Held) -> None:
        held.log.close()
        Path(held.record.events_path).unlink(missing_ok=True)
        self._held.pop(held.record.assessment_id, None)
        if self._cameras_in_use.get(held.record.camera_id) == held.record.assessment_id:
            del self._cameras_in_use[held.record.camera_id]

    async def _open(self, held: _Held, batcher: FrameBatcher) -> None:
        plan = held.plan
        assert plan is not None
        scorer = create_scorer(EXERCISES[plan.exercise], plan.difficulty_level, self._rules)
        parts = Parts(
            batcher=batcher, metrics=self._metrics, max_gap_s=self._settings.camera.max_gap_s
        )
        session = AssessmentSession(
            plan, held.record, held.log, scorer, parts, on_finished=self._finished
        )
        batcher.register(plan.camera_id, session.sink())
        lease: CameraLease | None = None
        try:
            lease = await asyncio.to_thread(
                self._registry.acquire,
                plan.camera_id,
                plan.source_url,
                session.on_frame,
                on_state=session.on_camera_state,
                ready_timeout_s=self._settings.camera.open_timeout_s,
            )
            recorder = Recorder(
                plan.video_path,
                expected_duration_s=plan.duration_s or plan.frame_count / NOMINAL_FPS,
                on_failure=session.on_recording_failure,
            )
            await asyncio.to_thread(recorder.attach, lease.camera)
        except BaseException as error:
            batcher.unregister(plan.camera_id)
            if lease is not None:
                lease.release()
            raise _start_error(plan, error) from error
        session.begin(lease, recorder)
        held.session = session
        self._metrics.active_assessments.inc()
        logger.info(
            "assessment %s started on camera %s (%s, level %d)",
            plan.assessment_id,
            plan.camera_id,
            pb.Exercise.Name(plan.exercise),
            plan.difficulty_level,
        )

    def _finished(self, session: AssessmentSession) -> None:
        held = self._held.get(session.assessment_id)
        if held is None:
            return
        held.finished_monotonic = time.monotonic()
        held.session = None  # the record and the event log are all a finished assessment needs
        if self._cameras_in_use.get(held.record.camera_id) == held.record.assessment_id:
            del self._cameras_in_use[held.record.camera_id]
        self._metrics.active_assessments.dec()
        self._metrics.assessments_finished.labels(pb.EndReason.Name(held.record.end_reason)).inc()
        logger.info(
            "assessment %s finished: %s, %d reps (%s)",
            held.record.assessment_id,
            pb.EndReason.Name(held.record.end_reason),
            held.record.rep_count,
            held.record.end_detail,
        )

    def knows(self, assessment_id: str) -> bool:
        self._forget_expired()
        return assessment_id in self._held

    def get(self, assessment_id: str) -> pb.Assessment:
        return _snapshot(self._find(assessment_id))

    def list(
        self,
        *,
        camera_id: str = "",
        state: pb.AssessmentState.ValueType = pb.ASSESSMENT_STATE_UNSPECIFIED,
    ) -> list[pb.Assessment]:
        self._forget_expired()
        chosen = [
            _snapshot(held)
            for held in self._held.values()
            if (not camera_id or held.record.camera_id == camera_id)
            and (not state or held.record.state == state)
        ]
        chosen.sort(key=lambda item: item.create_time.ToNanoseconds(), reverse=True)
        return chosen

    def event_log(self, assessment_id: str) -> EventLog:
        return self._find(assessment_id).log

    async def stop(self, assessment_id: str, reason: str) -> pb.Assessment:
        held = self._find(assessment_id)
        if not held.starting.done():
            await asyncio.shield(held.starting)
        if held.session is not None and not held.session.finished:
            detail = f"stopped by the client: {reason}" if reason else "stopped by the client"
            await held.session.end(pb.END_REASON_CANCELLED, detail)
        return self.get(assessment_id)

    async def shutdown(self, grace_s: float) -> None:
        """End every running assessment with SHUTDOWN, finalise, and release everything."""
        self._shutting_down = True
        sessions = [
            held.session
            for held in self._held.values()
            if held.session is not None and not held.session.finished
        ]
        if sessions:
            ending = [
                session.end(pb.END_REASON_SHUTDOWN, "the server is shutting down")
                for session in sessions
            ]
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(item) for item in ending], timeout=grace_s
            )
            if pending:
                logger.error("%d assessments did not finish within %.1f s", len(pending), grace_s)
        for held in self._held.values():
            if not held.log.closed:
                held.log.close()
        await asyncio.to_thread(self._registry.close)
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.stop)
        if self._engine is not None:
            self._engine.close()

    def _find(self, assessment_id: str) -> _Held:
        self._forget_expired()
        held = self._held.get(assessment_id)
        if held is None:
            raise NotFound(f"no assessment with id {assessment_id!r}")
        return held

    def _forget_expired(self) -> None:
        now = time.monotonic()
        retention_s = self._settings.limits.retention_s
        expired = [
            assessment_id
            for assessment_id, held in self._held.items()
            if held.finished_monotonic is not None and now - held.finished_monotonic > retention_s
        ]
        for assessment_id in expired:
            del self._held[assessment_id]


def _restore_all(video_root: Path, max_age_s: float) -> list[RestoredAssessment]:
    restored = (restore(path) for path in recent_event_logs(video_root, max_age_s))
    return [item for item in restored if item is not None]


def _start_error(plan: AssessmentPlan, error: BaseException) -> BaseException:
    """The status a failed start answers with (other errors pass through unchanged)."""
    if isinstance(error, CameraBusy):
        return FailedPrecondition(str(error))
    if isinstance(error, CameraError):
        return FailedPrecondition(f"camera {plan.camera_id!r} cannot be opened: {error}")
    if isinstance(error, InsufficientSpace):
        return ResourceExhausted(f"output_path: {error}")
    if isinstance(error, RecordingError):
        return AlreadyExists(f"output_path: {error}")
    return error


def _snapshot(held: _Held) -> pb.Assessment:
    """A copy of the assessment as a caller sees it now."""
    copy = pb.Assessment()
    copy.CopyFrom(held.record)
    if held.session is not None and not held.session.finished:
        copy.frames_received = held.session.frames_received
    copy.last_sequence = held.log.last_sequence
    return copy


def _beside(video_path: Path, suffix: str) -> Path:
    return video_path.with_name(video_path.name + suffix)
