"""Process glue of the judge: the backends a JudgeSpec names, and the shared response cache
(Redis, so that every judge server and worker answers a repeated call for free)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from services.common.errors import InvalidInput
from services.common.settings import Settings
from services.llm.base import Backend
from services.llm.cache import ResponseCache


@cache
def _local_backend(kind: str, source: str) -> Backend:
    """One local engine per (kind, model source) and process: loading is the expensive part."""
    from services.common.models import resolve_model
    from services.llm.factory import create_backend

    resolved = resolve_model(source, [], "config.model")
    if resolved.adapters:
        raise InvalidInput(
            "config.model", "a local judge must be a full model folder (merge adapters first)"
        )
    return create_backend(kind, str(resolved.base))


def backend_factory(settings: Settings, kind: str) -> Callable[[str], Backend]:
    """model name -> Backend: remote (a model loaded on the inference service), openai (the
    configured endpoint), vllm or hf (a model folder or committed checkpoint on this host)."""

    def create(model: str) -> Backend:
        from services.llm.factory import create_backend

        if kind == "remote":
            return create_backend("remote", model, target=settings.target("inference"))
        if kind == "openai":
            if not settings.openai_base_url:
                raise InvalidInput("config.backend", "openai needs KILN_OPENAI_BASE_URL")
            return create_backend(
                "openai",
                model,
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key,
            )
        return _local_backend(kind, model)

    return create


def response_cache(settings: Settings) -> ResponseCache:
    from services.common.jobs import redis_client

    return ResponseCache(redis_client(settings))
