"""What a TensorRT engine is built for, where it is cached, and the profile it is built with.

Pure logic, no TensorRT import: an engine plan runs only on the TensorRT version and GPU model it
was built on, so the cache file name carries a digest of everything that decides its content
(shared/research/gpu_and_video.md §1.6). A plan that still fails to load is rebuilt by the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_FORMAT_VERSION = 1
"""Bump when the way engines are built changes in a way the other key fields do not show."""

PRECISION_FP16 = "fp16"


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    """As the driver reports it, e.g. "NVIDIA H100 80GB HBM3"."""
    compute_capability: tuple[int, int]

    @property
    def slug(self) -> str:
        """File-name-safe ``<name>-sm<major><minor>``."""
        name = re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-").lower() or "gpu"
        major, minor = self.compute_capability
        return f"{name}-sm{major}{minor}"


@dataclass(frozen=True)
class EngineCacheKey:
    model_name: str
    """Stem of the model, for humans reading the cache directory."""
    model_sha256: str
    """Of the exact ONNX bytes TensorRT parses (the FP16 model)."""
    tensorrt_version: str
    gpu: GpuIdentity
    max_batch: int
    precision: str = PRECISION_FP16
    builder_optimization_level: int = 3
    cache_format: int = CACHE_FORMAT_VERSION

    def digest(self) -> str:
        fields = asdict(self)
        fields.pop("model_name")
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def plan_name(self) -> str:
        return f"{self.model_name}-{self.precision}-b{self.max_batch}-{self.digest()[:16]}.plan"

    def plan_path(self, cache_dir: Path) -> Path:
        return cache_dir / self.gpu.slug / f"trt{self.tensorrt_version}" / self.plan_name

    def timing_cache_path(self, cache_dir: Path) -> Path:
        """One timing cache per TensorRT version and GPU, shared by every model built there."""
        return cache_dir / self.gpu.slug / f"trt{self.tensorrt_version}" / "timing.cache"


@dataclass(frozen=True)
class BatchProfile:
    """One optimisation profile: the input shape at the smallest, typical and largest batch."""

    minimum: tuple[int, ...]
    optimum: tuple[int, ...]
    maximum: tuple[int, ...]


def batch_profile(
    sample_shape: tuple[int, ...], max_batch: int, optimum_batch: int | None = None
) -> BatchProfile:
    """Profile for batches 1..``max_batch`` of ``sample_shape`` (one item, batch axis excluded).

    TensorRT picks kernels for ``optimum`` (default: ``max_batch``, where a GPU batcher spends its
    busy time) that stay valid over the whole range.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    optimum = max_batch if optimum_batch is None else optimum_batch
    if not 1 <= optimum <= max_batch:
        raise ValueError(f"optimum batch {optimum} outside 1..{max_batch}")
    return BatchProfile(
        minimum=(1, *sample_shape),
        optimum=(optimum, *sample_shape),
        maximum=(max_batch, *sample_shape),
    )


@contextlib.contextmanager
def build_lock(plan_path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``plan_path`` so two processes never build the same engine."""
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = plan_path.with_name(plan_path.name + ".lock")
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
