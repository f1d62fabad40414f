"""Process glue for services that call models: the backend a request names (remote, openai,
vllm, hf) and the shared response cache (Redis, so that every server and worker answers a
repeated call for free)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from services.common.errors import InvalidInput
from services.common.settings import Settings
from services.llm.base import Backend
from services.llm.cache import ResponseCache


@cache
def _local_backend(kind: str, source: str, field: str) -> Backend:
    """One local engine per (kind, model source) and process: loading is the expensive part."""
    from services.common.models import resolve_model
    from services.llm.factory import create_backend

    resolved = resolve_model(source, [], field)
    if resolved.adapters:
        raise InvalidInput(
            field, "a local model must be a full model folder (merge adapters first)"
        )
    return create_backend(kind, str(resolved.base))


def backend_factory(
    settings: Settings, kind: str, where: str = "config."
) -> Callable[[str], Backend]:
    """model name -> Backend: remote (a model loaded on the inference service), openai (the
    configured endpoint), vllm or hf (a model folder or committed checkpoint on this host).
    Errors name the request's fields as f"{where}model" and f"{where}backend"."""

    def create(model: str) -> Backend:
        from services.llm.factory import create_backend

        if kind == "remote":
            return create_backend(
                "remote", model, target=settings.target("inference"), settings=settings
            )
        if kind == "openai":
            if not settings.openai_base_url:
                raise InvalidInput(f"{where}backend", "openai needs KILN_OPENAI_BASE_URL")
            return create_backend(
                "openai",
                model,
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key,
            )
        return _local_backend(kind, model, f"{where}model")

    return create


def response_cache(settings: Settings) -> ResponseCache:
    from services.common.jobs import redis_client

    return ResponseCache(redis_client(settings))
