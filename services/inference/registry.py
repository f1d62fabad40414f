"""Loaded models by name, each behind one engine (hf or vllm)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from services.common.errors import InvalidInput, NotFound
from services.common.models import stored_parameters
from services.kv.budget import CacheGeometry

ENGINES = ("hf", "vllm")
MODEL_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_model_name(name: str, field: str = "name") -> None:
    """InvalidInput on field unless name is 1-128 letters, digits and . _ - : (what requests
    use)."""
    if not MODEL_NAME.fullmatch(name):
        raise InvalidInput(
            field, "1-128 letters, digits and . _ - : (no '/', spaces or control characters)"
        )


DTYPES = ("bfloat16", "float16", "float32")
DEFAULT_DTYPE = "bfloat16"  # on CPU and GPU: half the memory of float32, and faster here
VLLM_KV_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")


@dataclass
class LoadedModel:
    name: str
    source: str
    engine: str
    backend: Any  # services.llm Backend
    dtype: str
    adapters: list[str] = field(default_factory=list)

    @cached_property
    def geometry(self) -> CacheGeometry:
        """The KV-cache geometry, from the model's config (no weights needed)."""
        if self.engine == "hf":
            config = self.backend.hf_model.config
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(self.backend.path))
        return CacheGeometry.from_config(config)

    def describe(self) -> dict[str, Any]:
        """parameters, layers, KV heads and head_dim of the model."""
        if self.engine == "hf":
            parameters = sum(p.numel() for p in self.backend.hf_model.parameters())
        else:
            parameters = stored_parameters(self.backend.path)
        return {
            "parameters": parameters,
            "num_layers": self.geometry.num_layers,
            "num_kv_heads": self.geometry.num_kv_heads,
            "head_dim": self.geometry.head_dim,
        }


class ModelRegistry:
    """name -> LoadedModel. Models under models_dir load on first use by folder name."""

    def __init__(
        self,
        models_dir: Path | None = None,
        device: str = "cpu",
        decode_batch: int = 16,
        vllm_kv_cache_bytes: int = 1 << 30,
        max_waiting: int = 64,
    ) -> None:
        self.models_dir = models_dir
        self.device = device
        self.decode_batch = decode_batch
        self.max_waiting = max_waiting
        self.vllm_kv_cache_bytes = vllm_kv_cache_bytes
        self._models: dict[str, LoadedModel] = {}
        self._hf_twins: dict[str, Any] = {}
        self._lock = threading.Lock()

    def load(
        self,
        name: str,
        folder: Path,
        source: str,
        engine: str = "hf",
        dtype: str = DEFAULT_DTYPE,
        kv_cache_dtype: str = "",
        adapters: list[Path] | None = None,
    ) -> LoadedModel:
        """Loads folder (with LoRA adapters merged in, on hf) under name."""
        adapters = adapters or []
        check_model_name(name)
        if engine not in ENGINES:
            raise InvalidInput("engine", f"must be one of {', '.join(ENGINES)}")
        if kv_cache_dtype and (engine != "vllm" or kv_cache_dtype not in VLLM_KV_DTYPES):
            raise InvalidInput("kv_cache_dtype", f"vllm only, one of {', '.join(VLLM_KV_DTYPES)}")
        if dtype not in DTYPES:
            raise InvalidInput("dtype", f"must be one of {', '.join(DTYPES)}")
        if adapters and engine != "hf":
            raise InvalidInput("adapters", "LoRA adapters are merged on the hf engine")
        if engine == "hf":
            from services.llm.hf import HFBackend

            backend: Any = HFBackend(
                folder,
                dtype=dtype,
                device=self.device,
                name=name,
                adapters=adapters,
                decode_batch=self.decode_batch,
                max_waiting=self.max_waiting,
            )
        else:
            from services.llm.vllm_engine import VLLMBackend, VLLMConfig

            config = VLLMConfig(
                dtype=dtype,
                kv_cache_dtype=kv_cache_dtype or "auto",
                kv_cache_memory_bytes=self.vllm_kv_cache_bytes,
            )
            backend = VLLMBackend(folder, config, name=name)
        loaded = LoadedModel(name, source, engine, backend, dtype, [str(a) for a in adapters])
        self.add(loaded)
        return loaded

    def add(self, loaded: LoadedModel) -> None:
        """Serves an already constructed backend under loaded.name."""
        with self._lock:
            self._models[loaded.name] = loaded

    def get(self, name: str) -> LoadedModel:
        check_model_name(name, "model")  # also keeps the name a single, short path part
        with self._lock:
            if name in self._models:
                return self._models[name]
        if self.models_dir and (self.models_dir / name / "config.json").is_file():
            return self.load(name, self.models_dir / name, str(self.models_dir / name))
        raise NotFound(f"model {name!r} is not loaded (LoadModel it first)")

    def hf_backend(self, model: LoadedModel) -> Any:
        """The model's transformers backend; for a vLLM model one is loaded beside it (the
        kiln KV cache runs on transformers)."""
        if model.engine == "hf":
            return model.backend
        with self._lock:
            if model.name not in self._hf_twins:
                from services.llm.hf import HFBackend

                self._hf_twins[model.name] = HFBackend(
                    model.backend.path,
                    dtype=model.dtype,
                    device=self.device,
                    name=model.name,
                    decode_batch=self.decode_batch,
                    max_waiting=self.max_waiting,
                )
            return self._hf_twins[model.name]

    def list(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())
