"""Hand-written fakes of the ``tensorrt`` module and of CUDA memory, for the TensorRT runner tests.

They keep the shape of TensorRT 10/11's Python API where the runner touches it: name-based I/O
tensors, ``None`` from ``deserialize_cuda_engine``, bool returns from the context, a serialisable
plan and timing cache. The "engine" computes every output value of sample i as the mean of input
sample i plus the output's position, so tests can see rows and buffers move correctly.
"""

from __future__ import annotations

import json
import types
from typing import Any

import numpy as np
import onnx
from numpy.typing import DTypeLike, NDArray
from onnx import TensorProto

from engines.tensorrt_cache import GpuIdentity

GPU = GpuIdentity("NVIDIA Fake H100 80GB", (9, 0))


class FakeCuda:
    """Device memory as byte arrays; every allocation and free is recorded."""

    def __init__(self) -> None:
        self.memory: dict[int, bytearray] = {}
        self.next_address = 0x1000
        self.host: dict[int, NDArray[Any]] = {}
        self.streams: set[int] = set()
        self.synchronized = 0

    def device_identity(self) -> GpuIdentity:
        return GPU

    def allocate_device(self, byte_count: int) -> int:
        address = self.next_address
        self.next_address += byte_count + 256
        self.memory[address] = bytearray(byte_count)
        return address

    def free_device(self, address: int) -> None:
        del self.memory[address]

    def allocate_host(self, shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
        array: NDArray[Any] = np.zeros(shape, dtype=dtype)
        self.host[id(array)] = array
        return array

    def free_host(self, array: NDArray[Any]) -> None:
        del self.host[id(array)]

    def create_stream(self) -> int:
        self.streams.add(77)
        return 77

    def destroy_stream(self, stream: int) -> None:
        self.streams.remove(stream)

    def copy_to_device(self, address: int, source: NDArray[Any], stream: int) -> None:
        assert stream in self.streams
        self.memory[address][: source.nbytes] = source.tobytes()

    def copy_to_host(self, destination: NDArray[Any], address: int, stream: int) -> None:
        assert stream in self.streams
        raw = bytes(self.memory[address][: destination.nbytes])
        destination[...] = np.frombuffer(raw, destination.dtype).reshape(destination.shape)

    def synchronize(self, stream: int) -> None:
        self.synchronized += 1


class FakeTensorRt:
    """State and classes of a fake ``tensorrt`` module; ``module`` is what the runner imports."""

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.builds: list[dict[str, Any]] = []
        self.reject_plans = False
        self.parse_as_fp32 = False
        self.fail_execute = False
        self.addresses_set: list[str] = []
        self.input_shapes: list[tuple[int, ...]] = []
        fake = self
        module = types.ModuleType("tensorrt")
        module.__version__ = "10.13.0"  # type: ignore[attr-defined]
        module.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})  # type: ignore[attr-defined]
        module.DataType = types.SimpleNamespace(FLOAT="float", HALF="half")  # type: ignore[attr-defined]
        module.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")  # type: ignore[attr-defined]
        module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)  # type: ignore[attr-defined]
        module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")  # type: ignore[attr-defined]
        module.nptype = lambda dtype: {"float": np.float32, "half": np.float16}[dtype]  # type: ignore[attr-defined]
        module.Builder = lambda logger: FakeBuilder(fake)  # type: ignore[attr-defined]
        module.OnnxParser = lambda network, logger: FakeParser(fake, network)  # type: ignore[attr-defined]
        module.Runtime = lambda logger: FakeRuntime(fake)  # type: ignore[attr-defined]
        self.module = module


class FakeTensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: str = "float") -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class FakeNetwork:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[FakeTensor] = []
        self.outputs: list[FakeTensor] = []
        self.half = False

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> FakeTensor:
        return self.inputs[index]

    @property
    def num_layers(self) -> int:
        return 1

    def get_layer(self, index: int) -> Any:
        output = FakeTensor("layer", (), "half" if self.half else "float")
        return types.SimpleNamespace(num_outputs=1, get_output=lambda position: output)


