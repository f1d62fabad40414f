"""Continuous batching of streaming generations on one transformers model.

Orca ("Orca: A Distributed Serving System for Transformer-Based Generative Models") schedules
at the granularity of iterations: a request joins the running batch as soon as a slot is
free, and leaves it the step it finishes, instead of waiting for the whole batch. Here one
decoder thread per model owns a DecodeBatch: between decoding steps it admits waiting
sequences (each prefilled alone, since its KV compression needs its own prompt's attention)
up to `max_batch`, one prompt chunk between two steps, and runs one step for every live
sequence. Each request keeps its own
method, budget, bits and sampling; tokens are delivered to each request as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from services.common.errors import ResourceExhausted
from services.kv.decoder import DecodeBatch, Sequence

END_OF_STREAM = object()  # delivered after a sequence's last token (or its error)


@dataclass(frozen=True)
class BatchingConfig:
    max_batch: int = 16  # sequences decoded together; more wait for a slot
    max_waiting: int = 64  # sequences waiting for a slot; beyond, submit refuses at once
    prefill_chunk: int = 512  # prompt tokens per prefill forward (an abort waits one chunk)
    idle_exit_s: float = 5.0  # the decoder thread exits after this long with nothing to do


class ContinuousBatcher:
    """Runs every submitted Sequence of one model in a shared, changing decode batch."""

    def __init__(self, model: Any, config: BatchingConfig | None = None) -> None:
        self.config = config or BatchingConfig()
        self.batch = DecodeBatch(model, self.config.prefill_chunk)
        self._waiting: queue.Queue[Sequence] = queue.Queue()
        self._outboxes: dict[int, Callable[[Any], None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.prefilling: Sequence | None = None  # the prompt being prefilled, a chunk a step
        self.largest_batch = 0  # the most sequences one step has decoded

    def submit(self, seq: Sequence, deliver: Callable[[Any], None]) -> None:
        """Queues seq. deliver is called from the decoder thread with each (token, log-prob),
        then with an exception if it failed, then with END_OF_STREAM. Setting seq.abort makes
        it leave the batch at the next step. ResourceExhausted, before anything is queued,
        when every decoding slot is taken and max_waiting sequences already wait (admission
        control: a client backs off instead of timing out in a queue it cannot see)."""
        with self._lock:
            waiting = self._waiting.qsize() + (self.prefilling is not None)
            if waiting + len(self.batch.live) >= self.config.max_batch + self.config.max_waiting:
                raise ResourceExhausted(
                    f"{self.config.max_batch} decoding slots are taken and {waiting} "
                    "generations already wait for this model (KILN_MAX_WAITING_GENERATIONS); "
                    "retry in a few seconds"
                )
            self._outboxes[id(seq)] = deliver
            self._waiting.put(seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._decode, daemon=True)
                self._thread.name = "kiln-decoder"
                self._thread.start()

    def run(self, seq: Sequence) -> Iterator[tuple[int, float]]:
        """Yields seq's (token, log-prob) as the decoder produces them. Closing the iterator
        early aborts seq and returns once the decoder has let go of it (within a step)."""
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.submit(seq, outbox.put)
        item = None
        try:
            while (item := outbox.get()) is not END_OF_STREAM:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if item is not END_OF_STREAM:
                seq.abort.set()
                while item is not END_OF_STREAM:
                    item = outbox.get()

    async def run_async(self, seq: Sequence) -> AsyncIterator[tuple[int, float]]:
        """run() for an asyncio caller: tokens reach its event loop without holding a thread.
        Close it with contextlib.aclosing to stop early."""
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.submit(seq, lambda item: loop.call_soon_threadsafe(outbox.put_nowait, item))
        item = None
        try:
            while (item := await outbox.get()) is not END_OF_STREAM:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if item is not END_OF_STREAM:
                seq.abort.set()
                while item is not END_OF_STREAM:
                    item = await outbox.get()

    def _decode(self) -> None:
        """The decoder thread: one prompt at a time is prefilled, one chunk per iteration,
        and every iteration also runs one decoding step of the live batch, so a long prompt
        delays each running sequence's tokens by a chunk's forward, never by its whole
        prefill (Sarathi-style chunked prefill)."""
        batch = self.batch
        while True:
            if not batch.live and self.prefilling is None:
                try:
                    self._start(self._waiting.get(timeout=self.config.idle_exit_s))
                except queue.Empty:
                    with self._lock:
                        if self._waiting.empty():
                            self._thread = None
                            return
                    continue
            if self.prefilling is None and len(batch.live) < self.config.max_batch:
                with contextlib.suppress(queue.Empty):
                    self._start(self._waiting.get_nowait())
            if self.prefilling is not None:
                self._prefill_chunk(self.prefilling)
            if batch.live:
                self._step()

    def _start(self, seq: Sequence) -> None:
        if seq.abort.is_set():
            self._close(seq)
        else:
            self.prefilling = seq

    def _prefill_chunk(self, seq: Sequence) -> None:
        try:
            event = self.batch.prefill_next(seq)
        except BaseException as exc:
            self.prefilling = None
            self._close(seq, exc)
            return
        if seq.finished or seq.prefilled == len(seq.prompt_ids):
            self.prefilling = None
        if event is not None:
            self._deliver(seq, event[1:])
        if seq.finished:
            self._close(seq)

    def _step(self) -> None:
        batch = self.batch
        live = list(batch.live)
        self.largest_batch = max(self.largest_batch, len(live))
        try:
            events = batch.step()
        except BaseException as exc:  # a failed step fails the sequences in it
            batch.live = []
            for seq in live:
                self._close(seq, exc)
            return
        for seq, *step in events:
            self._deliver(seq, tuple(step))
        for seq in live:
            if seq.finished:
                self._close(seq)

    def _close(self, seq: Sequence, error: BaseException | None = None) -> None:
        seq.finished = True
        if error is not None:
            self._deliver(seq, error)
        self._deliver(seq, END_OF_STREAM)
        self._outboxes.pop(id(seq), None)

    def _deliver(self, seq: Sequence, item: Any) -> None:
        """Hands item to seq's caller; a caller that is gone (its event loop closed) aborts
        seq instead of taking the decoder down."""
        try:
            self._outboxes[id(seq)](item)
        except Exception:
            seq.abort.set()
