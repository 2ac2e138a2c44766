"""``ranker state load``: the snapshot ``ranker features`` wrote, into Redis, for stateless
replicas (``serving.remote_state``).

Every write sets a value (never adds to one), so a rerun, or a run after an interrupted one,
leaves the same state; the snapshot's marker is written last, and a replica starts only once
it is there. Each snapshot has its own key prefix (from the hash of its ``state.json``): a
new snapshot never mixes with the old one's counters, and the old keys can be dropped after.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipelines.features.state import TABLES, FeatureState

log = logging.getLogger(__name__)
CHUNK = 500  # keys per pipelined round trip
CLOCK_KEY = "ranker:clock"  # the shared clock, the same key as the served rankings' (RedisStore)


def snapshot_id(state_dir: Path) -> str:
    return hashlib.sha256((Path(state_dir) / "state.json").read_bytes()).hexdigest()


def state_prefix(state_dir: Path) -> str:
    return f"ranker:s:{snapshot_id(state_dir)[:16]}:"


@dataclass(frozen=True)
class LoadResult:
    prefix: str
    counter_keys: dict[str, int]  # per table
    users: int  # with a history
    already_loaded: bool


def is_loaded(client: Any, state_dir: Path) -> bool:
    return client.get(state_prefix(state_dir) + "loaded") == snapshot_id(state_dir)


def load_state(
    client: Any, state_dir: Path, *, progress: bool = True, force: bool = False
) -> LoadResult:
    """Write the snapshot's counters, histories and clock under its prefix (see module)."""
    prefix = state_prefix(state_dir)
    if is_loaded(client, state_dir) and not force:
        return LoadResult(prefix, {}, 0, already_loaded=True)
    st = FeatureState.load(state_dir)
    exports = {name: table.export() for name, table in st.counters.items()}
    records = st.history.records()
    n_keys = sum(len(e.keys) for e in exports.values())
    users = np.unique(records["user_id"]) if len(records["user_id"]) else np.zeros(0, object)
    bar = tqdm(total=n_keys + len(users), desc="state load", unit="key", disable=not progress)
    for name, e in exports.items():
        for chunk in _counter_chunks(prefix, name, len(TABLES[name]), e):
            pipe = client.pipeline(transaction=False)
            summaries = {}
            for hexkey, summary, h, z, fields, buckets in chunk:
                summaries[hexkey] = summary
                pipe.delete(h, z)  # a rerun starts the key afresh: nothing is added twice
                if fields:
                    pipe.hset(h, mapping=fields)
                    pipe.zadd(z, {str(b): b for b in buckets})
            pipe.hset(f"{prefix}s:{name}", mapping=summaries)
            pipe.execute()
            bar.update(len(chunk))
    _load_histories(client, prefix, records, bar)
    bar.close()
    if st.clock_us:  # the shared clock never goes back
        client.eval(
            "local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end",
            1,
            CLOCK_KEY,
            st.clock_us,
        )
    client.set(prefix + "loaded", snapshot_id(state_dir))
    return LoadResult(
        prefix, {n: len(e.keys) for n, e in exports.items()}, len(users), already_loaded=False
    )


def _counter_chunks(
    prefix: str, table: str, kinds: int, e: Any
) -> Iterator[list[tuple[str, str, str, str, dict[str, int], list[int]]]]:
    """Per key of one table: its hex name, its summary (``serving.redis_state``), its bucket
    hash and set, the bucket hash's fields and the buckets."""
    per_key: dict[int, dict[str, int]] = {}
    key_buckets: dict[int, list[int]] = {}
    for b, rows, counts in e.buckets:
        for r, c in zip(rows.tolist(), counts.tolist(), strict=True):
            fields = per_key.setdefault(r, {})
            for k in range(kinds):
                if c[k]:
                    fields[f"b:{b}:{k + 1}"] = fields.get(f"b:{b}:{k + 1}", 0) + int(c[k])
            key_buckets.setdefault(r, []).append(int(b))
    bucket = 0 if e.bucket is None else int(e.bucket)
    chunk = []
    for r, key in enumerate(e.keys.tolist()):
        values = [bucket, *e.total[r].tolist()]
        for sums in e.windows.values():  # the configured order of the finite windows
            values += sums[r].tolist()
        hexkey = f"{key:x}"
        chunk.append(
            (
                hexkey,
                ",".join(str(int(v)) for v in values),
                f"{prefix}c:{table}:{hexkey}",
                f"{prefix}z:{table}:{hexkey}",
                per_key.get(r, {}),
                sorted(set(key_buckets.get(r, []))),
            )
        )
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_histories(client: Any, prefix: str, rec: dict[str, np.ndarray], bar: tqdm) -> None:
    """Members as ``serving.redis_state`` writes them, numbered in the stored order (which is
    the order of equal times and positions)."""
    n = len(rec["user_id"])
    if n == 0:
        return
    last = int(client.incrby(prefix + "hseq", n))
    seqs = range(last - n + 1, last + 1)
    starts = np.flatnonzero(np.r_[True, rec["user_id"][1:] != rec["user_id"][:-1]])
    ends = np.r_[starts[1:], n]
    pipe = client.pipeline(transaction=False)
    for j, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        key = f"{prefix}h:{rec['user_id'][lo]}"
        members = {
            f"{int(rec['position'][i]):010d}|{seqs[i]:020d}|{int(rec['ordered'][i])}|"
            f"{rec['item_id'][i]}": int(rec["t_us"][i])
            for i in range(lo, hi)
        }
        pipe.delete(key)
        pipe.zadd(key, members)
        if (j + 1) % CHUNK == 0:
            pipe.execute()
            bar.update(CHUNK)
            pipe = client.pipeline(transaction=False)
    pipe.execute()
    bar.update(len(starts) % CHUNK)
