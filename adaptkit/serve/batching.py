"""Dynamic batching: images of concurrent requests encoded together.

Requests submit preprocessed images (3, H, W); a single worker task takes up to ``max_batch`` of
them and runs the model on the batch in a thread (the event loop stays free). A batch waits for
more images only while requests are on their way (announced with :meth:`Batcher.expecting`, from
the moment they arrive until their images are submitted), and at most ``max_wait_ms`` after its
first image: with nothing on its way it starts at once, so batching costs a lone request nothing.
The queue is bounded: a request whose images do not fit is refused at once (:class:`QueueFull`),
never left waiting without limit.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch


class QueueFull(RuntimeError):
    """The batcher's queue cannot take the request's images now."""


def intra_op_threads() -> int:
    """Threads for the model's torch ops in a server: every core but one, at most torch's default."""
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))


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
        self._incoming = 0
        self._arrival: asyncio.Event | None = None
        # One thread runs the model, always the same one: torch keeps its intra-op thread team per
        # calling thread, and a new caller each batch would pay for a new team. The team leaves one
        # core to the event loop and the decoders: a team as wide as the machine waits at every
        # barrier for a member whose core is busy receiving requests (on 2 cores, one thread
        # serves single requests 2.5x faster than two).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="adaptkit-encode", initializer=torch.set_num_threads,
                                            initargs=(intra_op_threads(),))

    @property
    def depth(self) -> int:
        """Images waiting to be encoded."""
        return self._pending

    @contextmanager
    def expecting(self):
        """Mark a request on its way (being received or decoded) while the block runs: a batch
        waits for its images instead of starting without them."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            if self._arrival is not None:
                self._arrival.set()

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._arrival = asyncio.Event()
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

    def enqueue(self, images: list[torch.Tensor]) -> list[asyncio.Future]:
        """Queue the images; a future of its probabilities (C,) per image, in order. Raises
        :class:`QueueFull` when they do not fit."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        if self._pending + len(images) > self.max_queue:
            raise QueueFull(f"{self._pending} images are waiting (at most {self.max_queue})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        self._pending += len(images)
        for image, future in zip(images, futures):
            self._queue.put_nowait((image, future))
        self._arrival.set()
        return futures

    async def submit(self, images: list[torch.Tensor]) -> list[np.ndarray]:
        """Probabilities (C,) per image, in order; raises :class:`QueueFull` when they do not fit."""
        return list(await asyncio.gather(*self.enqueue(images)))

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            timeout = deadline - time.perf_counter()
            if timeout <= 0 or self._incoming == 0:
                break
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), timeout)
            except asyncio.TimeoutError:
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
