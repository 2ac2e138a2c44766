"""``ranker features``: click logs to the lists dataset (and the serving state), in partitions.

Steps: read and clean the requests (one row each) and the item and user tables; split by time;
stream the impressions into per-day scratch files; then for each day in time order, clean its
impressions, replay them through the feature state bucket by bucket (point in time), featurise
the day's requests in one vectorised call, and append them to their split. The dataset and
``state/`` appear only when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd
from tqdm import tqdm

from pipelines.features.chunks import DEFAULT_MAX_CANDIDATES
from pipelines.features.config import LOCAL, EngineConfig, FeatureConfig
from pipelines.features.engine import open_engine
from pipelines.features.items import ItemTable, Vocab
from pipelines.features.log_tables import (
    assign_splits,
    log_source,
    read_entities,
    read_requests,
    to_us,
)
from pipelines.features.partition import partition_by_day, read_day
from pipelines.features.replay import PartJob, part_jobs, prepare_day
from pipelines.features.state import US_PER_S, FeatureState
from pipelines.features.transforms import feature_spec
from pipelines.io import remove_dead_scratch, scratch_prefix
from pipelines.lists.io import ListsWriter, open_dataset, write_vocab
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists
from pipelines.logs.schema import find_table

log = logging.getLogger(__name__)
T = TypeVar("T")
DAY_US = 86400 * US_PER_S


@dataclass
class BuildResult:
    manifest: Manifest
    state_dir: Path
    seconds: dict[str, float]  # CPU-bound time per stage (stages overlap; see build_features)
    engine: dict[str, object]  # where it ran: shards, candidates per shard, workers' memory


class _Timer:
    """Seconds spent per stage, summed over calls (and over threads where a stage has several)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()  # several featurising threads on Ray

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def build_features(
    logs: Path,
    out: Path,
    cfg: FeatureConfig,
    progress: bool = True,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    engine: EngineConfig = LOCAL,
) -> BuildResult:
    """``max_candidates``: a day is featurised this many candidates at a time (whole requests;
    the output does not depend on it, the transient memory does: see ``chunks``).
    ``engine``: where the replay and the featurisation run (this process, key shards, Ray);
    the output does not depend on it either (see ``pipelines.features.engine``)."""
    logs, out = Path(logs), Path(out)
    timer = _Timer()
    t_start = time.perf_counter()
    bad: dict[str, Counter[str]] = {
        "requests": Counter(),
        "impressions": Counter(),
        "items": Counter(),
        "users": Counter(),
    }
    req = read_requests(logs, bad)
    items_frame = read_entities(logs, "items", "item_id", bad)
    assert items_frame is not None  # an absent items table reads as an empty one
    users_frame = read_entities(logs, "users", "user_id", bad)
    req = req.sort_values(["ts", "request_id"], kind="stable").reset_index(drop=True)
    req["t_us"] = to_us(req["ts"])
    req["split"] = assign_splits(req["t_us"].to_numpy(), cfg)
    req["day"] = req["t_us"] // DAY_US

    items = ItemTable.build(items_frame, cfg)
    train = req[req["split"] == "train"]
    context_vocabs = {
        c: Vocab.build(train[c] if c in train else pd.Series([], dtype=object), cfg.items.max_vocab)
        for c in cfg.requests.categorical
    }
    missing_ctx = [c for c in cfg.requests.categorical if c not in req.columns]
    if missing_ctx:
        raise ValueError(f"requests table lacks the configured categorical column(s) {missing_ctx}")
    user_vocabs: dict[str, Vocab] = {}
    if cfg.users.categorical:
        if users_frame is None or any(c not in users_frame.columns for c in cfg.users.categorical):
            raise ValueError(f"users table lacks the configured column(s) {cfg.users.categorical}")
        user_vocabs = {
            c: Vocab.build(users_frame[c].astype("str"), cfg.items.max_vocab)
            for c in cfg.users.categorical
        }
    state = FeatureState(cfg, items, context_vocabs, users_frame, user_vocabs)
    spec = feature_spec(cfg, state)

    manifest = Manifest(
        numeric=spec.numeric,
        categorical=spec.categorical,
        history_numeric=spec.history_numeric,
        history_categorical=spec.history_categorical,
        history_max_len=cfg.history.max_len,
        labels=dict(cfg.labels),
        max_label=max(cfg.labels.values(), default=1),
        source=log_source(logs),
        config=cfg.to_dict(),
        columns=[
            c
            for c in ("ts", "user_id", "query", "positions", "randomized", "history")
            if c != "randomized" or "randomized" in req.columns
        ],
    )
    imp_path = find_table(logs, "impressions")
    assert imp_path is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_scratch(out.parent)  # what an interrupted run left beside its output
    scratch = Path(
        tempfile.mkdtemp(prefix=scratch_prefix("features-scratch"), suffix=".tmp", dir=out.parent)
    )
    try:
        day_of = pd.Series(req["day"].to_numpy(), index=req["request_id"].to_numpy())
        with timer("partition"):
            days, c = partition_by_day(imp_path, day_of, scratch)
        bad["impressions"].update(c)
        with open_dataset(out, manifest) as writer:
            bar = tqdm(days, desc="features", unit="day", disable=not progress, leave=False)
            shown: set[str] = set()
            # Three stages overlap: the state replay of day d (sequential by nature) runs while
            # the engine featurises the parts before it (one thread here; a thread per worker
            # on Ray) and another thread writes them (numpy and Arrow release the GIL). A few
            # parts in flight bound memory; writes keep day order.
            with (
                open_engine(engine, state, users_frame, spec, max_candidates) as eng,
                ThreadPoolExecutor(eng.in_flight) as featurizing,
                ThreadPoolExecutor(1) as writing,
            ):
                in_flight: deque[Future[list[tuple[str, Lists]]]] = deque()
                wrote: Future[None] | None = None

                def parts_of_days() -> Iterator[PartJob]:
                    """Each day replayed when its first part is needed: while the main thread
                    replays a day, the other threads featurise and write the parts before it."""
                    for d in bar:
                        with timer("replay"):
                            day_req = req[req["day"] == d]
                            imp = read_day(scratch, d)
                            day = prepare_day(day_req, imp, state.bucket_us, bad, shown)
                            if day is None:
                                continue
                            refs, lookups_of = eng.replay(day)
                            jobs = part_jobs(
                                day, refs, lookups_of, state, max_candidates, eng.featurize
                            )
                        yield from jobs

                def write_oldest() -> None:
                    nonlocal wrote
                    parts = in_flight.popleft().result()
                    if wrote is not None:
                        wrote.result()
                    wrote = writing.submit(_timed, timer, "write", _write_parts, writer, parts)

                for job in parts_of_days():
                    in_flight.append(featurizing.submit(_timed, timer, "featurize", job))
                    while len(in_flight) > eng.in_flight:
                        write_oldest()
                while in_flight:
                    write_oldest()
                if wrote is not None:
                    wrote.result()
                with timer("merge"):
                    eng.finish(state)  # key shards' counters and histories into ``state``
                engine_stats = eng.stats()
            bar.close()
            n_unshown = int((~req["request_id"].isin(list(shown))).sum())
            if n_unshown:
                bad["requests"]["request_without_impressions"] += n_unshown
            manifest.bad_rows = {k: dict(v) for k, v in bad.items() if v}
            for f in spec.categorical + spec.history_categorical:
                if f.vocab and not f.hashed:
                    write_vocab(writer.tmp, f.vocab, _vocab_values(f.vocab, state))
            with timer("state"):
                state.save(writer.tmp / "state", items_frame, users_frame)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    timer.seconds["total"] = time.perf_counter() - t_start
    log.info(
        "features: %s; seconds %s; engine %s",
        manifest.splits,
        {k: round(v, 1) for k, v in timer.seconds.items()},
        json.dumps(engine_stats),
    )
    return BuildResult(manifest, out / "state", timer.seconds, engine_stats)


def _timed(timer: _Timer, stage: str, fn: Callable[..., T], *args: object) -> T:
    with timer(stage):
        return fn(*args)


def _write_parts(writer: ListsWriter, parts: list[tuple[str, Lists]]) -> None:
    for name, lists in parts:
        writer.write(name, lists)


def _vocab_values(name: str, state: FeatureState) -> list[str]:
    if name.startswith("req_"):
        return state.context_vocabs[name[4:]].values
    if name.startswith("user_"):
        return state.user_vocabs[name[5:]].values
    return state.items.vocabs[name].values
