"""The replay on key shards: each shard holds the counters and histories of its own keys.

Tables are sharded by the id their keys contain: item, query-item and user-item counters by
item, user-group and user counters and the histories by user (a user-item key lives with its
item: every event of that key is an event of that item). The one key of the global table
stays with the driver. Time is never partitioned: every shard sees every counter bucket of
every day, in order, and advances its clock exactly as one state fed everything would, so
its own keys get the same counts and histories as in that state.

A shard receives, per day, the candidates of its items and every candidate of its users'
requests (``split_day``), and answers the lookups of the keys it owns; the driver puts the
answers together (``merge_lookups``). At the end the shards' tables are merged
(``merge_states``): keys ordered by the row of their first event in the whole replay, which is
the order one table would have given them, so the saved state is byte for byte the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.features.chunks import PER_REQUEST_TABLES, concat_lookups
from pipelines.features.counters import CounterTable
from pipelines.features.history import HistoryStore, Sequences
from pipelines.features.keys import hash_strings
from pipelines.features.replay import Day
from pipelines.features.state import Events, FeatureState, Lookups, event_counts

# Sharded counter tables -> the id their keys are sharded by ("global" stays with the driver).
SHARDED_BY = {"item": "item", "qi": "item", "ui": "item", "uc": "user", "user": "user"}
# A shard's counter tables (each with its keys' stamps) and its histories.
ShardTables = tuple[dict[str, tuple[CounterTable, np.ndarray]], HistoryStore]


@dataclass
class ShardDay:
    """One day as a shard sees it: its requests (day order) and their candidates it needs."""

    bucket_t: np.ndarray  # (buckets,) first request time of every counter bucket of the day
    req_bucket: np.ndarray  # (B,) counter bucket of each request
    t_us: np.ndarray  # (B,)
    users: np.ndarray  # (B,)
    queries: np.ndarray  # (B,)
    own_user: np.ndarray  # (B,) bool: the request's user is this shard's
    offsets: np.ndarray  # (B + 1,)
    item_ids: np.ndarray  # (N,)
    clicked: np.ndarray  # (N,)
    ordered: np.ndarray  # (N,)
    positions: np.ndarray  # (N,)
    own_item: np.ndarray  # (N,) bool: the candidate's item is this shard's
    stamps: np.ndarray  # (N,) int64 row of the candidate in the whole replay


@dataclass
class ShardPlan:
    """Where a shard's requests and candidates sit in the driver's day."""

    reqs: np.ndarray  # (B_s,) request rows of the day
    rows: np.ndarray  # (N_s,) candidate rows of the day
    own_user: np.ndarray  # (B_s,)
    own_item: np.ndarray  # (N_s,)
    own_user_rows: np.ndarray  # (N_s,) the candidate's request is one of this shard's users


def owners(hashes: np.ndarray, shards: int) -> np.ndarray:
    """The shard of each hashed id (SipHash: the low bits are as good as any)."""
    return (hashes % np.uint64(shards)).astype(np.int64)


def split_day(
    day: Day, item_hashes: np.ndarray, shards: int, row_base: int
) -> list[tuple[ShardDay, ShardPlan]]:
    """A day cut into what each shard replays; ``row_base``: the replay's rows before it."""
    item_owner = owners(item_hashes, shards)  # (N,)
    user_owner = owners(hash_strings(day.users), shards)  # (B,)
    row_user_owner = user_owner[day.seg]  # (N,)
    bucket_t = day.t_us[day.starts]
    req_bucket = np.repeat(np.arange(len(day.starts)), day.ends - day.starts)
    out = []
    for s in range(shards):
        rows = np.flatnonzero((item_owner == s) | (row_user_owner == s))
        seg = day.seg[rows]
        reqs = np.unique(seg)
        lens = np.bincount(seg, minlength=len(day.t_us))[reqs]
        plan = ShardPlan(
            reqs, rows, user_owner[reqs] == s, item_owner[rows] == s, row_user_owner[rows] == s
        )
        out.append(
            (
                ShardDay(
                    bucket_t=bucket_t,
                    req_bucket=req_bucket[reqs],
                    t_us=day.t_us[reqs],
                    users=day.users[reqs],
                    queries=day.queries[reqs],
                    own_user=plan.own_user,
                    offsets=np.concatenate([[0], np.cumsum(lens)]),
                    item_ids=day.item_ids[rows],
                    clicked=day.clicked[rows],
                    ordered=day.ordered[rows],
                    positions=day.positions[rows],
                    own_item=plan.own_item,
                    stamps=row_base + rows,
                ),
                plan,
            )
        )
    return out


