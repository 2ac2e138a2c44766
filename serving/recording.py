"""Recording served rankings (for the event checks) beside the ranking's own work.

With Redis the record is a round trip (0.10-0.15 ms on one machine) whose arguments are all
known before inference, so it runs on a small pool while the request is scored, and the ranking
waits for it only at the end. Not during the featurisation: begun there it queued behind that
featurisation's own read in Redis (one thread), and the read's median rose 0.99 -> 1.45 ms. The embedded SQLite store records in
about 0.02 ms: there it runs at the end on the request's own thread, as before, since a
thread hop would cost more than it saves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from serving.store import StoreError


@dataclass(frozen=True)
class Recorded:
    mine: bool  # False: the request_id was used for another user's ranking
    failure: str | None  # the store's error; the ranking still serves, degraded


class Recorder:
    def __init__(self, record: Callable[..., bool], concurrent: bool, threads: int):
        self._record = record  # the store's record_request
        self._pool = ThreadPoolExecutor(threads, "record") if concurrent else None

    def start(
        self,
        request_id: str,
        user_id: str,
        query: str,
        t_us: int,
        variant: str,
        candidates: Sequence[str],
    ) -> Callable[[], Recorded]:
        """Begin recording; the returned call waits for the outcome."""
        args = (request_id, user_id, query, t_us, variant, candidates)
        if self._pool is None:
            return lambda: self._outcome(lambda: self._record(*args))
        future: Future[bool] = self._pool.submit(self._record, *args)
        return lambda: self._outcome(future.result)

    @staticmethod
    def _outcome(get: Callable[[], bool]) -> Recorded:
        try:
            return Recorded(bool(get()), None)
        except StoreError as e:
            return Recorded(True, str(e))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
