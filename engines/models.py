"""Provision the BlazePose models: fetch the pinned TFLite files, convert them to ONNX, record both.

The two ``.tflite`` files come from the ``mediapipe==0.10.14`` wheel on PyPI (the last line that
ships them; DESIGN.md §5). The wheel cannot be installed next to our protobuf, so it is only
downloaded (``pip download --no-deps``) and opened as a zip; just the two files are extracted and
checked against pinned SHA-256 digests. Each is converted to ONNX by :mod:`engines.tflite_onnx`,
and ``manifest.json`` records what was made from what.

Layout of a model directory (default :data:`DEFAULT_MODEL_DIR`, ``var/models`` relative to the
working directory)::

    pose_detection.tflite  pose_landmark_full.tflite   pinned sources
    pose_detection.onnx    pose_landmark_full.onnx     converted (landmark heads pruned)
    manifest.json                                      sources, hashes, converter version

:func:`fetch_models` is idempotent and offline once the directory is complete; it only needs PyPI
when the ``.tflite`` files are absent (copying them in by hand is an offline alternative).
:func:`locate_models` is what a server calls at start: it never downloads or converts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.tflite_onnx import CONVERTER_VERSION, LANDMARK_OUTPUTS, ConversionError, convert
from engines.tflite_reader import TfliteFormatError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path("var/models")
"""Where models live unless told otherwise; relative, so resolved against the working directory."""

MEDIAPIPE_VERSION = "0.10.14"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
DOWNLOAD_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class ModelSource:
    """One pinned TFLite model inside the mediapipe wheel and the ONNX file made from it."""

    key: str
    wheel_member: str
    sha256: str
    output_names: tuple[str, ...] | None
    """Outputs kept in the ONNX model; None keeps all of them."""

    @property
    def tflite_name(self) -> str:
        return self.wheel_member.rsplit("/", 1)[-1]

    @property
    def onnx_name(self) -> str:
        return self.key + ".onnx"

    def convert(self, tflite_model: bytes) -> bytes:
        """The serialized ONNX model made from this source's verified TFLite bytes."""
        try:
            model = convert(tflite_model, output_names=self.output_names, name=self.key)
        except (ConversionError, TfliteFormatError) as error:
            raise ModelError(f"could not convert {self.tflite_name} to ONNX: {error}") from error
        return bytes(model.SerializeToString())


DETECTOR = ModelSource(
    key="pose_detection",
    wheel_member="mediapipe/modules/pose_detection/pose_detection.tflite",
    sha256="9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    output_names=None,
)
LANDMARK = ModelSource(
    key="pose_landmark_full",
    wheel_member="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
    sha256="e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    output_names=LANDMARK_OUTPUTS,
)
SOURCES = (DETECTOR, LANDMARK)


class ModelError(Exception):
    """The models are missing, out of date or could not be provisioned."""


class ModelDownloadError(ModelError):
    """The mediapipe wheel could not be downloaded."""


class ModelHashMismatchError(ModelError):
    """A model file's SHA-256 is not the pinned one."""

    def __init__(self, path: Path, expected_sha256: str, actual_sha256: str) -> None:
        super().__init__(
            f"{path}: SHA-256 is {actual_sha256}, but the pinned model's is {expected_sha256}; "
            "the file is corrupt or not the pinned model (delete it if it is there, then run "
            "`fitscore-server models fetch` again)"
        )
        self.path = path
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256


@dataclass(frozen=True)
class ModelFiles:
    """Paths of a complete, verified model directory."""

    directory: Path
    detector_onnx: Path
    landmark_onnx: Path
    detector_tflite: Path
    landmark_tflite: Path
    manifest: Path

    @classmethod
    def in_directory(cls, directory: Path) -> ModelFiles:
        return cls(
            directory=directory,
            detector_onnx=directory / DETECTOR.onnx_name,
            landmark_onnx=directory / LANDMARK.onnx_name,
            detector_tflite=directory / DETECTOR.tflite_name,
            landmark_tflite=directory / LANDMARK.tflite_name,
            manifest=directory / MANIFEST_NAME,
        )


def locate_models(model_dir: Path) -> ModelFiles:
    """The provisioned models in ``model_dir``, checked against their manifest; never downloads."""
    files = ModelFiles.in_directory(model_dir)
    problem = _find_problem(files)
    if problem is not None:
        raise ModelError(
            f"BlazePose models in {model_dir} are not ready ({problem}); "
            f"run `fitscore-server models fetch --dir {model_dir}` (needs PyPI once)"
        )
    return files


def fetch_models(model_dir: Path, *, python: str = sys.executable) -> ModelFiles:
    """Make ``model_dir`` complete: download and convert what is missing, then verify.

    ``python`` is the interpreter whose pip downloads the wheel (only when a ``.tflite`` file is
    absent). Returns at once, offline, when the directory already matches its manifest.
    """
    return _fetch(model_dir, python)[0]


