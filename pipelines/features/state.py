"""The feature state: item table, windowed counters, behaviour sequences, user attributes.

One class serves both drivers. The batch pipeline feeds it the logged events bucket by bucket;
the server loads the snapshot the pipeline wrote (``OUT/state/``) and feeds it the events
posted to /v1/events. ``lookup`` answers for a batch of requests as of the current time.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.features.config import FeatureConfig
from pipelines.features.counters import CounterTable
from pipelines.features.history import HistoryStore, Sequences
from pipelines.features.items import ItemRefs, ItemTable, Vocab
from pipelines.features.keys import combine, hash_strings
from pipelines.features.text import tokenize
from pipelines.io import write_parquet_atomic

# counter table -> event kinds it counts
TABLES: dict[str, tuple[str, ...]] = {
    "item": ("imp", "click", "order"),  # per item
    "qi": ("imp", "click"),  # per (query, item)
    "ui": ("click",),  # per (user, item)
    "uc": ("click",),  # per (user, item group), e.g. user x category
    "user": ("click",),  # per user
    "global": ("imp", "click", "order"),  # everything: the prior of smoothed rates
}
US_PER_S = 1_000_000


@functools.lru_cache(maxsize=100_000)
def normalize_query(q: object) -> str:
    return " ".join(tokenize(q))


def query_hashes(queries: np.ndarray) -> np.ndarray:
    """Stable hash of each normalised query; each distinct text is normalised once."""
    if len(queries) <= 16:  # a live request: skip pandas' per-call overhead
        return hash_strings(np.array([normalize_query(q) for q in queries], dtype=object))
    codes, uniq = pd.factorize(pd.Series(queries, dtype=object))
    h = hash_strings(np.array([normalize_query(q) for q in uniq], dtype=object))
    return h[codes] if len(h) else np.zeros(len(queries), np.uint64)


@dataclass
class Events:
    """Impressions (with their outcome) to feed the state; arrays of length n."""

    user_id: np.ndarray  # str
    query: np.ndarray  # str, raw query text
    item_id: np.ndarray  # str
    t_us: np.ndarray  # int64 microseconds since the epoch (request time)
    position: np.ndarray  # int
    clicked: np.ndarray  # bool
    ordered: np.ndarray  # bool
    impression: np.ndarray | None = None  # bool; None = every row is an impression


def event_counts(ev: Events) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What events add to each counter table: (rows of ``ev``, counts (n_t, K) per kind in
    ``TABLES`` order). Impressions, clicks and orders count per item, query-item and overall;
    clicks alone per user, user-item and user-group."""
    n = len(ev.item_id)
    imp = np.ones(n, bool) if ev.impression is None else ev.impression.astype(bool)
    clicked, ordered = ev.clicked.astype(bool), ev.ordered.astype(bool)
    every, k = np.arange(n), np.flatnonzero(clicked)
    one = np.ones((len(k), 1), np.int64)
    three = np.stack([imp, clicked, ordered], axis=1)
    return {
        "item": (every, three),
        "qi": (every, np.stack([imp, clicked], axis=1)),
        "global": (every, three),
        "ui": (k, one),
        "uc": (k, one),
        "user": (k, one),
    }


@dataclass
class CounterIds:
    """Counter ids of a block: per candidate row, and per request."""

    rows: dict[str, np.ndarray]  # item, qi, ui, uc -> (N,) ids, -1 for keys never seen
    reqs: dict[str, np.ndarray]  # user, global -> (B,) ids

    def take(self, rows: slice | np.ndarray, reqs: slice | np.ndarray) -> CounterIds:
        return CounterIds(
            {t: v[rows] for t, v in self.rows.items()}, {t: v[reqs] for t, v in self.reqs.items()}
        )


@dataclass
class Lookups:
    """What the state knows for B requests and their N candidates."""

    counts: dict[str, dict[int | None, np.ndarray]]  # table -> window -> (N or B, K)
    sequences: Sequences


