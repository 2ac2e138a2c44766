"""Rows and values that both stores (SQLite, Redis) and their callers share, apart from either."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

# Identifiers are printable (serving.bounds), so a control character separates candidates.
SEP = "\x1f"


class StoreError(Exception):
    """The store cannot be read or written (disk full, I/O error, locked for too long)."""


@dataclass(frozen=True)
class ServedRanking:
    """A ranking being served, as it is recorded for the event checks."""

    request_id: str
    user_id: str
    query: str
    t_us: int
    variant: str
    candidates: Sequence[str]

    def fields(self) -> tuple[str, str, str, int, str, str]:
        """The stored columns, in both stores' order (candidates joined by ``SEP``)."""
        cands = SEP.join(self.candidates)
        return (self.request_id, self.user_id, self.query, self.t_us, self.variant, cands)


@dataclass(frozen=True)
class Served:
    """A served ranking, as events are checked against it."""

    user_id: str
    query: str
    t_us: int
    variant: str
    candidates: frozenset[str]  # empty for rankings stored before candidates were kept
    n_candidates: int


@dataclass
class EventRow:
    id: int
    type: str  # impression | click | order
    request_id: str
    user_id: str
    item_id: str
    position: int | None
    t_us: int
    query: str
    variant: str  # of the request that showed the item ('' when unknown)


# (type, request_id, user_id, item_id, position, t_us, query, variant, idempotency key): an
# event to store; a key already stored makes it a duplicate (empty key: always stored)
NewEvent = tuple[str, str, str, str, int | None, int, str, str, str]


@dataclass(frozen=True)
class Poll:
    """What a worker checks before each ranking, without a query where it can."""

    pending: bool  # events after the worker's last one may exist
    # The latest ranking time served by any worker (0: none yet). Every worker's state moves
    # its clock there before featurising, so two workers, or two replicas, that serve the same
    # request after the same events read the same counters (a worker's own clock moves only
    # with its own requests, and the counters' buckets close with the clock).
    clock_us: int


@dataclass(frozen=True)
class WorkerRow:
    pid: int
    seen_us: int
    generation: int
    last_event: int
    models: dict[str, str]


def now_us() -> int:
    return time.time_ns() // 1000
