"""Checkpoints in the object store: `checkpoints/<run>/<step>/`, committed by manifest.

A checkpoint holds the PEFT adapter (adapter_config.json, adapter_model.safetensors, whose
base_model_name_or_path is the base's source: a folder or checkpoints/<run>/<step>), the
trainer state (trainer_state.json, optimizer.pt) for resuming, and with `merge` a full model
with the adapter merged under merged/ (its own committed prefix). The inference service
loads checkpoints/<run>/<step> (adapter + base) or checkpoints/<run>/<step>/merged.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.common.errors import NotFound
from services.common.objectstore import MANIFEST, ObjectRef, ObjectStore, validate_name


def checkpoint_prefix(run_name: str, step: int) -> str:
    return f"checkpoints/{run_name}/{step}"


@dataclass(frozen=True)
class CheckpointInfo:
    run_name: str
    step: int
    prefix: str
    manifest: ObjectRef
    meta: dict[str, Any]


def list_checkpoints(store: ObjectStore, run_name: str) -> list[CheckpointInfo]:
    """The committed checkpoints of a run, by step."""
    found = []
    for sub in store.list_prefixes(f"checkpoints/{validate_name(run_name, 'run_name')}/"):
        prefix = sub.rstrip("/")
        step = prefix.rsplit("/", 1)[-1]
        if not step.isdigit():
            continue
        try:
            manifest = store.stat(f"{prefix}/{MANIFEST}")
        except NotFound:  # not committed (yet)
            continue
        meta = store.get_json(manifest).get("meta", {})
        found.append(CheckpointInfo(run_name, int(step), prefix, manifest, meta))
    return sorted(found, key=lambda c: c.step)


def save_checkpoint(
    store: ObjectStore,
    run_name: str,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    merge: bool = False,
    weights: dict[str, torch.Tensor] | None = None,
) -> CheckpointInfo:
    """Uploads adapter + state (and merged weights), then commits the manifest last.
    weights: the model's trainable state when the model cannot give it itself (FSDP
    shards: gathered by the caller)."""
    step = int(trainer_state["step"])
    prefix = checkpoint_prefix(run_name, step)
    with tempfile.TemporaryDirectory(prefix="kiln-ckpt-") as tmp:
        adapter, merged = Path(tmp) / "adapter", Path(tmp) / "merged"
        model.save_pretrained(adapter, **({"state_dict": weights} if weights else {}))
        torch.save(trainer_state["optimizer"], adapter / "optimizer.pt")
        (adapter / "trainer_state.json").write_text(
            json.dumps({k: v for k, v in trainer_state.items() if k != "optimizer"}, indent=1)
        )
        refs = store.put_folder(prefix, adapter)
        if merge:
            full = model.merge_and_unload(safe_merge=True)
            full.save_pretrained(merged)
            tokenizer.save_pretrained(merged)
            merged_refs = store.put_folder(f"{prefix}/merged", merged)
            store.commit(f"{prefix}/merged", merged_refs, {**meta, "merged": True})
            refs += merged_refs
    meta = {**meta, "step": step, "merged_weights": merge}
    manifest = store.commit(prefix, refs, meta)
    return CheckpointInfo(run_name, step, prefix, manifest, meta)


def restore_checkpoint(store: ObjectStore, prefix: str, model: Any, cache_dir: Path) -> dict:
    """Loads the adapter weights into model; returns the trainer state (optimizer included)."""
    return load_checkpoint_folder(store.download_prefix(prefix, cache_dir / prefix), model)


def load_checkpoint_folder(folder: Path, model: Any) -> dict:
    """restore_checkpoint from a checkpoint already downloaded to folder."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    state = json.loads((folder / "trainer_state.json").read_text())
    state["optimizer"] = torch.load(folder / "optimizer.pt", weights_only=True)
    return state
