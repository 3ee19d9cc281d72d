"""The engine benchmark's measurements and report, on the real models and a tiny clip."""

from __future__ import annotations

from pathlib import Path

from engines.benchmark import bench_engine, format_report
from engines.models import ModelFiles
from tests.engines.fixtures_pipeline import write_video


def test_bench_engine_measures_the_model_and_the_pipeline(
    model_files: ModelFiles, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 4)
    result = bench_engine(
        model_files.directory, video, batch_sizes=(1, 2), min_duration_s=0.05, max_batch=2
    )
    assert result["engine"] == "blazepose-full/onnxruntime-cpu"
    assert [row["batch"] for row in result["landmark_model"]] == [1, 2]
    assert all(row["images_per_s"] > 0 for row in result["landmark_model"])
    single = result["pipeline"]
    assert (single["frames"], single["cameras"]) == (4, 1)
    assert single["detector_frames"] == 4  # a grey clip has nobody to track
    assert single["ms_per_frame"] >= single["detector_model_ms_per_frame"] > 0
    assert result["pipeline_concurrent"]["frames"] == 8
    report = format_report(result)
    assert "landmark model" in report
    assert "2 cameras on 2 threads" in report


def test_bench_engine_without_a_video_measures_only_the_model(model_files: ModelFiles) -> None:
    result = bench_engine(model_files.directory, None, batch_sizes=(1,), min_duration_s=0.01)
    assert "pipeline" not in result
    assert "frames/s" not in format_report(result)