class ShardReplay:
    """One key shard: the state of its keys, replayed day by day."""

    def __init__(self, state: FeatureState):
        self.state = state  # a fresh state; only the sharded tables and histories are used
        self.stamps: dict[str, list[np.ndarray]] = {t: [] for t in SHARDED_BY}

    def _insert(self, table: str, keys: np.ndarray, stamps: np.ndarray) -> None:
        """Insert keys (in event order) and keep the stamp of each new key's first event."""
        t = self.state.counters[table]
        n0 = len(t.index)
        ids = t.insert(keys)
        new, first = np.unique(ids[ids >= n0], return_index=True)  # ids n0, n0 + 1, ...
        self.stamps[table].append(stamps[ids >= n0][first])
        assert len(new) == len(t.index) - n0

    def replay_day(self, d: ShardDay) -> Lookups:
        """Replay the shard's part of a day; the lookups of its requests and candidates (keys
        of other shards read zero: the driver takes those from their owners)."""
        st, c = self.state, self.state.counters
        refs = st.items.refs(d.item_ids)
        keys, req_keys = st.counter_keys(d.users, d.queries, d.offsets, refs)
        seg = np.repeat(np.arange(len(d.t_us)), np.diff(d.offsets))  # (N,) request of a row
        own = {"item": d.own_item, "user": d.own_user[seg]}  # (N,) each
        # Keys are inserted as one state inserts a day's (``FeatureState.counter_ids``).
        for table in ("item", "qi", "ui", "uc", "user"):
            sel = own[SHARDED_BY[table]] & (d.clicked if table in ("ui", "uc", "user") else True)
            k = np.flatnonzero(sel)
            self._insert(
                table, req_keys["user"][seg[k]] if table == "user" else keys[table][k], d.stamps[k]
            )
        ids = {t: c[t].index.get(v) for t, v in keys.items()}
        user_ids = c["user"].index.get(req_keys["user"])
        looks: list[Lookups] = []
        ranges = np.searchsorted(d.req_bucket, np.arange(len(d.bucket_t) + 1))
        for i, t0 in enumerate(d.bucket_t):
            st.advance(int(t0))
            s, e = int(ranges[i]), int(ranges[i + 1])
            if s == e:
                continue
            lo, hi = int(d.offsets[s]), int(d.offsets[e])
            rs = seg[lo:hi]
            ev_t = d.t_us[rs]
            bucket = (ev_t + st.delay_us) // st.bucket_us
            ev = Events(
                d.users[rs],
                d.queries[rs],
                d.item_ids[lo:hi],
                ev_t,
                d.positions[lo:hi],
                d.clicked[lo:hi],
                d.ordered[lo:hi],
            )
            for table, (rows, counts) in event_counts(ev).items():
                if table == "global":
                    continue
                mine = own[SHARDED_BY[table]][lo:hi][rows]
                table_ids = user_ids[rs] if table == "user" else ids[table][lo:hi]
                r = rows[mine]
                c[table].add_ids(table_ids[r], bucket[r], counts[mine])
            k = np.flatnonzero(ev.clicked & own["user"][lo:hi])
            if len(k):
                st.history.add_many(
                    ev.user_id[k], ev.t_us[k], ev.position[k], ev.item_id[k], ev.ordered[k]
                )
            for j in np.flatnonzero(ev.ordered & ~ev.clicked & own["user"][lo:hi]):
                st.history.mark_ordered(str(ev.user_id[j]), int(ev.t_us[j]), str(ev.item_id[j]))
            counts_of = {t: c[t].lookup_ids(ids[t][lo:hi]) for t in ids}
            counts_of["user"] = c["user"].lookup_ids(user_ids[s:e])
            looks.append(Lookups(counts_of, st.history.lookup(d.users[s:e], d.t_us[s:e])))
        return concat_lookups(looks) if looks else _no_lookups(st)

    def tables(self) -> ShardTables:
        """This shard's counter tables with their keys' stamps, and its histories."""
        stamps = {
            t: np.concatenate(v) if v else np.zeros(0, np.int64) for t, v in self.stamps.items()
        }
        return {t: (self.state.counters[t], stamps[t]) for t in SHARDED_BY}, self.state.history


