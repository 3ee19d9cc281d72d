"""The few CUDA runtime calls the TensorRT runner needs, behind a small protocol.

:class:`CudaApi` is what :mod:`engines.tensorrt_runtime` uses: device and page-locked host buffers,
one stream, asynchronous copies. :class:`CudaRuntime` implements it with ``cuda-python``
(``cuda.bindings.runtime`` from 12.6/13.x; ``cuda.cudart`` before, removed in 13.0); tests plug in
a hand-written fake. Every CUDA call returns ``(error, value…)``; errors become
:class:`engines.EngineError`.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Protocol

import numpy as np
from numpy.typing import DTypeLike, NDArray

from engines import EngineError, RuntimeUnavailableError
from engines.tensorrt_cache import GpuIdentity

logger = logging.getLogger(__name__)


class CudaApi(Protocol):
    def device_identity(self) -> GpuIdentity: ...

    def allocate_device(self, byte_count: int) -> int:
        """Device buffer; returns its address."""
        ...

    def free_device(self, address: int) -> None: ...

    def allocate_host(self, shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
        """Page-locked host array (fast, truly asynchronous copies)."""
        ...

    def free_host(self, array: NDArray[Any]) -> None: ...

    def create_stream(self) -> int:
        """A new stream; returns the native handle ``execute_async_v3`` takes."""
        ...

    def destroy_stream(self, stream: int) -> None: ...

    def copy_to_device(self, address: int, source: NDArray[Any], stream: int) -> None: ...

    def copy_to_host(self, destination: NDArray[Any], address: int, stream: int) -> None: ...

    def synchronize(self, stream: int) -> None: ...


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError as error:
        raise RuntimeUnavailableError(
            "cuda-python is not installed; the TensorRT runtime needs it "
            "(pip install 'fitscore[tensorrt]')"
        ) from error


class CudaRuntime:
    """:class:`CudaApi` on cuda-python, device 0."""

    def __init__(self) -> None:
        self._cudart = _import_cudart()
        error, count = self._cudart.cudaGetDeviceCount()
        if error != self._cudart.cudaError_t.cudaSuccess or not count:
            raise RuntimeUnavailableError(f"no usable CUDA device ({error}, count {count})")
        self._check(self._cudart.cudaSetDevice(0), "cudaSetDevice")
        self._streams: dict[int, Any] = {}
        self._host_addresses: dict[int, int] = {}

    def _check(self, result: Any, call: str) -> Any:
        """Unpack a cuda-python result tuple, raising on an error code."""
        values = result if isinstance(result, tuple) else (result,)
        error = values[0]
        if error != self._cudart.cudaError_t.cudaSuccess:
            raise EngineError(f"{call} failed: {error}")
        if len(values) == 1:
            return None
        return values[1] if len(values) == 2 else values[1:]

    def device_identity(self) -> GpuIdentity:
        properties = self._check(self._cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        raw_name = properties.name
        name = raw_name.split(b"\0", 1)[0].decode() if isinstance(raw_name, bytes) else raw_name
        return GpuIdentity(name=str(name), compute_capability=(properties.major, properties.minor))

    def allocate_device(self, byte_count: int) -> int:
        return int(self._check(self._cudart.cudaMalloc(byte_count), "cudaMalloc"))

    def free_device(self, address: int) -> None:
        self._check(self._cudart.cudaFree(address), "cudaFree")

    def allocate_host(self, shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
        item = np.dtype(dtype)
        byte_count = int(np.prod(shape)) * item.itemsize
        address = int(self._check(self._cudart.cudaMallocHost(byte_count), "cudaMallocHost"))
        raw = (ctypes.c_byte * byte_count).from_address(address)
        array: NDArray[Any] = np.frombuffer(memoryview(raw), dtype=item).reshape(shape)
        self._host_addresses[array.ctypes.data] = address
        return array

    def free_host(self, array: NDArray[Any]) -> None:
        address = self._host_addresses.pop(array.ctypes.data, None)
        if address is not None:
            self._check(self._cudart.cudaFreeHost(address), "cudaFreeHost")

    def create_stream(self) -> int:
        stream = self._check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        handle = _native_handle(stream)
        self._streams[handle] = stream
        return handle

    def destroy_stream(self, stream: int) -> None:
        native = self._streams.pop(stream, None)
        if native is not None:
            self._check(self._cudart.cudaStreamDestroy(native), "cudaStreamDestroy")

    def copy_to_device(self, address: int, source: NDArray[Any], stream: int) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self._cudart.cudaMemcpyAsync(
                address, source.ctypes.data, source.nbytes, kind, self._streams[stream]
            ),
            "cudaMemcpyAsync",
        )

    def copy_to_host(self, destination: NDArray[Any], address: int, stream: int) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self._cudart.cudaMemcpyAsync(
                destination.ctypes.data, address, destination.nbytes, kind, self._streams[stream]
            ),
            "cudaMemcpyAsync",
        )

    def synchronize(self, stream: int) -> None:
        self._check(
            self._cudart.cudaStreamSynchronize(self._streams[stream]), "cudaStreamSynchronize"
        )


def _native_handle(stream: Any) -> int:
    """The integer handle of a cuda-python stream (``int()`` on it is deprecated from 13.0)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(stream)
    return int(get_cuda_native_handle(stream))
