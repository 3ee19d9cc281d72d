"""Generate the typed Python stubs under client/ from protos/fitscore/v1/assessment.proto.

The one command that owns stub generation (`make protos` runs it). protoc's virtual include path
(`-Iclient=protos/fitscore/v1`) makes the generated modules import each other as
`from client import ...`, so nothing generated is edited afterwards.

    python scripts/gen_protos.py            # writes client/assessment_pb2*.py(i)
    python scripts/gen_protos.py --out DIR  # writes DIR/client/... (the freshness test uses this)
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "protos" / "fitscore" / "v1" / "assessment.proto"
GENERATED_NAMES = (
    "assessment_pb2.py",
    "assessment_pb2.pyi",
    "assessment_pb2_grpc.py",
    "assessment_pb2_grpc.pyi",
)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc with the Python, gRPC and mypy plugins; return the files written."""
    (out_dir / "client").mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) on PATH; they are
    # installed beside this interpreter.
    scripts_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = scripts_dir + os.pathsep + os.environ.get("PATH", "")
    well_known = resources.files("grpc_tools") / "_proto"
    arguments = [
        "grpc_tools.protoc",
        f"-Iclient={PROTO.parent}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        str(PROTO),
    ]
    status = protoc.main(arguments)
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    return [out_dir / "client" / name for name in GENERATED_NAMES]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repo)")
    arguments = parser.parse_args()
    for path in generate(arguments.out):
        print(path.relative_to(arguments.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
