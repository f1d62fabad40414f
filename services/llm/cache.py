"""Content-addressed response cache and usage accounting around any Backend.

The key is sha256 over (backend fingerprint, rendered prompt, sampling params incl. seed) for
generation and (fingerprint, rendered prompt, continuation) for scoring. Only reproducible
calls (greedy or seeded) are cached. The store is anything with get(key) -> bytes | str | None
and set(key, value): a redis.Redis client shares the cache across workers; MemoryStore keeps
it in the process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from services.llm.base import Backend, Completion, Prompt, SamplingParams, TokenScores, Usage


class KeyValueStore(Protocol):
    def get(self, key: str) -> bytes | str | None: ...

    def set(self, key: str, value: str) -> Any: ...


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value


class ResponseCache:
    PREFIX = "kiln:llmcache:"

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    @staticmethod
    def key(*parts: Any) -> str:
        blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return ResponseCache.PREFIX + hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.store.get(key)
        return json.loads(raw) if raw else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.store.set(key, json.dumps(value))


class CachingBackend:
    """A Backend that answers reproducible calls from the cache, sends the misses to the
    wrapped backend in one batch (identical calls once), and counts calls, cache hits and
    tokens per stage."""

    def __init__(
        self,
        inner: Backend,
        cache: ResponseCache | None = None,
        usage: Usage | None = None,
        stage: str = "default",
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.usage = usage if usage is not None else Usage()
        self.stage = stage
        self.name = inner.name
        self.model = inner.model

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def with_stage(self, stage: str) -> CachingBackend:
        """The same backend, cache and usage, counted under another stage name."""
        return CachingBackend(self.inner, self.cache, self.usage, stage)

    def render(self, prompt: Prompt) -> str:
        return self.inner.render(prompt)

    def _answer(
        self,
        keys: list[str | None],
        kind: type[Completion] | type[TokenScores],
        send: Callable[[list[int]], list[Any]],
        storable: Callable[[Any], bool],
    ) -> tuple[list[Any], list[int]]:
        """Results for every key (cache hits; the misses sent once per distinct key, counted
        against the budget, and stored when storable), and the indices that were sent."""
        results: list[Any] = [None] * len(keys)
        if self.cache is not None:
            for i, key in enumerate(keys):
                hit = self.cache.get(key) if key is not None else None
                if hit is not None:
                    results[i] = kind(**{**hit, "cached": True})
        misses = [i for i, r in enumerate(results) if r is None]
        first, owner = _dedupe(misses, keys)
        if first:
            self.usage.reserve(len(first))
            made = dict(zip(first, send(first), strict=True))
            for i in misses:
                results[i] = made[i] if owner[i] == i else replace(made[owner[i]], cached=True)
            for i, result in made.items():
                if keys[i] is not None and storable(result):
                    self.cache.put(keys[i], {**result.to_dict(), "cached": False})
        return results, first

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        keys: list[str | None] = [None] * len(prompts)
        if self.cache is not None and params.reproducible:
            keys = [
                ResponseCache.key("generate", self.fingerprint, self.render(p), params.to_dict())
                for p in prompts
            ]
        done, sent = self._answer(
            keys,
            Completion,
            lambda idx: self.inner.generate([prompts[i] for i in idx], params),
            lambda completion: completion.finish_reason != "abort",
        )
        self.usage.add(
            self.stage,
            calls=len(sent),
            cached=len(prompts) - len(sent),
            prompt=sum(done[i].prompt_tokens for i in sent),
            completion=sum(len(done[i].token_ids) for i in sent),
        )
        return done

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        keys: list[str | None] = [None] * len(prompts)
        if self.cache is not None:
            keys = [
                ResponseCache.key("score", self.fingerprint, self.render(p), c)
                for p, c in zip(prompts, continuations, strict=True)
            ]
        done, sent = self._answer(
            keys,
            TokenScores,
            lambda idx: self.inner.score(
                [prompts[i] for i in idx], [continuations[i] for i in idx]
            ),
            lambda scores: True,
        )
        self.usage.add(
            self.stage,
            calls=len(sent),
            cached=len(prompts) - len(sent),
            prompt=sum(done[i].prompt_tokens + len(done[i].token_ids) for i in sent),
        )
        return done


def _dedupe(misses: Sequence[int], keys: Sequence[str | None]) -> tuple[list[int], dict[int, int]]:
    """The misses to send to the backend (the first of each cache key; every unkeyed miss)
    and, for each miss, the index whose result answers it: identical reproducible calls in
    one batch cost one backend call."""
    owner_of_key: dict[str, int] = {}
    owner = {i: i if keys[i] is None else owner_of_key.setdefault(keys[i], i) for i in misses}
    return sorted(set(owner.values())), owner
