"""The one object-store client: the `minio` SDK with content hashes and manifests.

Every object carries its sha256 in metadata; downloads are verified against the ObjectRef
(or that metadata). A dataset, checkpoint or run is committed by writing `MANIFEST.json`
under its prefix last: readers trust only objects listed in a manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from services.common.errors import IntegrityError, InvalidInput, NotFound, Unavailable
from services.common.settings import Settings, get_settings

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
SHA_META = "sha256"  # stored as x-amz-meta-sha256
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9._=+\-]+(/[A-Za-z0-9._=+\-]+)*$")
_CHUNK = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectRef:
        return cls(str(data["bucket"]), str(data["key"]), str(data["sha256"]), int(data["size"]))


def validate_name(name: str, field: str) -> str:
    """A run or dataset name: one key segment of 1-63 lowercase letters, digits, . _ -."""
    if not _NAME_RE.match(name):
        raise InvalidInput(
            field, "1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter/digit"
        )
    return name


def validate_key(key: str, field: str = "key") -> str:
    """Returns key if it is a safe relative object key; InvalidInput otherwise.

    Refused: empty, absolute, `.`/`..` segments, empty segments, backslashes, control or
    other characters outside [A-Za-z0-9._=+-/], longer than 1024 bytes.
    """
    if not key or len(key.encode()) > 1024:
        raise InvalidInput(field, "object key must be 1..1024 bytes")
    if not _KEY_RE.fullmatch(key):
        raise InvalidInput(
            field, f"object key {key!r} has a character or empty segment outside [A-Za-z0-9._=+-/]"
        )
    if any(part in (".", "..") for part in key.split("/")):
        raise InvalidInput(field, f"object key {key!r} may not contain '.' or '..' segments")
    return key


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _http_client() -> Any:
    """MinIO's default pool, except that refused connections are not retried inside urllib3
    (5 times with backoff, per call): `_call` owns the retries, so an endpoint that is down
    becomes UNAVAILABLE after KILN_S3_RETRIES attempts, not that many times five."""
    import certifi
    import urllib3

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=300),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=5, connect=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )


class ObjectStore:
    """Bucket-scoped access to S3/MinIO with sha256 on every object."""

    def __init__(self, settings: Settings | None = None, client: Any = None) -> None:
        from minio import Minio

        self.settings = settings or get_settings()
        self.bucket = self.settings.bucket
        self.client = client or Minio(
            self.settings.s3_endpoint,
            access_key=self.settings.s3_access_key,
            secret_key=self.settings.s3_secret_key,
            secure=self.settings.s3_secure,
            region=self.settings.s3_region,
            http_client=_http_client(),
        )

    # -- retry wrapper -------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Runs fn, retrying connection failures with exponential backoff, then Unavailable."""
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError as Urllib3Error

        attempts = max(1, self.settings.s3_retries)
        for attempt in range(attempts):
            try:
                return fn()
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                    raise NotFound(f"{what}: {exc.code}") from exc
                raise
            except (Urllib3Error, OSError) as exc:
                if attempt == attempts - 1:
                    raise Unavailable(
                        f"object store at {self.settings.s3_endpoint} unreachable "
                        f"after {attempts} attempts ({what}): {exc.__class__.__name__}"
                    ) from exc
                delay = 0.2 * 2**attempt
                log.warning("object store %s failed (%s); retry in %.1fs", what, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def ensure_bucket(self) -> None:
        if not self._call("bucket_exists", lambda: self.client.bucket_exists(self.bucket)):
            self._call("make_bucket", lambda: self.client.make_bucket(self.bucket))

    # -- write -----------------------------------------------------------------------------
    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> ObjectRef:
        validate_key(key)
        sha = hashlib.sha256(data).hexdigest()
        self._call(
            f"put {key}",
            lambda: self.client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata={SHA_META: sha},
            ),
        )
        return ObjectRef(self.bucket, key, sha, len(data))

    def put_json(self, key: str, value: Any) -> ObjectRef:
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return self.put_bytes(key, data, "application/json")

    def put_file(self, key: str, path: Path) -> ObjectRef:
        """Uploads a file (multipart above 5 MiB) with its sha256 computed first."""
        validate_key(key)
        path = Path(path)
        sha = _sha256_file(path)
        self._call(
            f"put {key}",
            lambda: self.client.fput_object(self.bucket, key, str(path), metadata={SHA_META: sha}),
        )
        return ObjectRef(self.bucket, key, sha, path.stat().st_size)

    # -- read ------------------------------------------------------------------------------
    def stat(self, key: str) -> ObjectRef:
        validate_key(key)
        info = self._call(f"stat {key}", lambda: self.client.stat_object(self.bucket, key))
        meta = {k.lower(): v for k, v in (info.metadata or {}).items()}
        sha = meta.get(f"x-amz-meta-{SHA_META}", "")
        return ObjectRef(self.bucket, key, sha, int(info.size))

    def input(self, ref: ObjectRef, field: str, max_bytes: int, limit: str) -> ObjectRef:
        """A job's input object, checked at submit: in this bucket (an empty bucket means this
        one), stored, at most max_bytes (the setting named `limit`), and with the sha256 ref
        gives, if any; InvalidInput on `field` otherwise. Returns the stored object's ref."""
        if ref.bucket and ref.bucket != self.bucket:
            raise InvalidInput(
                f"{field}.bucket", f"{ref.bucket!r} is not this store's {self.bucket!r}"
            )
        key = validate_key(ref.key, f"{field}.key")
        try:
            stored = self.stat(key)
        except NotFound:
            raise InvalidInput(field, f"no object at {key!r}") from None
        if stored.size > max_bytes:
            raise InvalidInput(
                field,
                f"{key!r} is {stored.size:,} bytes, over the limit of {max_bytes:,} ({limit})",
            )
        if ref.sha256 and ref.sha256 != stored.sha256:
            raise InvalidInput(
                f"{field}.sha256",
                f"{ref.sha256[:12]} is not the stored object's {stored.sha256[:12] or '(none)'}",
            )
        return stored

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def _expected(self, ref: ObjectRef | str) -> ObjectRef:
        if isinstance(ref, str):
            return self.stat(ref)
        if ref.bucket != self.bucket:
            raise InvalidInput("bucket", f"{ref.bucket!r} is not this store's {self.bucket!r}")
        validate_key(ref.key)
        return ref

    def get_bytes(self, ref: ObjectRef | str) -> bytes:
        """Downloads and verifies sha256 against ref (or the object's stored sha256)."""
        expected = self._expected(ref)

        def fetch() -> bytes:
            resp = self.client.get_object(self.bucket, expected.key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        data = self._call(f"get {expected.key}", fetch)
        actual = hashlib.sha256(data).hexdigest()
        if not expected.sha256 or actual != expected.sha256:
            raise IntegrityError(
                f"{expected.key}: sha256 {actual[:12]} does not match recorded "
                f"{expected.sha256[:12] or '(none)'}; refusing the object"
            )
        return data

    def get_json(self, ref: ObjectRef | str) -> Any:
        return json.loads(self.get_bytes(ref))

    def get_jsonl(self, ref: ObjectRef | str) -> list[Any]:
        """The rows put_jsonl wrote."""
        return [json.loads(line) for line in self.get_bytes(ref).splitlines() if line.strip()]

    def get_file(self, ref: ObjectRef | str, dest: Path) -> Path:
        """Downloads to dest atomically (temp file + rename) after verifying sha256."""
        expected = self._expected(ref)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        self._call(
            f"get {expected.key}",
            lambda: self.client.fget_object(self.bucket, expected.key, str(tmp)),
        )
        actual = _sha256_file(tmp)
        if not expected.sha256 or actual != expected.sha256:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{expected.key}: sha256 mismatch; refusing the object")
        tmp.replace(dest)
        return dest

    def list_keys(self, prefix: str) -> Iterator[str]:
        validate_key(prefix.rstrip("/"), "prefix")
        objects = self._call(
            f"list {prefix}",
            lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True)),
        )
        for obj in objects:
            yield obj.object_name

    def list_prefixes(self, prefix: str) -> list[str]:
        """Immediate child folders of prefix (ending with '/')."""
        validate_key(prefix.rstrip("/"), "prefix")
        objects = self._call(
            f"list {prefix}",
            lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=False)),
        )
        return [o.object_name for o in objects if o.is_dir]

    def remove_prefix(self, prefix: str) -> int:
        """Deletes every object under prefix (a folder, ending with '/'); returns how many."""
        from minio.deleteobjects import DeleteObject

        keys = list(self.list_keys(prefix))
        failures = self._call(
            f"remove {prefix}",
            lambda: list(
                self.client.remove_objects(self.bucket, [DeleteObject(key) for key in keys])
            ),
        )
        if failures:
            raise Unavailable(f"remove {prefix}: {failures[0].message} ({len(failures)} objects)")
        return len(keys)

    # -- manifests -------------------------------------------------------------------------
    def put_jsonl(self, key: str, rows: Iterable[Any]) -> ObjectRef:
        data = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
        return self.put_bytes(key, data, "application/x-ndjson")

    def commit_files(
        self, prefix: str, files: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> list[ObjectRef]:
        """Writes prefix/<name> for each file (a list: JSON Lines rows; bytes: as they are;
        anything else: JSON), then the manifest; returns [manifest, *files]."""
        refs = []
        for name, value in files.items():
            key = f"{prefix}/{name}"
            if isinstance(value, list):
                refs.append(self.put_jsonl(key, value))
            elif isinstance(value, bytes):
                refs.append(self.put_bytes(key, value))
            else:
                refs.append(self.put_json(key, value))
        return [self.commit(prefix, refs, meta), *refs]

    def commit(
        self, prefix: str, files: Iterable[ObjectRef], meta: dict[str, Any] | None = None
    ) -> ObjectRef:
        """Writes prefix/MANIFEST.json listing files (each must lie under prefix), last."""
        prefix = validate_key(prefix.rstrip("/"), "prefix")
        entries = []
        for ref in files:
            if not ref.key.startswith(prefix + "/"):
                raise InvalidInput("files", f"{ref.key} is not under {prefix}/")
            entries.append(
                {"path": ref.key[len(prefix) + 1 :], "sha256": ref.sha256, "size": ref.size}
            )
        manifest = {
            "prefix": prefix,
            "files": sorted(entries, key=lambda e: e["path"]),
            "meta": meta or {},
            "committed_at": time.time(),
        }
        return self.put_json(f"{prefix}/{MANIFEST}", manifest)

    def read_manifest(self, prefix: str) -> dict[str, Any]:
        """The manifest of a committed prefix; NotFound if it was never committed."""
        prefix = validate_key(prefix.rstrip("/"), "prefix")
        return self.get_json(f"{prefix}/{MANIFEST}")

    def is_committed(self, prefix: str) -> bool:
        return self.exists(f"{validate_key(prefix.rstrip('/'), 'prefix')}/{MANIFEST}")

    def manifest_refs(self, prefix: str) -> dict[str, ObjectRef]:
        """path -> ObjectRef for every file of a committed prefix."""
        manifest = self.read_manifest(prefix)
        base = manifest["prefix"]
        return {
            e["path"]: ObjectRef(self.bucket, f"{base}/{e['path']}", e["sha256"], e["size"])
            for e in manifest["files"]
        }

    def download_prefix(self, prefix: str, dest: Path) -> Path:
        """Downloads every manifested file of prefix under dest, verified; returns dest."""
        dest = Path(dest)
        for path, ref in self.manifest_refs(prefix).items():
            target = dest / path
            if target.exists() and _sha256_file(target) == ref.sha256:
                continue
            self.get_file(ref, target)
        return dest

    def put_folder(self, prefix: str, folder: Path) -> list[ObjectRef]:
        """Uploads every file under folder to prefix/... (uncommitted)."""
        prefix = validate_key(prefix.rstrip("/"), "prefix")
        folder = Path(folder)
        return [
            self.put_file(f"{prefix}/{p.relative_to(folder).as_posix()}", p)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]

    def upload_folder(
        self, prefix: str, folder: Path, meta: dict[str, Any] | None = None
    ) -> ObjectRef:
        """Uploads every file under folder to prefix/..., then commits the manifest."""
        return self.commit(prefix, self.put_folder(prefix, folder), meta)