class FeatureState:
    def __init__(
        self,
        cfg: FeatureConfig,
        items: ItemTable,
        context_vocabs: dict[str, Vocab],
        users: pd.DataFrame | None = None,
        user_vocabs: dict[str, Vocab] | None = None,
    ):
        self.cfg = cfg
        self.items = items
        self.context_vocabs = context_vocabs
        self.user_vocabs = user_vocabs or {}
        self.users = users.set_index("user_id") if users is not None and len(users) else None
        self._user_dict: dict[str, tuple[object, ...]] = {}
        if self.users is not None and self.user_vocabs:
            cols = list(self.user_vocabs)
            self._user_dict = dict(
                zip(
                    self.users.index.astype(str),
                    self.users[cols].itertuples(index=False, name=None),
                    strict=True,
                )
            )
        windows = [w for _, w in cfg.counters.window_buckets()]
        self.window_names = [n for n, _ in cfg.counters.window_buckets()]
        self.counters = {name: CounterTable(kinds, windows) for name, kinds in TABLES.items()}
        self.history = HistoryStore(cfg.history.max_len)
        self.bucket_us = cfg.counters.bucket_s * US_PER_S
        self.delay_us = cfg.counters.delay_s * US_PER_S
        self.clock_us: int | None = None

    # ---- time and events -------------------------------------------------------------------
    def advance(self, t_us: int) -> None:
        """Move the clock forward to ``t_us`` (never back); closes finished counter buckets."""
        if self.clock_us is not None and t_us <= self.clock_us:
            return
        self.clock_us = int(t_us)
        b = int(t_us // self.bucket_us)
        for table in self.counters.values():
            table.advance_to(b)

    def counter_keys(
        self, user_id: np.ndarray, query: np.ndarray, offsets: np.ndarray, refs: ItemRefs
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The counter keys (uint64) of B requests' N candidates: per candidate (item, qi, ui,
        uc) and per request (user, global). Stores of any kind key their counters so."""
        seg = np.repeat(np.arange(len(user_id)), np.diff(offsets))
        hu, hq = hash_strings(user_id), query_hashes(query)
        rows = {
            "item": refs.hashes,
            "qi": combine(hq[seg], refs.hashes),
            "ui": combine(hu[seg], refs.hashes),
            "uc": combine(hu[seg], self.groups(refs.rows)),
        }
        return rows, {"user": hu, "global": np.zeros(len(hu), np.uint64)}

    def counter_ids(
        self,
        user_id: np.ndarray,
        query: np.ndarray,
        offsets: np.ndarray,
        refs: ItemRefs,
        clicked: np.ndarray | None = None,
    ) -> CounterIds:
        """Resolve the counter keys of B requests' N candidates to dense ids, once.

        With ``clicked`` the candidates are events: their keys are inserted first (impressions
        in the item and query-item tables, clicks in the user tables), so that the ids hold for
        the whole block. The batch pipeline resolves a day at a time; slices then serve each
        bucket with no further hashing.
        """
        rows, reqs = self.counter_keys(user_id, query, offsets, refs)
        c = self.counters
        if clicked is not None:
            c["item"].insert(rows["item"])
            c["qi"].insert(rows["qi"])
            c["global"].insert(np.zeros(1, np.uint64))
            k = np.flatnonzero(clicked)
            seg = np.repeat(np.arange(len(user_id)), np.diff(offsets))  # candidate -> request
            c["ui"].insert(rows["ui"][k])
            c["uc"].insert(rows["uc"][k])
            c["user"].insert(reqs["user"][seg[k]])
        return CounterIds(
            rows={t: c[t].index.get(v) for t, v in rows.items()},
            reqs={t: c[t].index.get(v) for t, v in reqs.items()},
        )

    def observe(
        self, ev: Events, refs: ItemRefs | None = None, ids: CounterIds | None = None
    ) -> None:
        """Queue events for the counters (seen after the delay) and the sequences (at once).

        ``ids``: the events' counter ids from ``counter_ids`` (one "request" per event row,
        or rows of a block resolved ahead); computed here when absent.
        """
        n = len(ev.item_id)
        if n == 0:
            return
        refs = refs if refs is not None else self.items.refs(ev.item_id)
        clicked, ordered = ev.clicked.astype(bool), ev.ordered.astype(bool)
        if ids is None:
            ids = self.counter_ids(ev.user_id, ev.query, np.arange(n + 1), refs, clicked)
        bucket = (ev.t_us + self.delay_us) // self.bucket_us
        for table, (rows, counts) in event_counts(ev).items():
            if table == "global":  # one key, id 0
                table_ids = np.zeros(n, np.int64)
            else:
                table_ids = ids.reqs[table] if table in ids.reqs else ids.rows[table]
            self.counters[table].add_ids(table_ids[rows], bucket[rows], counts)
        k = np.flatnonzero(clicked)
        if len(k):
            self.history.add_many(
                ev.user_id[k], ev.t_us[k], ev.position[k], ev.item_id[k], ordered[k]
            )
        # Online an order arrives as its own event after the click: mark that click.
        for j in np.flatnonzero(ordered & ~clicked):
            self.history.mark_ordered(str(ev.user_id[j]), int(ev.t_us[j]), str(ev.item_id[j]))

    # ---- lookups ---------------------------------------------------------------------------
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
        """Counters and sequences for B requests (per-request arrays) and N candidates."""
        if ids is None:
            refs = refs if refs is not None else self.items.refs(item_id)
            ids = self.counter_ids(user_id, query, offsets, refs)
        c = self.counters
        counts = {t: c[t].lookup_ids(v) for t, v in ids.rows.items()}
        counts.update({t: c[t].lookup_ids(v) for t, v in ids.reqs.items()})
        return Lookups(counts=counts, sequences=self.history.lookup(user_id, t_us))

    def user_attributes(self, user_id: np.ndarray) -> dict[str, np.ndarray]:
        """Configured categorical user attributes per request (None for unknown users)."""
        cols = list(self.user_vocabs)
        rows = [self._user_dict.get(str(u)) for u in user_id]
        return {
            c: np.array([r[j] if r is not None else None for r in rows], dtype=object)
            for j, c in enumerate(cols)
        }

    def groups(self, rows: np.ndarray) -> np.ndarray:
        """Group index (e.g. category) of item rows as uint64; 0 when unknown or unconfigured."""
        return self.items.take("group", rows).astype(np.uint64)

    # ---- bounding memory (the server) ------------------------------------------------------
    def evict_least_recent(self, max_users: int, max_keys: int) -> dict[str, int]:
        """Keep the histories of at most ``max_users`` users and at most ``max_keys`` keys per
        counter table, forgetting the least recently active (deterministic: the same events
        give the same state). Returns what was forgotten, by table."""
        out = {"history": self.history.evict_least_recent(max_users)}
        for name, table in self.counters.items():
            table.track_recency()
            out[name] = table.evict_least_recent(max_keys)
        return {k: v for k, v in out.items() if v}

    # ---- snapshot --------------------------------------------------------------------------
    def save_dynamic(self, out: Path) -> None:
        """What events change (counters, histories, the clock) into ``out``, a fresh directory:
        a checkpoint that ``load(base, dynamic=out)`` completes with the base snapshot."""
        out.mkdir(parents=True, exist_ok=True)
        for name, table in self.counters.items():
            table.save(out / f"counters_{name}.npz")
        self.history.save(out / "history.parquet")
        (out / "dynamic.json").write_text(json.dumps({"clock_us": self.clock_us}))

    def save(self, out: Path, items_frame: pd.DataFrame, users_frame: pd.DataFrame | None) -> None:
        """Write the state to ``out`` (a fresh directory): what ``ranker serve --state`` loads."""
        out.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(_to_arrow(items_frame), out / "items.parquet")
        if users_frame is not None:
            write_parquet_atomic(_to_arrow(users_frame), out / "users.parquet")
        for name, table in self.counters.items():
            table.save(out / f"counters_{name}.npz")
        self.history.save(out / "history.parquet")
        meta = {
            "config": self.cfg.to_dict(),
            "clock_us": self.clock_us,
            "context_vocabs": {k: v.values for k, v in self.context_vocabs.items()},
            "user_vocabs": {k: v.values for k, v in self.user_vocabs.items()},
        }
        (out / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path, dynamic: Path | None = None) -> FeatureState:
        """The snapshot ``ranker features`` wrote to ``path``; with ``dynamic``, its counters,
        histories and clock from a checkpoint (``save_dynamic``) instead."""
        path = Path(path)
        if not (path / "state.json").exists():
            raise FileNotFoundError(f"{path}: no state.json (write one with `ranker features`)")
        meta = json.loads((path / "state.json").read_text())
        cfg = FeatureConfig.from_dict(meta["config"])
        items_frame = pd.read_parquet(path / "items.parquet")
        users_path = path / "users.parquet"
        users = pd.read_parquet(users_path) if users_path.exists() else None
        for frame in (items_frame, users):
            for col in ("item_id", "user_id"):
                if frame is not None and col in frame.columns:
                    frame[col] = frame[col].astype("str")
        # Vocabularies in config order: that order is the feature order.
        ctx, usr = meta["context_vocabs"], meta["user_vocabs"]
        state = cls(
            cfg,
            ItemTable.build(items_frame, cfg),
            {k: Vocab(ctx[k]) for k in cfg.requests.categorical},
            users,
            {k: Vocab(usr[k]) for k in cfg.users.categorical},
        )
        windows = [w for _, w in cfg.counters.window_buckets()]
        src = path if dynamic is None else Path(dynamic)
        for name, kinds in TABLES.items():
            state.counters[name] = CounterTable.load(src / f"counters_{name}.npz", kinds, windows)
        state.history = HistoryStore.load(src / "history.parquet", cfg.history.max_len)
        state.clock_us = (
            meta["clock_us"]
            if dynamic is None
            else json.loads((src / "dynamic.json").read_text())["clock_us"]
        )
        return state


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False)
