"""``ranker features``: click logs to the lists dataset (and the serving state), in partitions.

Steps: read and clean the requests (one row each) and the item and user tables; split by time;
stream the impressions into per-day scratch files; then for each day in time order, clean its
impressions, replay them through the feature state bucket by bucket (point in time), featurise
the day's requests in one vectorised call, and append them to their split. The dataset and
``state/`` appear only when complete.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipelines.features.chunks import (
    DEFAULT_MAX_CANDIDATES,
    concat_lookups,
    featurize_in_slices,
    take_frame,
)
from pipelines.features.config import FeatureConfig
from pipelines.features.items import ItemTable, Vocab
from pipelines.features.log_tables import (
    assign_splits,
    float_col,
    log_source,
    read_entities,
    read_requests,
    to_us,
)
from pipelines.features.partition import partition_by_day, read_day
from pipelines.features.state import US_PER_S, Events, FeatureState, Lookups
from pipelines.features.transforms import FeatureSpec, RequestFrame, feature_spec
from pipelines.io import remove_dead_scratch, scratch_prefix
from pipelines.lists.io import ListsWriter, open_dataset, write_vocab
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists
from pipelines.logs.clean import clean_impressions
from pipelines.logs.schema import find_table

log = logging.getLogger(__name__)
T = TypeVar("T")
DAY_US = 86400 * US_PER_S


@dataclass
class BuildResult:
    manifest: Manifest
    state_dir: Path
    seconds: dict[str, float]  # CPU-bound time per stage (stages overlap; see build_features)


class _Timer:
    """Seconds spent per stage, summed over calls (each stage runs in one thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def build_features(
    logs: Path,
    out: Path,
    cfg: FeatureConfig,
    progress: bool = True,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> BuildResult:
    """``max_candidates``: a day is featurised this many candidates at a time (whole requests;
    the output does not depend on it, the transient memory does: see ``chunks``)."""
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
            # one thread featurises day d - 1 and another writes day d - 2 (numpy and Arrow
            # release the GIL). A day or two in flight bound memory; writes keep day order.
            with ThreadPoolExecutor(1) as featurizing, ThreadPoolExecutor(1) as writing:
                feat: Future[list[tuple[str, Lists]]] | None = None
                wrote: Future[None] | None = None

                def parts_of_days() -> Iterator[Callable[[], list[tuple[str, Lists]]]]:
                    """Each day replayed when its first part is needed: while the main thread
                    replays a day, the other two featurise and write the parts before it."""
                    for day in bar:
                        with timer("replay"):
                            jobs = _replay_day(
                                req[req["day"] == day],
                                read_day(scratch, day),
                                state,
                                spec,
                                bad,
                                shown,
                                max_candidates,
                            )
                        yield from jobs

                for job in itertools.chain(parts_of_days(), [None]):
                    if feat is not None:
                        parts = feat.result()
                        if wrote is not None:
                            wrote.result()
                        wrote = writing.submit(_timed, timer, "write", _write_parts, writer, parts)
                    feat = featurizing.submit(_timed, timer, "featurize", job) if job else None
                if wrote is not None:
                    wrote.result()
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
        "features: %s; seconds %s",
        manifest.splits,
        {k: round(v, 1) for k, v in timer.seconds.items()},
    )
    return BuildResult(manifest, out / "state", timer.seconds)


def _timed(timer: _Timer, stage: str, fn: Callable[..., T], *args: object) -> T:
    with timer(stage):
        return fn(*args)


def _replay_day(
    day_req: pd.DataFrame,
    imp: pd.DataFrame,
    state: FeatureState,
    spec: FeatureSpec,
    bad: dict[str, Counter[str]],
    shown: set[str],
    max_candidates: int,
) -> list[Callable[[], list[tuple[str, Lists]]]]:
    """Replay one day through the state; returns the jobs that featurise it (by split), one per
    part: consecutive counter buckets of at most ``max_candidates`` candidates in all (a larger
    bucket is a part of its own), each written as its own row groups. A day that fits is one
    part; the setting bounds the memory a part holds, whatever a day's traffic."""
    imp, c = clean_impressions(imp, pd.Index(day_req["request_id"]))
    bad["impressions"].update(c)
    if "ordered" not in imp.columns:
        imp["ordered"] = False
    day_req = day_req[day_req["request_id"].isin(imp["request_id"].unique())]
    if not len(day_req):
        return []
    shown.update(day_req["request_id"])
    # Candidates grouped by request, in request order (time, id), then by logged position.
    order = pd.Index(day_req["request_id"]).get_indexer(imp["request_id"])
    imp = imp.assign(_req=order).sort_values(["_req", "position"], kind="stable")
    lens = np.bincount(imp["_req"].to_numpy(), minlength=len(day_req))
    offsets = np.concatenate([[0], np.cumsum(lens)])
    t_us = day_req["t_us"].to_numpy(np.int64)
    users = day_req["user_id"].to_numpy(dtype=object)
    queries = day_req["query"].astype("str").to_numpy(dtype=object)
    item_ids = imp["item_id"].to_numpy(dtype=object)
    clicked = imp["clicked"].to_numpy(bool)
    ordered = imp["ordered"].to_numpy(bool)
    positions = imp["position"].to_numpy(np.int64)
    policy_positions = (
        pd.to_numeric(imp["policy_position"], errors="coerce")
        .fillna(imp["position"])
        .to_numpy(np.int64)
        if "policy_position" in imp.columns
        else None
    )
    seg = np.repeat(np.arange(len(day_req)), lens)
    refs = state.items.refs(item_ids)  # hashed and resolved once per day
    ids = state.counter_ids(users, queries, offsets, refs, clicked)  # counter keys, once per day

    # Replay bucket by bucket: events of a bucket are queued before its requests are looked up;
    # counters cannot see them (same bucket) and sequences only see strictly earlier clicks.
    bucket = t_us // state.bucket_us
    looks: list[Lookups] = []
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(bucket)]
    for s, e in zip(starts, ends, strict=True):
        state.advance(int(t_us[s]))
        lo, hi = offsets[s], offsets[e]
        rs = seg[lo:hi]
        ev = Events(
            users[rs],
            queries[rs],
            item_ids[lo:hi],
            t_us[rs],
            positions[lo:hi],
            clicked[lo:hi],
            ordered[lo:hi],
        )
        state.observe(ev, refs[lo:hi], ids.take(slice(lo, hi), rs))
        looks.append(
            state.lookup(
                users[s:e],
                queries[s:e],
                t_us[s:e],
                offsets[s : e + 1] - lo,
                item_ids[lo:hi],
                refs[lo:hi],
                ids.take(slice(lo, hi), slice(s, e)),
            )
        )
    frame = RequestFrame(
        t_us=t_us,
        user_id=users,
        query=queries,
        lat=float_col(day_req, state.cfg.requests.location, 0),
        lon=float_col(day_req, state.cfg.requests.location, 1),
        context={
            c: day_req[c].astype("str").where(day_req[c].notna(), None).to_numpy(dtype=object)
            for c in state.cfg.requests.categorical
        },
        offsets=offsets,
        item_id=item_ids,
        item_refs=refs,
    )
    randomized = day_req["randomized"].to_numpy(bool) if "randomized" in day_req else None
    request_ids = day_req["request_id"].to_numpy(dtype=object)
    split = day_req["split"].to_numpy()

    def part_job(i0: int, i1: int) -> Callable[[], list[tuple[str, Lists]]]:
        """The job for buckets i0..i1 (requests starts[i0]..ends[i1 - 1])."""
        b0, b1 = int(starts[i0]), int(ends[i1 - 1])
        lo, hi = int(offsets[b0]), int(offsets[b1])
        part_frame, part_look = take_frame(frame, b0, b1), concat_lookups(looks[i0:i1])
        rows = slice(lo, hi)

        def finish() -> list[tuple[str, Lists]]:
            return _featurize_day(
                part_frame,
                part_look,
                state,
                spec,
                request_ids[b0:b1],
                clicked[rows],
                ordered[rows],
                positions[rows],
                None if policy_positions is None else policy_positions[rows],
                None if randomized is None else randomized[b0:b1],
                split[b0:b1],
                max_candidates,
            )

        return finish

    sizes = offsets[ends] - offsets[starts]  # candidates per bucket
    jobs, i0, size = [], 0, 0
    for i, n in enumerate(sizes):
        if i > i0 and size + n > max_candidates:
            jobs.append(part_job(i0, i))
            i0, size = i, 0
        size += int(n)
    jobs.append(part_job(i0, len(sizes)))
    return jobs


