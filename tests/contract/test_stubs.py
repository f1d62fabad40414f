"""The checked-in stubs are exactly what grpcio-tools generates from the protos."""

from __future__ import annotations

import filecmp
from pathlib import Path

from services.protogen import PROTO_ROOT, generate, proto_files


def test_generated_stubs_match_checked_in(tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(generated) == 3 * len(proto_files()) == 18
    for rel in generated:
        checked_in = PROTO_ROOT / rel
        assert checked_in.exists(), f"{rel} is generated but not checked in"
        assert filecmp.cmp(tmp_path / rel, checked_in, shallow=False), (
            f"{rel} differs from grpcio-tools output: run `python -m services.protogen`"
        )
