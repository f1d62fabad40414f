"""Generates the checked-in Python stubs from protos/ with grpcio-tools.

Run `python -m services.protogen` after editing a .proto; tests/contract/test_stubs.py
regenerates into a temporary folder and fails on any difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(root.glob("kiln/*/v1/*.proto"))


def generate(out_dir: Path, root: Path = PROTO_ROOT) -> None:
    """Writes *_pb2.py, *_pb2_grpc.py and *.pyi for every kiln proto under out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(root)) for p in proto_files(root)]
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
