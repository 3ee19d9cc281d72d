"""`fitscore-server bench`: the report of a short real run, the source cache, the sweep, the soak.

Numbers are checked for consistency with each other, never against a clock: timing claims live in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import av
import pytest

from client import assessment_pb2 as pb
from server.bench import (
    BenchRun,
    add_bench_arguments,
    bench_command,
    sweep,
    sweep_sizes,
)
from server.bench_probes import prepare_source
from server.soak import Followed, event_problems, soak, video_problem
from tests.support.rtsp import VideoFactory

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "var" / "models"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return parser.parse_args(argv)


def probe(path: Path) -> tuple[float, float, int, int]:
    """Frame rate, duration (s), frames, keyframes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0)
        packets = [packet for packet in container.demux(stream) if packet.size]
        return (
            rate,
            (container.duration or 0) / av.time_base,
            len(packets),
            sum(packet.is_keyframe for packet in packets),
        )


def test_source_is_transcoded_once_to_the_asked_rate_and_length(
    make_video: VideoFactory, tmp_path: Path
) -> None:
    clip = make_video(seconds=2.0, fps=25)
    cache = tmp_path / "cache"
    prepared = prepare_source(clip, fps=20, min_seconds=5.0, cache_dir=cache)
    assert prepared.parent == cache
    rate, duration_s, frames, keyframes = probe(prepared)
    assert rate == pytest.approx(20.0)
    assert frames == 5 * 20  # looped up to the asked length
    assert duration_s == pytest.approx(5.0, abs=0.1)
    assert keyframes == 5  # GOP = fps
    written = prepared.stat().st_mtime_ns
    assert prepare_source(clip, fps=20, min_seconds=5.0, cache_dir=cache) == prepared
    assert prepared.stat().st_mtime_ns == written
    assert [path.name for path in cache.iterdir()] == [prepared.name]  # no .part left


def test_source_at_the_asked_rate_and_long_enough_is_used_as_it_is(
    make_video: VideoFactory, tmp_path: Path
) -> None:
    clip = make_video(seconds=3.0, fps=20)
    assert prepare_source(clip, fps=20, min_seconds=2.0, cache_dir=tmp_path / "cache") == clip
    assert not (tmp_path / "cache").exists()