class FakeParser:
    def __init__(self, fake: FakeTensorRt, network: FakeNetwork) -> None:
        self.fake, self.network = fake, network
        self.num_errors = 0

    def parse(self, data: bytes) -> bool:
        model = onnx.load_from_string(data)

        def shape(value: onnx.ValueInfoProto) -> tuple[int, ...]:
            dims = value.type.tensor_type.shape.dim
            return tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in dims)

        self.network.inputs = [FakeTensor(item.name, shape(item)) for item in model.graph.input]
        self.network.outputs = [FakeTensor(item.name, shape(item)) for item in model.graph.output]
        half = any(item.data_type == TensorProto.FLOAT16 for item in model.graph.initializer)
        self.network.half = half and not self.fake.parse_as_fp32
        return True

    def get_error(self, index: int) -> str:
        return "no error"


class FakeConfig:
    def __init__(self) -> None:
        self.pools: dict[str, int] = {}
        self.builder_optimization_level = 3
        self.profiles: list[dict[str, tuple[tuple[int, ...], ...]]] = []
        self.timing_cache: bytes | None = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size

    def create_timing_cache(self, data: bytes) -> bytes:
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        self.timing_cache = cache
        return True

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile.shapes)
        return 0

    def get_timing_cache(self) -> Any:
        data = (self.timing_cache or b"") + b"+tactics"
        return types.SimpleNamespace(serialize=lambda: data)


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, minimum: Any, optimum: Any, maximum: Any) -> None:
        self.shapes[name] = (tuple(minimum), tuple(optimum), tuple(maximum))


class FakeBuilder:
    def __init__(self, fake: FakeTensorRt) -> None:
        self.fake = fake

    def create_network(self, flags: int) -> FakeNetwork:
        return FakeNetwork(flags)

    def create_builder_config(self) -> FakeConfig:
        return FakeConfig()

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes:
        (profile,) = config.profiles
        plan = {
            "inputs": [[tensor.name, list(tensor.shape)] for tensor in network.inputs],
            "outputs": [[tensor.name, list(tensor.shape)] for tensor in network.outputs],
            "max_batch": next(iter(profile.values()))[2][0],
        }
        self.fake.builds.append(
            {
                "flags": network.flags,
                "profile": profile,
                "workspace": config.pools.get("workspace"),
                "timing_cache": config.timing_cache,
            }
        )
        return json.dumps(plan).encode()


class FakeRuntime:
    def __init__(self, fake: FakeTensorRt) -> None:
        self.fake = fake

    def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
        if self.fake.reject_plans:
            return None
        return FakeEngine(self.fake, json.loads(plan))


class FakeEngine:
    def __init__(self, fake: FakeTensorRt, plan: dict[str, Any]) -> None:
        self.fake = fake
        self.max_batch = int(plan["max_batch"])
        self.tensors: list[tuple[str, tuple[int, ...], str]] = [
            (str(name), tuple(shape), "input") for name, shape in plan["inputs"]
        ]
        self.tensors += [(str(name), tuple(shape), "output") for name, shape in plan["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index][0]

    def _find(self, name: str) -> tuple[str, tuple[int, ...], str]:
        return next(tensor for tensor in self.tensors if tensor[0] == name)

    def get_tensor_mode(self, name: str) -> str:
        return self._find(name)[2]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._find(name)[1]

    def get_tensor_dtype(self, name: str) -> str:
        return "float"

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    """Computes every output value of sample i as mean(input sample i) + output position."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.batch = 0

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.engine.fake.addresses_set.append(name)
        self.addresses[name] = address
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.engine.fake.input_shapes.append(tuple(shape))
        if not 1 <= shape[0] <= self.engine.max_batch:
            return False
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.batch, *self.engine._find(name)[1][1:])

    def execute_async_v3(self, stream: int) -> bool:
        if self.engine.fake.fail_execute:
            return False
        memory = self.engine.fake.cuda.memory
        name, shape, _ = self.engine.tensors[0]
        count = self.batch * int(np.prod(shape[1:]))
        inputs = np.frombuffer(bytes(memory[self.addresses[name]][: count * 4]), np.float32)
        means = inputs.reshape(self.batch, -1).mean(axis=1)
        outputs = [tensor for tensor in self.engine.tensors if tensor[2] == "output"]
        for position, (output, output_shape, _) in enumerate(outputs):
            values = np.empty((self.batch, *output_shape[1:]), dtype=np.float32)
            values[...] = (means + position).reshape(-1, *[1] * (len(output_shape) - 1))
            memory[self.addresses[output]][: values.nbytes] = values.tobytes()
        return True
