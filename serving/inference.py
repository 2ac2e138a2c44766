"""One inference path: requests batched across callers, then one session call per model.

Every request for a model goes through its ``Batcher``: the caller's features are queued and a
lane thread scores whatever is queued in one call (a re-ranker: LightGBM over all the batch's
rows, then the Transformer over the padded lists). The window adapts: a lane waits for more
only while other requests are being featurised for the same model (``announce``), so a lone
request (concurrency 1) is scored at once and pays no window. Such a request is scored on its
caller's own thread, which saves two thread wake-ups: 0.37 ms a call in a tight loop (the demo's
re-ranker, 100 candidates, two cores), 0.06-0.09 ms of the server's median infer stage
(concurrency 1, requests alternated with the previous build's server).

Lanes: on CUDA one (one session per process, one stream: every request thread feeds it; each
worker process holds its own session on the shared GPU). On the CPU one per core this worker
may use, so concurrent batches still use every core.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import onnxruntime as ort

T = TypeVar("T")


class OnnxRunner:
    """A session whose first output comes back as numpy.

    On CUDA the inputs and the output are bound with IO binding: inputs are copied to the
    device once, the output is allocated there by ONNX Runtime and copied back once (plain
    ``run`` stages every tensor through extra host buffers). The CPU runs the same binding code
    with host memory, so the path the GPU takes is the path the tests take.
    """

    def __init__(self, sess: ort.InferenceSession):
        self.sess = sess
        self.where = "cuda" if "CUDAExecutionProvider" in sess.get_providers() else "cpu"
        self.output = sess.get_outputs()[0].name
        self.inputs = [i.name for i in sess.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        binding = self.sess.io_binding()
        for name in self.inputs:
            binding.bind_cpu_input(name, np.ascontiguousarray(feeds[name]))
        binding.bind_output(self.output, self.where)
        self.sess.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])


@dataclass
class _Job(Generic[T]):
    item: T
    future: Future[np.ndarray] = field(default_factory=Future)


class Ticket:
    """A request on its way to a batcher (being featurised); see ``Batcher.announce``."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class Batcher(Generic[T]):
    """Queues callers' items and scores them in batches of at most ``max_batch``.

    A lane takes every queued item at once (up to ``max_batch`` items and ``max_rows`` rows);
    it waits up to ``window_ms`` for more only while announced requests have yet to arrive. A
    caller that finds nothing queued, nothing else announced and a lane's worth of room scores
    its item itself (``inline``); lanes and such callers together run at most ``lanes`` calls at
    once. After ``close`` callers score directly, and items still queued are scored by
    ``close`` itself: nobody waits on a closed batcher (a reload once closed a batcher under
    requests in flight and they hung).
    """

    def __init__(
        self,
        score_many: Callable[[Sequence[T]], list[np.ndarray]],
        window_ms: float,
        max_batch: int,
        lanes: int = 1,
        size: Callable[[T], int] = lambda _: 1,
        max_rows: int = 1 << 62,
    ):
        self.score_many = score_many
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        # Rows (candidates) per batch at most: 64 lists of 1,000 candidates in one call would
        # need gigabytes for the list attention; one list alone may exceed it.
        self.size, self.max_rows = size, max_rows
        self._queue: collections.deque[_Job[T]] = collections.deque()
        self._cv = threading.Condition()
        self._coming = 0  # announced requests not yet queued
        self._closed = False
        self._room = max(1, lanes)  # session calls at once, lanes' and inline callers' alike
        self._busy = 0
        self.batches = 0
        self.items = 0
        self.inline = 0  # items their callers scored themselves
        self._lanes = [
            threading.Thread(target=self._loop, name=f"batcher-{k}", daemon=True)
            for k in range(max(1, lanes))
        ]
        for t in self._lanes:
            t.start()

    # ---- callers ---------------------------------------------------------------------------
    def announce(self) -> Ticket:
        """Say a request for this model is being featurised: lanes may wait for it."""
        with self._cv:
            self._coming += 1
        return Ticket()

    def withdraw(self, ticket: Ticket) -> None:
        """The announced request will not come (it failed, or it was scored): idempotent."""
        with self._cv:
            if ticket.open:
                ticket.open = False
                self._coming -= 1
                self._cv.notify_all()

    def score(self, item: T, ticket: Ticket | None = None) -> np.ndarray:
        if self._closed:
            if ticket is not None:
                self.withdraw(ticket)
            return self.score_many([item])[0]
        job = _Job(item)
        with self._cv:
            if ticket is not None and ticket.open:
                ticket.open = False
                self._coming -= 1
            alone = not self._queue and self._coming == 0 and self._busy < self._room
            if alone:
                self._busy += 1
            else:
                self._queue.append(job)
                self._cv.notify_all()
        if not alone:
            return job.future.result()
        try:
            scores = self.score_many([item])[0]
        finally:
            with self._cv:
                self._busy -= 1
                self._cv.notify_all()  # a lane may now have room
        with self._cv:
            self.batches += 1
            self.items += 1
            self.inline += 1
        return scores

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._lanes:
            t.join(timeout=5)
        while True:  # whatever a lane did not take
            with self._cv:
                jobs = list(self._queue)
                self._queue.clear()
            if not jobs:
                return
            self._run(jobs)

    # ---- lanes -----------------------------------------------------------------------------
    def _take(self) -> list[_Job[T]] | None:
        with self._cv:
            while (not self._queue or self._busy >= self._room) and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            deadline = time.perf_counter() + self.window
            while len(self._queue) < self.max_batch and self._coming > 0 and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cv.wait(left)
            if not self._queue or self._busy >= self._room:  # others took them, or the room
                return []
            jobs = [self._queue.popleft()]
            rows = self.size(jobs[0].item)
            while self._queue and len(jobs) < self.max_batch:
                rows += self.size(self._queue[0].item)
                if rows > self.max_rows:
                    break
                jobs.append(self._queue.popleft())
            self._busy += 1
            return jobs

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            if jobs:
                try:
                    self._run(jobs)
                finally:
                    with self._cv:
                        self._busy -= 1
                        self._cv.notify_all()

    def _run(self, jobs: Sequence[_Job[T]]) -> None:
        try:
            scores = self.score_many([j.item for j in jobs])
        except Exception as e:  # every waiting request gets the error, none hangs
            for j in jobs:
                j.future.set_exception(e)
            return
        with self._cv:
            self.batches += 1
            self.items += len(jobs)
        for j, s in zip(jobs, scores, strict=True):
            j.future.set_result(s)
