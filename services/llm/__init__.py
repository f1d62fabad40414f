"""One Backend protocol for every caller that generates or scores text.

Backends: hf (transformers), vllm (the vLLM engine), remote (the kiln inference service),
openai (any OpenAI-compatible endpoint), scripted (deterministic rules, for tests). Wrap any
of them in CachingBackend for the content-addressed response cache and usage accounting.
"""

from services.llm.base import (
    Backend,
    Completion,
    Message,
    Prompt,
    SamplingParams,
    TokenScores,
    Usage,
)
from services.llm.cache import CachingBackend, MemoryStore, ResponseCache
from services.llm.factory import create_backend

__all__ = [
    "Backend",
    "CachingBackend",
    "Completion",
    "MemoryStore",
    "Message",
    "Prompt",
    "ResponseCache",
    "SamplingParams",
    "TokenScores",
    "Usage",
    "create_backend",
]