def _featurize_day(
    frame: RequestFrame,
    look: Lookups,
    state: FeatureState,
    spec: FeatureSpec,
    request_ids: np.ndarray,
    clicked: np.ndarray,
    ordered: np.ndarray,
    positions: np.ndarray,
    policy_positions: np.ndarray | None,
    randomized: np.ndarray | None,
    split: np.ndarray,
    max_candidates: int,
) -> list[tuple[str, Lists]]:
    feats = featurize_in_slices(frame, look, state, spec, max_candidates)
    item_ids, offsets, t_us = frame.item_id, frame.offsets, frame.t_us
    lab = state.cfg.labels
    labels = np.where(clicked, lab.get("click", 1), 0)
    labels = np.maximum(labels, np.where(ordered, lab.get("order", 2), 0)).astype(np.int8)
    lists = Lists(
        request_id=request_ids,
        offsets=offsets,
        item_ids=item_ids,
        labels=labels,
        num=feats.num,
        cat=feats.cat,
        positions=positions.astype(np.int16),
        policy_positions=None if policy_positions is None else policy_positions.astype(np.int16),
        ts=t_us.astype("datetime64[us]"),
        user_id=frame.user_id,
        query=frame.query,
        randomized=randomized,
        hist_offsets=feats.hist_offsets,
        hist_item_ids=feats.hist_item_ids,
        hist_num=feats.hist_num,
        hist_cat=feats.hist_cat,
    )
    parts = []
    for name in ("train", "valid", "test"):
        idx = np.flatnonzero(split == name)
        if len(idx):
            parts.append((name, lists if len(idx) == len(lists) else lists.select(idx)))
    return parts


def _write_parts(writer: ListsWriter, parts: list[tuple[str, Lists]]) -> None:
    for name, lists in parts:
        writer.write(name, lists)


def _vocab_values(name: str, state: FeatureState) -> list[str]:
    if name.startswith("req_"):
        return state.context_vocabs[name[4:]].values
    if name.startswith("user_"):
        return state.user_vocabs[name[5:]].values
    return state.items.vocabs[name].values
