"""create_backend(kind, model, **options): the one place that picks a Backend class."""

from __future__ import annotations

from typing import Any

from services.common.errors import InvalidInput
from services.llm.base import Backend

KINDS = ("hf", "vllm", "remote", "openai", "scripted")


def create_backend(kind: str, model: str, **options: Any) -> Backend:
    """kind: hf | vllm (model: a local folder), remote (model: a name loaded on the
    inference service; options: target), openai (options: base_url, api_key), scripted
    (options: rules, responder, recordings, scorer)."""
    if kind == "hf":
        from services.llm.hf import HFBackend

        return HFBackend(model, **options)
    if kind == "vllm":
        from services.llm.vllm_engine import VLLMBackend, VLLMConfig

        return VLLMBackend(model, VLLMConfig(**options))
    if kind == "remote":
        from services.llm.remote import RemoteBackend

        return RemoteBackend(model, **options)
    if kind == "openai":
        from services.llm.openai_compat import OpenAIBackend

        if "base_url" not in options:
            raise InvalidInput("backend.base_url", "the openai backend needs base_url")
        return OpenAIBackend(model, **options)
    if kind == "scripted":
        from services.llm.scripted import ScriptedBackend

        return ScriptedBackend(model=model, **options)
    raise InvalidInput("backend", f"unknown backend {kind!r}; one of {', '.join(KINDS)}")
