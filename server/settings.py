"""Server settings: one frozen tree, read from a TOML file and command-line flags, checked at start.

Every key has a default that runs on a laptop (CPU engine, 127.0.0.1:50051, ./var/videos). An
unknown key or a value of the wrong type stops the server with the key's dotted name, e.g.
``settings: unknown key 'engine.max_batchsize'``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

CAMERA_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SettingsError(ValueError):
    """A settings file or flag is wrong; the message names the key."""


@dataclass(frozen=True)
class EngineSettings:
    runtime: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    """Pose runtime: ONNX Runtime (CPU, CUDA when present) or TensorRT FP16 on a GPU."""
    model_dir: Path = Path("var/models")
    """Where `fitscore-server models fetch` put the converted BlazePose models."""
    max_batch: int = 8
    """Most frames (one per camera) in one inference call."""
    max_wait_ms: float = 10.0
    """How long the batcher waits for more cameras' frames before running a partial batch."""
    threads: int = 0
    """ONNX Runtime intra-op threads per model call; 0 = the runtime's choice (1 on a CPU)."""
    workers: int = 0
    """Batch threads calling the engine at once (on different cameras); 0 = one per core for
    ONNX Runtime, 1 for TensorRT."""


@dataclass(frozen=True)
class CameraSettings:
    stall_timeout_s: float = 3.0
    """No packet for this long = stalled; the camera reconnects."""
    open_timeout_s: float = 5.0
    idle_close_s: float = 60.0
    """Cameras opened on demand stay open this long after their last assessment."""
    max_gap_s: float = 10.0
    """A running assessment whose camera delivers no frame for this long ends FAILED."""
    loop_files: bool = False
    """file:// sources restart at their end instead of ending (demos and benchmarks)."""


@dataclass(frozen=True)
class LimitSettings:
    max_assessments: int = 32
    """Running assessments at once; more → RESOURCE_EXHAUSTED."""
    max_subscribers: int = 64
    """Open StreamEvents calls per assessment; more → RESOURCE_EXHAUSTED."""
    max_message_bytes: int = 4 * 1024 * 1024
    retention_s: float = 3600.0
    """Finished assessments stay queryable (and resumable) for this long."""


@dataclass(frozen=True)
class SecuritySettings:
    allow_file_sources: bool = False
    """Accept file:// source URLs (tests, demos). Off in production."""
    token_file: Path | None = None
    """When set, every call needs `authorization: Bearer <token>` with this file's contents."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    """When set (with cert and key), clients must present a certificate signed by this CA (mTLS)."""


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    video_root: Path = Path("var/videos")
    rules_file: Path | None = None
    """Judging rules overriding the shipped ones."""
    metrics_listen: str = ""
    """host:port of the Prometheus endpoint; empty = off."""
    grace_s: float = 10.0
    """On SIGTERM, running assessments are finalised within this time."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    engine: EngineSettings = field(default_factory=EngineSettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    cameras: Mapping[str, str] = field(default_factory=dict)
    """Configured cameras: camera_id → source URL, opened at start and kept warm."""

    def __post_init__(self) -> None:
        _check_listen("listen", self.listen)
        if self.metrics_listen:
            _check_listen("metrics_listen", self.metrics_listen)
        for camera_id, url in self.cameras.items():
            if not CAMERA_ID_PATTERN.match(camera_id):
                raise SettingsError(f"settings: cameras.{camera_id}: not a valid camera id")
            if not isinstance(url, str) or "://" not in url:
                raise SettingsError(f"settings: cameras.{camera_id}: expected a source URL")
        _check_positive("engine.max_batch", self.engine.max_batch)
        _check_positive("limits.max_assessments", self.limits.max_assessments)
        _check_positive("limits.max_subscribers", self.limits.max_subscribers)
        _check_positive("camera.stall_timeout_s", self.camera.stall_timeout_s)
        _check_positive("camera.max_gap_s", self.camera.max_gap_s)
        tls = self.security
        if (tls.tls_cert_file is None) != (tls.tls_key_file is None):
            raise SettingsError("settings: security.tls_cert_file and tls_key_file go together")
        if tls.tls_client_ca_file is not None and tls.tls_cert_file is None:
            raise SettingsError("settings: security.tls_client_ca_file needs tls_cert_file")


def _check_listen(key: str, value: str) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"settings: {key}: expected HOST:PORT, got {value!r}")


def _check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise SettingsError(f"settings: {key}: must be > 0, got {value}")


T = TypeVar("T")


def _convert(key: str, hint: Any, value: Any) -> Any:
    """Check one TOML value against a dataclass field's type and convert paths."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in get_args(hint) if option is not type(None)]
        # An empty string stands for "not set" (TOML has no null).
        return None if value is None or value == "" else _convert(key, options[0], value)
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(repr(choice) for choice in get_args(hint))
            raise SettingsError(f"settings: {key}: expected one of {choices}, got {value!r}")
        return value
    if origin is Mapping or origin is dict:
        if not isinstance(value, Mapping):
            raise SettingsError(f"settings: {key}: expected a table")
        return {
            str(name): _convert(f"{key}.{name}", get_args(hint)[1], item)
            for name, item in value.items()
        }
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise SettingsError(f"settings: {key}: expected a table")
        return _build(typing.cast(type[Any], hint), value, prefix=f"{key}.")
    if hint is Path:
        if not isinstance(value, str | Path):
            raise SettingsError(f"settings: {key}: expected a path string")
        return Path(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"settings: {key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"settings: {key}: expected an integer, got {value!r}")
        return value
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise SettingsError(f"settings: {key}: expected {hint.__name__}, got {value!r}")
        return value
    raise SettingsError(f"settings: {key}: unsupported type")  # a field type this loader lacks


def _build(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    hints = get_type_hints(cls)
    known = {item.name for item in fields(cls)}  # type: ignore[arg-type]
    for name in values:
        if name not in known:
            raise SettingsError(f"settings: unknown key '{prefix}{name}'")
    converted = {
        name: _convert(prefix + name, hints[name], value) for name, value in values.items()
    }
    return cls(**converted)


def settings_from_mapping(values: Mapping[str, Any]) -> Settings:
    """Build settings from a parsed TOML document (or any nested mapping)."""
    return _build(Settings, values)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (TOML) if given, then apply top-level overrides from flags (None = not set)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                values = tomllib.load(handle)
        except FileNotFoundError:
            raise SettingsError(f"settings: file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"settings: {path}: {error}") from None
    settings = settings_from_mapping(values)
    given = {name: value for name, value in overrides.items() if value is not None}
    if not given:
        return settings
    hints = get_type_hints(Settings)
    for name, value in given.items():
        if name not in hints:
            raise SettingsError(f"settings: unknown key '{name}'")
        given[name] = _convert(name, hints[name], value)
    return replace(settings, **given)
