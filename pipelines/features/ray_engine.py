"""Key shards on Ray actors: ``ranker features --engine ray [--address A --workers W --shards S]``.

Each of W actors holds the shards s with s mod W equal to its number and featurises parts of
the days already replayed, so one Ray worker process does both; the driver splits each day,
replays the global counter, puts the lookups together and writes the files (``engine``).
Ray is optional (``pip install 'ranker[cluster]'``): nothing else imports this module.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import resource
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd

from pipelines.features.replay import PartInputs, featurize_part
from pipelines.features.shards import ShardDay, ShardReplay, ShardTables
from pipelines.features.state import FeatureState, Lookups
from pipelines.features.transforms import feature_spec
from pipelines.lists.table import Lists

log = logging.getLogger(__name__)


class ShardWorker:
    """What one Ray actor holds: some key shards and the static state to featurise with."""

    def __init__(
        self,
        state: FeatureState,
        users: pd.DataFrame | None,
        shards: list[int],
        max_candidates: int,
    ):
        from pipelines.features.engine import fresh_state

        self.replays = {s: ShardReplay(fresh_state(state, users)) for s in shards}
        self.state = fresh_state(state, users)
        self.spec = feature_spec(self.state.cfg, self.state)
        self.max_candidates = max_candidates

    def replay(self, days: dict[int, ShardDay]) -> dict[int, Lookups]:
        return {s: self.replays[s].replay_day(d) for s, d in days.items()}

    def featurize(self, p: PartInputs) -> list[tuple[str, Lists]]:
        return featurize_part(p, self.state, self.spec, self.max_candidates)

    def tables(self) -> dict[int, ShardTables]:
        return {s: r.tables() for s, r in self.replays.items()}

    def peak_rss_mb(self) -> float:
        """This worker process's peak resident memory (Linux reports KiB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RayPool:
    """The driver's handle on the actors (thread-safe: the featurising threads share it)."""

    def __init__(self, ray: Any, actors: list[Any], shards: int):
        self.ray, self.actors, self.shards = ray, actors, shards
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._peak: list[float] = []  # each actor's peak RSS, read when the tables are

    def _mine(self, a: int) -> list[int]:
        return list(range(a, self.shards, len(self.actors)))

    def replay(self, days: list[ShardDay]) -> list[Lookups]:
        calls = [
            actor.replay.remote({s: days[s] for s in self._mine(a)})
            for a, actor in enumerate(self.actors)
        ]
        out: dict[int, Lookups] = {}
        for got in self.ray.get(calls):
            out.update(got)
        return [out[s] for s in range(self.shards)]

    def featurize(self, p: PartInputs) -> list[tuple[str, Lists]]:
        with self._lock:
            actor = self.actors[next(self._next) % len(self.actors)]
        result: list[tuple[str, Lists]] = self.ray.get(actor.featurize.remote(p))
        return result

    def tables(self) -> list[ShardTables]:
        out: dict[int, ShardTables] = {}
        for got in self.ray.get([actor.tables.remote() for actor in self.actors]):
            out.update(got)
        self._peak = [
            round(m, 1) for m in self.ray.get([a.peak_rss_mb.remote() for a in self.actors])
        ]
        return [out[s] for s in range(self.shards)]

    def stats(self) -> dict[str, object]:
        return {"workers": len(self.actors), "worker_peak_rss_mb": self._peak}


@contextlib.contextmanager
def ray_pool(
    cfg: Any, state: FeatureState, users: pd.DataFrame | None, max_candidates: int
) -> Iterator[RayPool]:
    """W actors on a local Ray cluster started for the run (stopped after it), or on the
    cluster at ``cfg.address`` (left running)."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise RuntimeError("--engine ray needs Ray: pip install 'ranker[cluster]'") from e
    started = not ray.is_initialized()
    if started:
        ray.init(
            # "local": a new cluster for this run, never one found on the machine by chance
            address=cfg.address or "local",
            num_cpus=None if cfg.address else cfg.workers,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    actors: list[Any] = []
    try:
        worker = ray.remote(num_cpus=1)(ShardWorker)
        shared = ray.put(state)  # once, not once per actor
        n = min(cfg.workers, cfg.shard_count)
        actors = [
            worker.remote(shared, users, list(range(a, cfg.shard_count, n)), max_candidates)
            for a in range(n)
        ]
        log.info("features on Ray: %d shards in %d actors", cfg.shard_count, n)
        yield RayPool(ray, actors, cfg.shard_count)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
