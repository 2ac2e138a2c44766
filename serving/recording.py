"""Recording served rankings (for the event checks) at the least cost per store.

The embedded SQLite store records in about 0.02 ms, at the end of the ranking on its own
thread. A stateless replica's record would be a second Redis round trip; its arguments are
known before the featurisation, so it rides in the featurisation's own script call (one trip
per ranking). Measured before that, on two cores: a separate record after the inference cost
about 0.17 ms; on a thread during the inference it saved only 0.05 ms of it, the rest lost to
contention. When the read did not carry it (Redis down: the ranking is featurised from the
snapshot), the record is tried on its own at the end, and a failure degrades the ranking.
So on a replica a ranking is recorded before it is scored: one that then fails (a deadline,
non-finite scores) stays recorded, and events naming it pass the checks against the user and
candidates it was asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from serving.redis_store import RedisStore
from serving.remote_state import RemoteFeatureState
from serving.served_record import RecordRide
from serving.store_rows import ServedRanking, StoreError
from serving.stores import Store


@dataclass(frozen=True)
class Recorded:
    mine: bool  # False: the request_id was used for another user's ranking
    failure: str | None  # the store's error; the ranking still serves, degraded


class Recorder:
    def __init__(self, store: Store, remote: RemoteFeatureState | None):
        self.store = store
        # Where a record can ride: a stateless replica's state in the same Redis.
        self.remote = remote if isinstance(store, RedisStore) else None

    @contextmanager
    def around_featurisation(self, ranking: ServedRanking) -> Iterator[Callable[[], Recorded]]:
        """Wrap the ranking's featurisation (under the live state's lock); yields the call
        that gives the outcome, to make once the ranking is scored."""
        if self.remote is None or not isinstance(self.store, RedisStore):
            yield lambda: _outcome(lambda: self.store.record_request(ranking))
            return
        ride = RecordRide(self.store.record_args(ranking))
        self.remote.ride = ride
        try:
            yield (
                lambda: (
                    Recorded(ride.mine, None)
                    if ride.mine is not None
                    else _outcome(lambda: self.store.record_request(ranking))
                )
            )
        finally:
            self.remote.ride = None  # never carried by another ranking's read


def _outcome(record: Callable[[], bool]) -> Recorded:
    try:
        return Recorded(bool(record()), None)
    except StoreError as e:
        return Recorded(True, str(e))
