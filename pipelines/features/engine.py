"""Where ``ranker features`` replays and featurises: this process, key shards, or Ray.

- ``local`` (the default): one ``FeatureState`` in this process.
- ``local`` with ``--shards S``: the replay on S key shards in this process (what Ray runs,
  without Ray: the way to check a sharding on one machine).
- ``ray``: the shards live in ``--workers`` Ray actors (shard s in actor s mod W), which also
  featurise the parts, several at a time; a local Ray cluster is started for the run unless
  ``--address`` names one (its nodes need this package installed).

The output does not depend on the engine: the shards' lookups are put together and their
tables merged into the state exactly as one state would have had them (``shards``; tests
compare the files byte for byte).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import pandas as pd

from pipelines.features.chunks import take_lookups
from pipelines.features.config import EngineConfig
from pipelines.features.items import ItemRefs
from pipelines.features.replay import (
    Day,
    LookupsOf,
    PartInputs,
    featurize_part,
    replay_day,
)
from pipelines.features.shards import (
    ShardDay,
    ShardReplay,
    ShardTables,
    merge_lookups,
    merge_states,
    split_day,
)
from pipelines.features.state import FeatureState, Lookups, event_counts
from pipelines.features.transforms import FeatureSpec
from pipelines.lists.table import Lists


class Engine(Protocol):
    in_flight: int  # parts featurised at once

    def replay(self, day: Day) -> tuple[ItemRefs, LookupsOf]: ...

    def featurize(self, p: PartInputs) -> list[tuple[str, Lists]]: ...

    def finish(self, state: FeatureState) -> None: ...

    def stats(self) -> dict[str, object]: ...


class InProcess:
    """One state in this process (the default)."""

    in_flight = 1

    def __init__(self, state: FeatureState, spec: FeatureSpec, max_candidates: int):
        self.state, self.spec, self.max_candidates = state, spec, max_candidates

    def replay(self, day: Day) -> tuple[ItemRefs, LookupsOf]:
        return replay_day(day, self.state)

    def featurize(self, p: PartInputs) -> list[tuple[str, Lists]]:
        return featurize_part(p, self.state, self.spec, self.max_candidates)

    def finish(self, state: FeatureState) -> None:
        pass

    def stats(self) -> dict[str, object]:
        return {"engine": "local", "shards": 0}


class ShardPool(Protocol):
    """Where the key shards live."""

    def replay(self, days: list[ShardDay]) -> list[Lookups]: ...

    def tables(self) -> list[ShardTables]: ...

    def stats(self) -> dict[str, object]: ...


class Sharded(InProcess):
    """The replay on key shards held by a pool; the global counter and the clock here."""

    def __init__(
        self,
        state: FeatureState,
        spec: FeatureSpec,
        max_candidates: int,
        pool: ShardPool,
        shards: int,
        featurize: Callable[[PartInputs], list[tuple[str, Lists]]] | None = None,
        in_flight: int = 1,
    ):
        super().__init__(state, spec, max_candidates)
        self.pool, self.shards, self.in_flight = pool, shards, in_flight
        self._featurize = featurize
        self.row_base = 0  # candidates replayed before the current day
        self.rows_per_shard = np.zeros(shards, np.int64)  # candidates each shard replayed

    def replay(self, day: Day) -> tuple[ItemRefs, LookupsOf]:
        refs = self.state.items.refs(day.item_ids)
        cut = split_day(day, refs.hashes, self.shards, self.row_base)
        self.row_base += len(day.item_ids)
        self.rows_per_shard += [len(plan.rows) for _, plan in cut]
        looks = self.pool.replay([d for d, _ in cut])
        glob = self._replay_global(day)
        merged = merge_lookups(
            day, [(lk, plan) for lk, (_, plan) in zip(looks, cut, strict=True)], glob
        )
        return refs, lambda i0, i1, b0, b1: take_lookups(merged, day.offsets, b0, b1)

    def _replay_global(self, day: Day) -> dict[int | None, np.ndarray]:
        """The one global key, replayed here as the single state would: (B, K) per window."""
        st = self.state
        g = st.counters["global"]
        g.insert(np.zeros(1, np.uint64))
        out: list[dict[int | None, np.ndarray]] = []
        for s, e in zip(day.starts, day.ends, strict=True):
            st.advance(int(day.t_us[s]))
            lo, hi = int(day.offsets[s]), int(day.offsets[e])
            ev = day.events(lo, hi)
            rows, counts = event_counts(ev)["global"]
            bucket = (ev.t_us + st.delay_us) // st.bucket_us
            g.add_ids(np.zeros(len(rows), np.int64), bucket[rows], counts)
            out.append(g.lookup_ids(np.zeros(e - s, np.int64)))
        return {w: np.concatenate([o[w] for o in out]) for w in g.windows}

    def featurize(self, p: PartInputs) -> list[tuple[str, Lists]]:
        return self._featurize(p) if self._featurize else super().featurize(p)

    def finish(self, state: FeatureState) -> None:
        merge_states(state, self.pool.tables())

    def stats(self) -> dict[str, object]:
        """Candidates per shard (a shard replays its items' and its users' candidates, so
        they sum to more than the log) and the skew: the largest over the mean."""
        rows = self.rows_per_shard
        return {
            "engine": "ray" if self._featurize else "local",
            "shards": self.shards,
            "candidates_per_shard": rows.tolist(),
            "shard_skew": round(float(rows.max() / max(rows.mean(), 1)), 3),
            **self.pool.stats(),
        }


class LocalPool:
    """Key shards in this process, replayed one after another."""

    def __init__(self, state: FeatureState, users: pd.DataFrame | None, shards: int):
        self.replays = [ShardReplay(fresh_state(state, users)) for _ in range(shards)]

    def replay(self, days: list[ShardDay]) -> list[Lookups]:
        return [r.replay_day(d) for r, d in zip(self.replays, days, strict=True)]

    def tables(self) -> list[ShardTables]:
        return [r.tables() for r in self.replays]

    def stats(self) -> dict[str, object]:
        return {}


def fresh_state(state: FeatureState, users: pd.DataFrame | None) -> FeatureState:
    """A state with ``state``'s items, vocabularies and users and nothing replayed."""
    return FeatureState(state.cfg, state.items, state.context_vocabs, users, state.user_vocabs)


@contextlib.contextmanager
def open_engine(
    cfg: EngineConfig,
    state: FeatureState,
    users: pd.DataFrame | None,
    spec: FeatureSpec,
    max_candidates: int,
) -> Iterator[Engine]:
    if cfg.engine == "local" and cfg.shard_count == 0:
        yield InProcess(state, spec, max_candidates)
    elif cfg.engine == "local":
        yield Sharded(
            state, spec, max_candidates, LocalPool(state, users, cfg.shard_count), cfg.shard_count
        )
    else:
        from pipelines.features.ray_engine import ray_pool

        with ray_pool(cfg, state, users, max_candidates) as actors:
            yield Sharded(
                state,
                spec,
                max_candidates,
                actors,
                cfg.shard_count,
                featurize=actors.featurize,
                in_flight=cfg.workers + 1,
            )