def test_bench_command_needs_a_source(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert bench_command(parse("--source", str(tmp_path / "missing.mp4"))) == 2
    assert "--source" in capsys.readouterr().err
    assert bench_command(parse()) == 2


@pytest.mark.slow
def test_two_cameras_report_consistent_numbers(
    make_video: VideoFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_video(seconds=2.0, fps=25)
    output = tmp_path / "report.json"
    arguments = parse(
        "--source", str(clip), "--cameras", "2", "--seconds", "3", "--fps", "20", "--json",
        "--output", str(output), "--cache-dir", str(tmp_path / "cache"),
        "--model-dir", str(MODEL_DIR),
    )  # fmt: skip
    assert bench_command(arguments) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(output.read_text(encoding="utf-8")) == report
    assert set(report) == set(BenchRun.__dataclass_fields__)
    assert report["cameras"] == 2
    assert report["transport"] == "file"
    assert report["end_reasons"] == {"COMPLETED": 2}
    assert report["frames_expected"] == 2 * 3 * 20
    received, judged = report["frames_received"], report["frames_judged"]
    assert received == report["frames_expected"]  # the clock is the stream's: exactly 3 s each
    assert judged + report["frames_skipped"] == received
    assert report["skipped_pct"] == pytest.approx(
        100 * report["frames_skipped"] / received, abs=1e-3
    )
    assert report["received_pct"] == pytest.approx(100.0)
    assert report["latency_samples"] == judged
    assert 0 < report["latency_p50_ms"] <= report["latency_p99_ms"]
    batches = report["inference_batches"]
    assert batches >= math.ceil(judged / 2)  # the CPU runtime's batches hold at most 2 frames
    assert report["mean_batch_size"] * batches == pytest.approx(judged, abs=batches * 5e-4)
    assert report["mean_batch_size"] <= 2.0
    assert report["mean_inference_ms"] > 0
    assert report["inference_workers"] >= 1
    assert report["realtime"] == (report["failed_checks"] == [])
    assert report["cpu_pct"] > 0
    assert sum(report["cpu_by_thread_pct"].values()) == pytest.approx(report["cpu_pct"], abs=1.0)
    assert report["rss_mib_max"] >= report["rss_mib_end"] > 0
    assert report["rss_mib_max"] >= report["rss_mib_start"] > 0
    assert report["box_cpu_pct"] <= 100 * report["cores"] + 1
    assert report["rtsp_server_cpu_pct"] is None
    assert len(report["load_average_start"]) == 3


@pytest.mark.slow
def test_sweep_runs_each_size_in_a_fresh_process(
    make_video: VideoFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_video(seconds=2.0, fps=20)
    arguments = parse(
        "--source", str(clip), "--sweep", "--max-cameras", "1", "--seconds", "2", "--json",
        "--cache-dir", str(tmp_path / "cache"), "--model-dir", str(MODEL_DIR),
    )  # fmt: skip
    assert bench_command(arguments) == 0
    report = json.loads(capsys.readouterr().out)
    assert [run["cameras"] for run in report["runs"]] == [1]
    run = report["runs"][0]
    assert report["max_realtime_cameras"] == (1 if run["realtime"] else 0)
    assert run["frames_received"] == 2 * 20
    assert report["criteria"] == {
        "min_received_fraction": 0.97,
        "max_skipped_pct": 1.0,
        "min_pace": 0.97,
    }


def test_sweep_sizes_follow_the_issue() -> None:
    assert list(sweep_sizes(12)) == [1, 2, 3, 4, 6, 8, 10, 12]


@pytest.mark.parametrize(
    ("holds_up_to", "measured", "expected"),
    [
        (5, [1, 2, 3, 4, 6, 5], 5),
        (4, [1, 2, 3, 4, 6, 5], 4),
        (7, [1, 2, 3, 4, 6, 8, 7], 7),
        (0, [1], 0),
        (40, list(sweep_sizes(12)), 12),
    ],
)
async def test_sweep_grows_until_real_time_fails_then_bisects(
    holds_up_to: int, measured: list[int], expected: int
) -> None:
    seen: list[int] = []

    async def run(cameras: int) -> BenchRun:
        seen.append(cameras)
        return _run(cameras, realtime=cameras <= holds_up_to)

    reported: list[int] = []
    report = await sweep(run, 12, lambda result: reported.append(result.cameras))
    assert seen == measured
    assert reported == measured
    assert report["max_realtime_cameras"] == expected
    assert [item["cameras"] for item in report["runs"]] == sorted(measured)
    json.dumps(report)


def _run(cameras: int, *, realtime: bool) -> BenchRun:
    return BenchRun(
        cameras=cameras, fps=20, seconds=1.0, transport="file", source="x.mp4", realtime=realtime,
        failed_checks=[] if realtime else ["skipped > 1 %"], frames_expected=20 * cameras,
        frames_received=20 * cameras, frames_judged=20 * cameras, frames_skipped=0,
        received_pct=100.0, skipped_pct=0.0, pace_min=1.0, end_reasons={"COMPLETED": cameras},
        latency_samples=20 * cameras, latency_p50_ms=10.0, latency_p99_ms=20.0, wall_s=1.0,
        cpu_pct=50.0, cpu_by_thread_pct={}, rtsp_server_cpu_pct=None, box_cpu_pct=60.0,
        rss_mib_start=90.0, rss_mib_max=100.0,
        rss_mib_end=100.0, inference_workers=1, inference_batches=20, mean_batch_size=1.0,
        mean_inference_ms=5.0, inference_busy_pct=10.0, load_average_start=[0.0, 0.0, 0.0],
        load_average_end=[0.0, 0.0, 0.0],
    )  # fmt: skip


def _event(sequence: int, payload: str) -> pb.AssessmentEvent:
    event = pb.AssessmentEvent(assessment_id="a1", sequence=sequence)
    if payload == "finished":
        event.finished.assessment.assessment_id = "a1"
    else:
        event.progress.frames_received = sequence
    return event


def test_event_check_counts_what_the_subscriber_missed() -> None:
    logged = [_event(1, "progress"), _event(2, "progress"), _event(3, "finished")]
    assert event_problems(logged, Followed("cam0", list(logged))) == (0, [])
    lost, problems = event_problems(logged, Followed("cam0", [logged[0], logged[2]]))
    assert lost == 1
    assert problems == ["cam0/a1: the subscriber never received events [2]"]


def test_event_check_finds_gaps_and_a_missing_finished_in_the_log() -> None:
    received = [_event(1, "progress"), _event(2, "progress"), _event(3, "finished")]
    lost, problems = event_problems([received[0], received[2]], Followed("cam0", received))
    assert lost == 0
    assert "cam0/a1: the event log is not numbered 1..2" in problems
    _, problems = event_problems(received[:2], Followed("cam0", received))
    assert "cam0/a1: the event log does not end with Finished" in problems
    changed = [_event(1, "progress"), _event(2, "finished"), _event(3, "finished")]
    _, problems = event_problems(changed, Followed("cam0", received))
    assert problems == ["cam0/a1: logged and received events differ at [2]"]


def test_video_check_decodes_to_the_end_and_flags_a_damaged_file(
    make_video: VideoFactory, tmp_path: Path
) -> None:
    clip = make_video(seconds=1.0, fps=20)
    assert video_problem(clip) == (20, None)
    assert video_problem(tmp_path / "missing.mp4")[1] is not None
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(clip.read_bytes()[:200])
    frames, problem = video_problem(damaged)
    assert frames == 0
    assert problem is not None


@pytest.mark.rtsp
@pytest.mark.slow
async def test_short_soak_with_a_camera_fault_loses_nothing(
    make_video: VideoFactory, tmp_path: Path
) -> None:
    clip = make_video(seconds=4.0, fps=20)
    report = await soak(
        clip,
        minutes=0.4,
        cameras=1,
        faults=True,
        assessment_s=10.0,
        fault_interval_s=6.0,
        sample_interval_s=2.0,
        model_dir=MODEL_DIR,
    )
    assert report["ok"], report
    assert report["lost_events"] == 0
    assert report["corrupt_videos"] == 0
    assert report["assessments"] == report["videos_checked"] >= 2
    assert len(report["faults"]) >= 1
    assert report["warnings"].get("CAMERA_RECONNECTING", 0) >= 1
    assert report["events_received"] > 2 * report["assessments"]
    assert report["video_frames_decoded"] > 0
    assert len(report["samples"]) >= 3
    json.dumps(report)
