"""ObjectStore against a real S3 server (nanio, or MinIO when on PATH) on loopback."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from services.common.errors import IntegrityError, InvalidInput, NotFound, Unavailable
from services.common.objectstore import ObjectStore
from services.common.settings import Settings


def test_multipart_round_trip(kiln_env: Settings, tmp_path: Path) -> None:
    store = ObjectStore(kiln_env)
    data = os.urandom(12 * 1024 * 1024 + 123)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    ref = store.put_file("datasets/big/v1/big.bin", source)
    assert ref.size == len(data) and ref.sha256 == hashlib.sha256(data).hexdigest()
    etag = store.client.stat_object(store.bucket, ref.key).etag
    assert "-" in etag, "an object above 5 MiB is uploaded in parts"
    assert store.stat(ref.key) == ref
    out = store.get_file(ref, tmp_path / "copy.bin")
    assert out.read_bytes() == data
    assert store.get_bytes(ref.key) == data


def test_manifest_commit_lists_files_last(kiln_env: Settings, tmp_path: Path) -> None:
    store = ObjectStore(kiln_env)
    prefix = "checkpoints/run1/10"
    refs = [
        store.put_bytes(f"{prefix}/a.txt", b"alpha"),
        store.put_bytes(f"{prefix}/sub/b.txt", b"beta"),
    ]
    assert not store.is_committed(prefix)
    with pytest.raises(NotFound):
        store.read_manifest(prefix)
    store.commit(prefix, refs, {"step": 10})
    manifest = store.read_manifest(prefix)
    assert [f["path"] for f in manifest["files"]] == ["a.txt", "sub/b.txt"]
    assert manifest["files"][0]["sha256"] == hashlib.sha256(b"alpha").hexdigest()
    assert manifest["meta"] == {"step": 10}
    out = store.download_prefix(prefix, tmp_path / "dl")
    assert (out / "sub" / "b.txt").read_bytes() == b"beta"
    assert sorted(store.list_keys(prefix + "/")) == [
        f"{prefix}/MANIFEST.json",
        f"{prefix}/a.txt",
        f"{prefix}/sub/b.txt",
    ]
    with pytest.raises(InvalidInput):
        store.commit(prefix, [store.put_bytes("checkpoints/other/x", b"x")])


def test_remove_prefix_deletes_that_folder_only(kiln_env: Settings) -> None:
    store = ObjectStore(kiln_env)
    for key in ("runs/r1/ranks/spec-1.json", "runs/r1/ranks/rows.jsonl", "runs/r1/MANIFEST.json"):
        store.put_bytes(key, b"x")
    store.put_bytes("runs/r1/ranks-old/keep", b"x")
    assert store.remove_prefix("runs/r1/ranks/") == 2
    assert sorted(store.list_keys("runs/r1/")) == [
        "runs/r1/MANIFEST.json",
        "runs/r1/ranks-old/keep",
    ]
    assert store.remove_prefix("runs/r1/ranks/") == 0


def test_corrupted_object_is_refused(kiln_env: Settings, tmp_path: Path) -> None:
    store = ObjectStore(kiln_env)
    ref = store.put_bytes("datasets/d/v1/data.jsonl", b'{"a": 1}\n')
    tampered = b'{"a": 2}\n'
    store.client.put_object(
        store.bucket, ref.key, io.BytesIO(tampered), len(tampered), metadata={"sha256": ref.sha256}
    )  # same recorded hash, other bytes
    with pytest.raises(IntegrityError):
        store.get_bytes(ref)
    with pytest.raises(IntegrityError):
        store.get_bytes(ref.key)
    with pytest.raises(IntegrityError):
        store.get_file(ref, tmp_path / "data.jsonl")
    assert not (tmp_path / "data.jsonl").exists()


def test_endpoint_down_is_unavailable(tmp_path: Path) -> None:
    from services.cli.embedded import free_port

    settings = Settings(s3_endpoint=f"127.0.0.1:{free_port()}", s3_retries=2)
    store = ObjectStore(settings)
    store.client._http.connection_pool_kw["retries"] = 0  # count our retries only
    with pytest.raises(Unavailable, match="unreachable after 2 attempts"):
        store.put_bytes("runs/x/y", b"data")