def fetch_command(model_dir: Path) -> int:
    """``fitscore-server models fetch``: provision, print a summary, return the exit code."""
    try:
        files, up_to_date = _fetch(model_dir, sys.executable)
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manifest = _read_json(files.manifest)
    state = "already up to date" if up_to_date else "fetched and converted"
    print(f"BlazePose models in {files.directory}: {state}")
    print(f"  mediapipe {manifest['mediapipe_version']}, converter {manifest['converter_version']}")
    for source in SOURCES:
        entry = manifest["models"][source.key]
        print(f"  {files.directory / entry['onnx']}  sha256 {entry['onnx_sha256']}")
        print(f"    from {entry['tflite']}  sha256 {entry['tflite_sha256']}")
    return 0


def _fetch(model_dir: Path, python: str) -> tuple[ModelFiles, bool]:
    files = ModelFiles.in_directory(model_dir)
    problem = _find_problem(files)
    if problem is None:
        logger.debug("models in %s are up to date", model_dir)
        return files, True
    logger.info("provisioning models in %s (%s)", model_dir, problem)
    model_dir.mkdir(parents=True, exist_ok=True)
    missing = [source for source in SOURCES if not (model_dir / source.tflite_name).is_file()]
    if missing:
        _download_tflite(model_dir, missing, python)
    entries: dict[str, dict[str, Any]] = {}
    for source in SOURCES:
        tflite_path = model_dir / source.tflite_name
        tflite_bytes = tflite_path.read_bytes()
        _check_hash(tflite_path, tflite_bytes, source.sha256)
        onnx_bytes = source.convert(tflite_bytes)
        write_atomically(model_dir / source.onnx_name, onnx_bytes)
        entries[source.key] = {
            "tflite": source.tflite_name,
            "tflite_sha256": source.sha256,
            "wheel_member": source.wheel_member,
            "onnx": source.onnx_name,
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        }
    manifest = {
        "format": MANIFEST_FORMAT,
        "mediapipe_version": MEDIAPIPE_VERSION,
        "converter_version": CONVERTER_VERSION,
        "models": entries,
    }
    write_atomically(files.manifest, (json.dumps(manifest, indent=2) + "\n").encode())
    problem = _find_problem(files)
    if problem is not None:  # e.g. another process rewrote a file meanwhile
        raise ModelError(f"models in {model_dir} still not consistent after fetching: {problem}")
    return files, False


def _find_problem(files: ModelFiles) -> str | None:
    """What is wrong with a model directory, or None when it matches its manifest."""
    if not files.manifest.is_file():
        return f"{files.manifest.name} missing"
    try:
        manifest = _read_json(files.manifest)
        if manifest.get("format") != MANIFEST_FORMAT:
            return "manifest format differs"
        if manifest.get("converter_version") != CONVERTER_VERSION:
            return "converted by another converter version"
        if manifest.get("mediapipe_version") != MEDIAPIPE_VERSION:
            return "made from another mediapipe version"
        expected: list[tuple[str, str]] = []
        for source in SOURCES:
            entry = manifest["models"][source.key]
            expected.append((source.tflite_name, source.sha256))
            expected.append((source.onnx_name, str(entry["onnx_sha256"])))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return f"unreadable manifest ({error!r})"
    for name, sha256 in expected:
        path = files.directory / name
        if not path.is_file():
            return f"{name} missing"
        if _sha256(path.read_bytes()) != sha256:
            return f"{name} does not match the manifest"
    return None


def _download_tflite(model_dir: Path, sources: list[ModelSource], python: str) -> None:
    """Download the mediapipe wheel with pip and extract the wanted ``.tflite`` files."""
    with tempfile.TemporaryDirectory(prefix="fitscore-mediapipe-") as temporary:
        command = [
            python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            f"mediapipe=={MEDIAPIPE_VERSION}", "--platform", "manylinux_2_17_x86_64",
            "--python-version", "3.11", "--implementation", "cp",
            "--disable-pip-version-check", "--no-input", "--quiet", "-d", temporary,
        ]  # fmt: skip
        logger.info("downloading mediapipe==%s with %s", MEDIAPIPE_VERSION, python)
        advice = (
            f"could not download mediapipe=={MEDIAPIPE_VERSION} with `{python} -m pip download`: "
            "PyPI (or the configured pip index) seems unreachable from this machine, or pip is "
            "missing there. Fix network access and run `fitscore-server models fetch` again, or "
            "copy "
            f"{' and '.join(source.tflite_name for source in sources)} from that wheel into "
            f"{model_dir} and run it offline"
        )
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ModelDownloadError(f"{advice} ({error})") from error
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ModelDownloadError(f"{advice} (pip exited {result.returncode}: {detail})")
        wheels = sorted(Path(temporary).glob("mediapipe-*.whl"))
        if not wheels:
            raise ModelDownloadError(f"{advice} (pip reported success but wrote no wheel)")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for source in sources:
                    data = wheel.read(source.wheel_member)
                    _check_hash(model_dir / source.tflite_name, data, source.sha256)
                    write_atomically(model_dir / source.tflite_name, data)
        except (zipfile.BadZipFile, KeyError) as error:
            raise ModelDownloadError(
                f"{wheels[0].name} is not the expected wheel: {error}"
            ) from error


def _check_hash(path: Path, data: bytes, expected_sha256: str) -> None:
    actual = _sha256(data)
    if actual != expected_sha256:
        raise ModelHashMismatchError(path, expected_sha256, actual)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    value = json.loads(path.read_text())
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return value


def write_atomically(path: Path, data: bytes) -> None:
    """Write beside ``path``, then rename over it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