def _no_lookups(st: FeatureState) -> Lookups:
    return Lookups(
        counts={
            t: {
                w: np.zeros((0, len(st.counters[t].kinds)), np.int64)
                for w in st.counters[t].windows
            }
            for t in SHARDED_BY
        },
        sequences=Sequences(
            np.zeros(1, np.int64), np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0, bool)
        ),
    )


def merge_lookups(
    day: Day, parts: list[tuple[Lookups, ShardPlan]], global_counts: dict[int | None, np.ndarray]
) -> Lookups:
    """The day's lookups from its shards' (each key read from the shard that owns it) and the
    driver's global counts."""
    n, b = len(day.item_ids), len(day.t_us)
    counts: dict[str, dict[int | None, np.ndarray]] = {"global": global_counts}
    covered = {"item": np.zeros(n, np.int64), "user": np.zeros(b, np.int64)}
    first = parts[0][0].counts
    for table in SHARDED_BY:
        size = b if table in PER_REQUEST_TABLES else n
        counts[table] = {w: np.zeros((size, a.shape[1]), np.int64) for w, a in first[table].items()}
    seq_len = np.zeros(b, np.int64)
    for look, plan in parts:
        covered["item"][plan.rows[plan.own_item]] += 1
        covered["user"][plan.reqs[plan.own_user]] += 1
        for table, by in SHARDED_BY.items():
            if table in PER_REQUEST_TABLES:
                dest, mine = plan.reqs, plan.own_user
            else:
                dest, mine = plan.rows, plan.own_item if by == "item" else plan.own_user_rows
            for w, a in look.counts[table].items():
                counts[table][w][dest[mine]] = a[mine]
        seq_len[plan.reqs] += np.diff(look.sequences.offsets)
    if not ((covered["item"] == 1).all() and (covered["user"] == 1).all()):
        raise RuntimeError("key shards must cover every candidate and request exactly once")
    offsets = np.concatenate([[0], np.cumsum(seq_len)])
    m = int(offsets[-1])
    item_id, t_us, ordered = np.empty(m, object), np.empty(m, np.int64), np.empty(m, bool)
    for look, plan in parts:
        sq = look.sequences
        cnt = np.diff(sq.offsets)
        dest = np.repeat(offsets[plan.reqs], cnt) + (
            np.arange(int(sq.offsets[-1])) - np.repeat(sq.offsets[:-1], cnt)
        )
        item_id[dest], t_us[dest], ordered[dest] = sq.item_id, sq.t_us, sq.ordered
    return Lookups(counts, Sequences(offsets, item_id, t_us, ordered))


def merge_states(state: FeatureState, shards: list[ShardTables]) -> None:
    """Put the shards' counter tables and histories into ``state`` (the driver's, which kept
    the global table and the clock)."""
    for table in SHARDED_BY:
        state.counters[table] = CounterTable.merge_shards([tables[table] for tables, _ in shards])
    state.history = HistoryStore.merge_shards([h for _, h in shards])
