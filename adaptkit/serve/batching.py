"""Dynamic batching: images of concurrent requests encoded together.

Requests submit preprocessed images (3, H, W); a single worker task takes up to ``max_batch`` of
them, waiting at most ``max_wait_ms`` after the first for the batch to fill, and runs the model on
the batch in a thread (the event loop stays free). The queue is bounded: a request whose images do
not fit is refused at once (:class:`QueueFull`), never left waiting without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


class QueueFull(RuntimeError):
    """The batcher's queue cannot take the request's images now."""


class Batcher:
    """Batches calls of ``infer`` (a (B, 3, H, W) tensor -> (B, C) probabilities function).

    ``observe_batch(size, seconds)`` is called after each batch (metrics)."""

    def __init__(self, infer: Callable[[torch.Tensor], np.ndarray], max_batch: int, max_wait_ms: float,
                 max_queue: int, observe_batch: Callable[[int, float], None] = lambda size, seconds: None):
        self.infer, self.max_batch, self.max_wait = infer, max_batch, max_wait_ms / 1000.0
        self.max_queue, self.observe_batch = max_queue, observe_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._pending = 0
        # One thread runs the model, always the same one: torch keeps its intra-op thread team per
        # calling thread, and a new caller each batch would pay for a new team.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="adaptkit-encode")

    @property
    def depth(self) -> int:
        """Images waiting to be encoded."""
        return self._pending

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self._executor.shutdown(wait=False)

    async def submit(self, images: list[torch.Tensor]) -> list[np.ndarray]:
        """Probabilities (C,) per image, in order; raises :class:`QueueFull` when they do not fit."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        if self._pending + len(images) > self.max_queue:
            raise QueueFull(f"{self._pending} images are waiting (at most {self.max_queue})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        self._pending += len(images)
        for image, future in zip(images, futures):
            self._queue.put_nowait((image, future))
        return list(await asyncio.gather(*futures))

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - time.perf_counter()
            if timeout <= 0 and self._queue.empty():
                break
            try:
                batch.append(self._queue.get_nowait() if timeout <= 0 else
                             await asyncio.wait_for(self._queue.get(), timeout))
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            self._pending -= len(batch)
            live = [(image, future) for image, future in batch if not future.cancelled()]
            if not live:
                continue
            start = time.perf_counter()
            try:
                pixels = torch.stack([image for image, _ in live])
                probabilities = await asyncio.get_running_loop().run_in_executor(self._executor, self.infer, pixels)
            except Exception as err:  # a failed batch fails its requests, never the worker
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.observe_batch(len(live), time.perf_counter() - start)
            for (_, future), row in zip(live, probabilities):
                if not future.done():
                    future.set_result(row)
