"""Loaded models by name, each behind one engine (hf or vllm)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import InvalidInput, NotFound

ENGINES = ("hf", "vllm")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    name: str
    source: str
    engine: str
    backend: Any  # services.llm Backend
    dtype: str
    adapters: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """parameters, layers, KV heads and head_dim of the model's config."""
        config = self.backend.hf_model.config if self.engine == "hf" else None
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(self.backend.path))
        heads = config.num_attention_heads
        parameters = (
            sum(p.numel() for p in self.backend.hf_model.parameters()) if self.engine == "hf" else 0
        )
        return {
            "parameters": parameters,
            "num_layers": config.num_hidden_layers,
            "num_kv_heads": getattr(config, "num_key_value_heads", None) or heads,
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        }


class ModelRegistry:
    """name -> LoadedModel. Models under models_dir load on first use by folder name."""

    def __init__(self, models_dir: Path | None = None, device: str = "cpu") -> None:
        self.models_dir = models_dir
        self.device = device
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def load(
        self, name: str, folder: Path, source: str, engine: str = "hf", dtype: str = "float32"
    ) -> LoadedModel:
        if not name or "/" in name:
            raise InvalidInput("name", "must be non-empty and contain no '/'")
        if engine not in ENGINES:
            raise InvalidInput("engine", f"must be one of {', '.join(ENGINES)}")
        if dtype not in DTYPES:
            raise InvalidInput("dtype", f"must be one of {', '.join(DTYPES)}")
        if engine == "hf":
            from services.llm.hf import HFBackend

            backend: Any = HFBackend(folder, dtype=dtype, device=self.device, name=name)
        else:
            from services.llm.vllm_engine import VLLMBackend, VLLMConfig

            backend = VLLMBackend(folder, VLLMConfig(dtype=dtype), name=name)
        loaded = LoadedModel(name, source, engine, backend, dtype)
        with self._lock:
            self._models[name] = loaded
        return loaded

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            if name in self._models:
                return self._models[name]
        if self.models_dir and (self.models_dir / name / "config.json").is_file():
            return self.load(name, self.models_dir / name, str(self.models_dir / name))
        raise NotFound(f"model {name!r} is not loaded (LoadModel it first)")

    def list(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())
