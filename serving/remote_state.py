"""The feature state of a stateless replica: what the snapshot fixes (items, vocabularies,
users' attributes, the configuration) in memory, counters and histories in Redis
(``serving.redis_state``). The featuriser is the batch pipeline's, unchanged: only where the
counts and sequences come from differs, so live == batch holds here as in memory (the replay
test runs against both)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import redis

from pipelines.features.history import Sequences
from pipelines.features.items import ItemRefs
from pipelines.features.live import LiveFeaturizer
from pipelines.features.state import TABLES, CounterIds, Events, FeatureState, Lookups, event_counts
from serving.redis_state import CountWrite, HistoryWrite, RedisState
from serving.redis_store import RedisStore
from serving.served_record import RecordRide
from serving.settings import Settings
from serving.state_load import CLOCK_KEY, is_loaded, state_prefix
from serving.store_rows import StoreError

ROW_TABLES = ("item", "qi", "ui", "uc")  # keyed per candidate; user and global per request


class RemoteFeatureState(FeatureState):
    def __init__(
        self, base: FeatureState, remote: RedisState, fallback: FeatureState | None = None
    ):
        users = None if base.users is None else base.users.reset_index()
        super().__init__(base.cfg, base.items, base.context_vocabs, users, base.user_vocabs)
        self.counters = {}  # none here: Redis holds them
        self.remote = remote
        self.clock_us = base.clock_us
        # With a fallback (the snapshot's own counters and histories, frozen), a read that
        # Redis cannot answer is answered from it and ``degraded`` says so until the next read.
        self.fallback = fallback
        self.degraded = False
        # A served ranking recorded by the next read (``serving.recording``; set and cleared
        # under the live state's lock, around one featurisation).
        self.ride: RecordRide | None = None

    def advance(self, t_us: int) -> None:
        """The shared clock moves in Redis, with the read that needs it (``lookup``)."""
        if self.clock_us is None or t_us > self.clock_us:
            self.clock_us = int(t_us)

    def lookup(
        self,
        user_id: np.ndarray,
        query: np.ndarray,
        t_us: np.ndarray,
        offsets: np.ndarray,
        item_id: np.ndarray,
        refs: ItemRefs | None = None,
        ids: CounterIds | None = None,
    ) -> Lookups:
        """One request (the server's path): its counters and sequence in one script call."""
        if len(user_id) != 1:
            raise ValueError("a remote state answers one request at a time")
        refs = refs if refs is not None else self.items.refs(item_id)
        rows, reqs = self.counter_keys(user_id, query, offsets, refs)
        groups = [(t, rows[t]) for t in ROW_TABLES] + [(t, reqs[t]) for t in ("user", "global")]
        try:
            ride, self.ride = self.ride, None
            per, seq = self.remote.lookup_groups(int(t_us[0]), groups, str(user_id[0]), ride)
            self.degraded = False
        except redis.RedisError:
            if self.fallback is None:
                raise
            self.degraded = True
            self.fallback.advance(int(t_us[0]))
            return self.fallback.lookup(user_id, query, t_us, offsets, item_id, refs=refs)
        counts = {table: sums for (table, _), sums in zip(groups, per, strict=True)}
        return Lookups(counts=counts, sequences=seq)

    def observe(
        self, ev: Events, refs: ItemRefs | None = None, ids: CounterIds | None = None
    ) -> None:
        counts, history = self.writes(ev, refs)
        self.remote.observe(counts, history)

    def writes(
        self, ev: Events, refs: ItemRefs | None = None
    ) -> tuple[list[CountWrite], list[HistoryWrite]]:
        """What events change in Redis, as ``FeatureState.observe`` changes memory."""
        n = len(ev.item_id)
        if n == 0:
            return [], []
        refs = refs if refs is not None else self.items.refs(ev.item_id)
        rows, reqs = self.counter_keys(ev.user_id, ev.query, np.arange(n + 1), refs)
        keys = {**rows, **reqs}
        out = []
        for table, (idx, cnt) in event_counts(ev).items():
            for i, c in zip(idx.tolist(), cnt.tolist(), strict=True):
                counts = tuple(int(x) for x in c)
                out.append(CountWrite(table, int(keys[table][i]), int(ev.t_us[i]), counts))
        clicked, ordered = ev.clicked.astype(bool), ev.ordered.astype(bool)
        history = [
            HistoryWrite(
                "click",
                str(ev.user_id[i]),
                int(ev.t_us[i]),
                int(ev.position[i]),
                str(ev.item_id[i]),
                bool(ordered[i]),
            )
            for i in np.flatnonzero(clicked)
        ]
        history += [
            HistoryWrite("order", str(ev.user_id[i]), int(ev.t_us[i]), 0, str(ev.item_id[i]), True)
            for i in np.flatnonzero(ordered & ~clicked)
        ]
        return out, history

    def history_of(self, user_id: str) -> Sequences:
        """A user's stored sequence (for /v1/users/{id}/history), without moving the clock."""
        return self.remote.history(user_id)

    def evict_least_recent(self, max_users: int, max_keys: int) -> dict[str, int]:
        return {}  # nothing per user or key is held here


def remote_state(
    base: FeatureState,
    client: object,
    prefix: str,
    clock_key: str,
    fallback: FeatureState | None = None,
    cache_keys: int = 100_000,
) -> RemoteFeatureState:
    """``base``'s static parts over counters and histories in Redis under ``prefix``;
    ``cache_keys``: see ``serving.bucket_cache``."""
    cfg = base.cfg
    remote = RedisState(
        client,
        prefix,
        clock_key,
        {t: len(kinds) for t, kinds in TABLES.items()},
        [w for _, w in cfg.counters.window_buckets()],
        base.bucket_us,
        base.delay_us,
        cfg.history.max_len,
        cache_keys,
    )
    return RemoteFeatureState(base, remote, fallback)


class RemoteLiveState:
    """What ``serving.live_state.LiveState`` offers the service, for a stateless replica:
    nothing to replay (events update Redis as they are stored), nothing to bound or checkpoint
    (Redis holds the per-user state), one state for every variant."""

    def __init__(self, snapshot: Path, client: object, prefix: str, cache_keys: int = 100_000):
        base = FeatureState.load(snapshot)
        self.lock = threading.Lock()
        self.main = LiveFeaturizer(
            remote_state(base, client, prefix, CLOCK_KEY, fallback=base, cache_keys=cache_keys)
        )
        self.remote: RemoteFeatureState = self.main.state  # type: ignore[assignment]
        self.variants: dict[str, LiveFeaturizer] = {}
        self.last_event = 0
        self.evicted: dict[str, int] = {}

    @property
    def state(self) -> FeatureState:
        return self.main.state

    def featurizers(self) -> list[LiveFeaturizer]:
        return [self.main]

    def for_variant(self, variant: str) -> LiveFeaturizer:
        return self.main

    def sync(self, store: object, limit: int = 0) -> int:
        return 0

    def catch_up(self, store: object) -> int:
        return 0

    def follow_clock(self, t_us: int) -> None:
        """The clock is in Redis: every read moves it."""

    def history(self, user_id: str) -> Sequences:
        return self.remote.history_of(user_id)

    def sizes(self) -> dict[str, int]:
        return {}

    def apply_args(self) -> list[object]:
        return self.remote.remote.apply_args()

    def effects(
        self, rows: list[tuple[str, str, str, str, int | None, int, str, str, str]]
    ) -> list[str]:
        """Per stored event row, its state writes (JSON) for the event store's script."""
        out = []
        for kind, _, user, item, pos, t_us, query, _, _ in rows:
            ev = Events(
                user_id=np.array([user], dtype=object),
                query=np.array([query], dtype=object),
                item_id=np.array([item], dtype=object),
                t_us=np.array([t_us], dtype=np.int64),
                position=np.array([pos or 0], dtype=np.int64),
                clicked=np.array([kind == "click"]),
                ordered=np.array([kind == "order"]),
                impression=np.array([kind == "impression"]),
            )
            out.append(self.remote.remote.encode(*self.remote.writes(ev)))
        return out


def remote_live_state(s: Settings, store: RedisStore, variants: list[str]) -> RemoteLiveState:
    """The stateless replica's state, once ``ranker state load`` has put the snapshot in
    Redis (until then the replica does not start: it would serve empty counters)."""
    if variants:
        raise ValueError(
            "--isolate-variants needs per-variant states, which a Redis store does not hold yet"
        )
    if not is_loaded(store.client, s.state):
        raise StoreError(
            f"the snapshot {s.state} is not in the Redis store yet: run `ranker state load "
            f"--state {s.state} --store URL` first"
        )
    live = RemoteLiveState(s.state, store.client, state_prefix(s.state), s.counter_cache_keys)
    store.attach_state(live.apply_args())
    return live
