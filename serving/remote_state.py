"""The feature state of a stateless replica: what the snapshot fixes (items, vocabularies,
users' attributes, the configuration) in memory, counters and histories in Redis
(``serving.redis_state``). The featuriser is the batch pipeline's, unchanged: only where the
counts and sequences come from differs, so live == batch holds here as in memory (the replay
test runs against both)."""

from __future__ import annotations

import numpy as np

from pipelines.features.history import Sequences
from pipelines.features.items import ItemRefs
from pipelines.features.state import TABLES, CounterIds, Events, FeatureState, Lookups, event_counts
from serving.redis_state import CountWrite, HistoryWrite, RedisState

ROW_TABLES = ("item", "qi", "ui", "uc")  # keyed per candidate; user and global per request


class RemoteFeatureState(FeatureState):
    def __init__(self, base: FeatureState, remote: RedisState):
        users = None if base.users is None else base.users.reset_index()
        super().__init__(base.cfg, base.items, base.context_vocabs, users, base.user_vocabs)
        self.counters = {}  # none here: Redis holds them
        self.remote = remote
        self.clock_us = base.clock_us

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
        n = len(item_id)
        keys = [(t, int(k)) for t in ROW_TABLES for k in rows[t]]
        keys += [("user", int(reqs["user"][0])), ("global", 0)]
        per_key, seq = self.remote.lookup(int(t_us[0]), keys, str(user_id[0]))
        parts = {t: per_key[j * n : (j + 1) * n] for j, t in enumerate(ROW_TABLES)}
        parts["user"], parts["global"] = [per_key[-2]], [per_key[-1]]
        counts: dict[str, dict[int | None, np.ndarray]] = {}
        for table, part in parts.items():
            k = len(TABLES[table])
            counts[table] = {
                w: np.stack([p[w] for p in part]) if part else np.zeros((0, k), np.int64)
                for w in self.remote.windows
            }
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
    base: FeatureState, client: object, prefix: str, clock_key: str
) -> RemoteFeatureState:
    """``base``'s static parts over counters and histories in Redis under ``prefix``."""
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
    )
    return RemoteFeatureState(base, remote)
