"""The contract: stubs match the .proto, every RPC is implemented, request fields documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.service import AssessmentService

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "protos" / "fitscore" / "v1" / "assessment.proto"


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(path.name for path in (tmp_path / "client").iterdir())
    assert generated == [
        "assessment_pb2.py",
        "assessment_pb2.pyi",
        "assessment_pb2_grpc.py",
        "assessment_pb2_grpc.pyi",
    ]
    for name in generated:
        fresh = (tmp_path / "client" / name).read_text(encoding="utf-8")
        committed = (ROOT / "client" / name).read_text(encoding="utf-8")
        assert fresh == committed, f"client/{name} is stale: run `make protos` and commit"


def test_every_rpc_has_a_server_implementation() -> None:
    service = pb.DESCRIPTOR.services_by_name["AssessmentService"]
    names = [method.name for method in service.methods]
    assert {"StartAssessment", "StreamEvents", "Stop"} <= set(names)
    for name in names:
        implementation = getattr(AssessmentService, name)
        generated_default = getattr(pb_grpc.AssessmentServiceServicer, name)
        assert implementation is not generated_default, f"{name} has no implementation"


def test_user_rpc_shapes() -> None:
    methods = pb.DESCRIPTOR.services_by_name["AssessmentService"].methods_by_name
    assert methods["StreamEvents"].server_streaming
    assert not methods["StartAssessment"].server_streaming
    for method in methods.values():
        # Each RPC has its own request and response message.
        assert method.input_type.name == f"{method.name}Request"
        if not method.server_streaming:
            assert method.output_type.name == f"{method.name}Response"


@pytest.mark.parametrize("enum", pb.DESCRIPTOR.enum_types_by_name.values(), ids=lambda e: e.name)
def test_enums_are_prefixed_with_unspecified_zero(enum: object) -> None:
    descriptor = enum
    name = descriptor.name  # type: ignore[attr-defined]
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"
    values = descriptor.values  # type: ignore[attr-defined]
    assert values[0].name == prefix + "UNSPECIFIED"
    assert values[0].number == 0
    assert all(value.name.startswith(prefix) for value in values)


def test_every_field_of_the_requests_is_documented() -> None:
    """Each request field is preceded by a comment in the .proto (units, default, status code)."""
    text = PROTO.read_text(encoding="utf-8")
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        if not message.name.endswith("Request"):
            continue
        body = re.search(rf"message {message.name} \{{(.*?)\n\}}", text, re.S)
        assert body is not None
        lines = body.group(1).splitlines()
        for field in message.fields:
            index = next(
                i for i, line in enumerate(lines) if re.search(rf"\b{field.name} = ", line)
            )
            assert lines[index - 1].strip().startswith("//") or "//" in lines[index], (
                f"{message.name}.{field.name} has no comment"
            )
