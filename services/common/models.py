"""Model sources: a local folder, or a committed checkpoint prefix in the object store; a
folder holds a full model (config.json) or a PEFT LoRA adapter (adapter_config.json)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import InvalidInput, NotFound
from services.common.objectstore import ObjectStore, validate_key
from services.common.settings import Settings, get_settings


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
    return dest


def fetch_source(source: str, field: str, settings: Settings | None = None) -> Path:
    """A local folder as is, or checkpoints/<run>/<step> downloaded from the object store."""
    if source.startswith("checkpoints/"):
        return fetch_checkpoint(source, settings=settings, field=field)
    try:
        folder = Path(source).expanduser()
        is_folder = folder.is_dir()
    except (OSError, ValueError, RuntimeError) as exc:  # too long, a NUL byte, unknown ~user
        raise InvalidInput(field, f"not a usable path: {exc.__class__.__name__}") from exc
    if not is_folder:
        raise InvalidInput(field, f"{source[:200]} is not a folder on the server")
    if not any((folder / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise InvalidInput(
            field, f"{source[:200]} is not a model folder (no config.json or adapter_config.json)"
        )
    return folder


def stored_parameters(folder: Path) -> int:
    """Parameters in a model folder's safetensors files, read from their headers (no weights
    loaded; a tied embedding is stored, and counted, once)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = weights.get_slice(name).get_shape()
                total += math.prod(shape)
    return total


def is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


@dataclass
class ResolvedModel:
    base: Path  # a folder with config.json
    adapters: list[Path] = field(default_factory=list)  # PEFT adapter folders, in order


def resolve_model(
    source: str, adapters: list[str], field: str, settings: Settings | None = None
) -> ResolvedModel:
    """The base folder and the adapters to merge into it (an adapter source brings its base
    from adapter_config.json's base_model_name_or_path)."""
    folder = fetch_source(source, field, settings)
    resolved = ResolvedModel(folder)
    if is_adapter(folder):
        base = (
            json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
            or ""
        )
        resolved = ResolvedModel(
            fetch_source(base, f"{field}: base_model_name_or_path", settings), [folder]
        )
    if not (resolved.base / "config.json").is_file():
        raise InvalidInput(field, f"{source} is not a model folder (no config.json)")
    for i, adapter in enumerate(adapters):
        path = fetch_source(adapter, f"adapters[{i}]", settings)
        if not is_adapter(path):
            raise InvalidInput(
                f"adapters[{i}]", f"{adapter} is not a PEFT adapter folder (no adapter_config.json)"
            )
        resolved.adapters.append(path)
    return resolved
