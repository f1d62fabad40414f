"""Model sources: a local folder, or a committed checkpoint prefix in the object store."""

from __future__ import annotations

from pathlib import Path

from services.common.errors import InvalidInput, NotFound
from services.common.objectstore import ObjectStore, validate_key
from services.common.settings import Settings, get_settings


def check_model_folder(path: Path, field: str) -> Path:
    if not (path / "config.json").is_file():
        raise InvalidInput(field, f"{path} is not a model folder (no config.json)")
    return path


def resolve_local(path: str, field: str = "local_path") -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InvalidInput(field, f"{path} is not a folder on the server")
    return check_model_folder(folder, field)


def fetch_checkpoint(
    prefix: str,
    store: ObjectStore | None = None,
    settings: Settings | None = None,
    field: str = "checkpoint",
) -> Path:
    """Downloads a committed checkpoint (every manifested file, sha256-verified) to the cache."""
    settings = settings or get_settings()
    prefix = validate_key(prefix.strip("/"), field)
    if not prefix.startswith("checkpoints/"):
        raise InvalidInput(field, "must be an object-store prefix checkpoints/<run>/<step>")
    store = store or ObjectStore(settings)
    if not store.is_committed(prefix):
        raise NotFound(f"checkpoint {prefix} has no manifest (missing or not committed)")
    dest = settings.effective_cache_dir / prefix
    store.download_prefix(prefix, dest)
    return check_model_folder(dest, field)
