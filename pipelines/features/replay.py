"""One day of ``ranker features``: its requests and candidates as arrays, the replay of the
state through it (point in time), and the jobs that featurise it in parts.

The replay is the sequential heart of the pipeline. ``replay_day`` runs it in this process on
one ``FeatureState``; ``pipelines.features.shards`` runs the same steps on key shards (in
this process or on Ray) and gives the same lookups. Either way the parts are featurised from
``(frame, lookups)`` alone, so any process that holds the static state can do it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.features.chunks import concat_lookups, featurize_in_slices, take_frame
from pipelines.features.items import ItemRefs
from pipelines.features.log_tables import float_col
from pipelines.features.state import Events, FeatureState, Lookups
from pipelines.features.transforms import FeatureSpec, RequestFrame
from pipelines.lists.table import Lists
from pipelines.logs.clean import clean_impressions

PartJob = Callable[[], list[tuple[str, Lists]]]
# (i0, i1, b0, b1) -> the lookups of counter buckets i0..i1, which are requests b0..b1
LookupsOf = Callable[[int, int, int, int], Lookups]


@dataclass
class Day:
    """One day's requests in (time, id) order and their candidates, by request then logged
    position; ``starts``/``ends`` delimit the requests of each counter bucket."""

    req: pd.DataFrame
    offsets: np.ndarray  # (B + 1,)
    t_us: np.ndarray  # (B,) int64
    users: np.ndarray  # (B,) str
    queries: np.ndarray  # (B,) str
    item_ids: np.ndarray  # (N,) str
    clicked: np.ndarray  # (N,) bool
    ordered: np.ndarray  # (N,) bool
    positions: np.ndarray  # (N,) int64
    policy_positions: np.ndarray | None  # (N,) int64
    seg: np.ndarray  # (N,) request of each candidate
    starts: np.ndarray  # (buckets,) first request of each counter bucket
    ends: np.ndarray  # (buckets,) one past its last

    def events(self, lo: int, hi: int) -> Events:
        """Candidates ``lo:hi`` as events (impressions with their outcome)."""
        rs = self.seg[lo:hi]
        return Events(
            self.users[rs],
            self.queries[rs],
            self.item_ids[lo:hi],
            self.t_us[rs],
            self.positions[lo:hi],
            self.clicked[lo:hi],
            self.ordered[lo:hi],
        )


def prepare_day(
    day_req: pd.DataFrame,
    imp: pd.DataFrame,
    bucket_us: int,
    bad: dict[str, Counter[str]],
    shown: set[str],
) -> Day | None:
    """Clean a day's impressions and lay the day out as arrays (None: nothing was shown)."""
    imp, c = clean_impressions(imp, pd.Index(day_req["request_id"]))
    bad["impressions"].update(c)
    if "ordered" not in imp.columns:
        imp["ordered"] = False
    day_req = day_req[day_req["request_id"].isin(imp["request_id"].unique())]
    if not len(day_req):
        return None
    shown.update(day_req["request_id"])
    # Candidates grouped by request, in request order (time, id), then by logged position.
    order = pd.Index(day_req["request_id"]).get_indexer(imp["request_id"])
    imp = imp.assign(_req=order).sort_values(["_req", "position"], kind="stable")
    lens = np.bincount(imp["_req"].to_numpy(), minlength=len(day_req))
    t_us = day_req["t_us"].to_numpy(np.int64)
    bucket = t_us // bucket_us
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    return Day(
        req=day_req,
        offsets=np.concatenate([[0], np.cumsum(lens)]),
        t_us=t_us,
        users=day_req["user_id"].to_numpy(dtype=object),
        queries=day_req["query"].astype("str").to_numpy(dtype=object),
        item_ids=imp["item_id"].to_numpy(dtype=object),
        clicked=imp["clicked"].to_numpy(bool),
        ordered=imp["ordered"].to_numpy(bool),
        positions=imp["position"].to_numpy(np.int64),
        policy_positions=(
            pd.to_numeric(imp["policy_position"], errors="coerce")
            .fillna(imp["position"])
            .to_numpy(np.int64)
            if "policy_position" in imp.columns
            else None
        ),
        seg=np.repeat(np.arange(len(day_req)), lens),
        starts=starts,
        ends=np.r_[starts[1:], len(bucket)],
    )


def replay_day(day: Day, state: FeatureState) -> tuple[ItemRefs, LookupsOf]:
    """Replay one day through the state in this process: the candidates' item refs and the
    lookups of any run of its counter buckets."""
    refs = state.items.refs(day.item_ids)  # hashed and resolved once per day
    ids = state.counter_ids(day.users, day.queries, day.offsets, refs, day.clicked)
    # Replay bucket by bucket: events of a bucket are queued before its requests are looked up;
    # counters cannot see them (same bucket) and sequences only see strictly earlier clicks.
    looks: list[Lookups] = []
    offsets = day.offsets
    for s, e in zip(day.starts, day.ends, strict=True):
        state.advance(int(day.t_us[s]))
        lo, hi = offsets[s], offsets[e]
        state.observe(day.events(lo, hi), refs[lo:hi], ids.take(slice(lo, hi), day.seg[lo:hi]))
        looks.append(
            state.lookup(
                day.users[s:e],
                day.queries[s:e],
                day.t_us[s:e],
                offsets[s : e + 1] - lo,
                day.item_ids[lo:hi],
                refs[lo:hi],
                ids.take(slice(lo, hi), slice(s, e)),
            )
        )
    return refs, lambda i0, i1, b0, b1: concat_lookups(looks[i0:i1])


@dataclass
class PartInputs:
    """What featurising one part needs besides the static state (items, vocabularies)."""

    frame: RequestFrame
    look: Lookups
    request_ids: np.ndarray
    clicked: np.ndarray
    ordered: np.ndarray
    positions: np.ndarray
    policy_positions: np.ndarray | None
    randomized: np.ndarray | None
    split: np.ndarray


def part_jobs(
    day: Day,
    refs: ItemRefs,
    lookups_of: LookupsOf,
    state: FeatureState,
    max_candidates: int,
    featurize_part: Callable[[PartInputs], list[tuple[str, Lists]]],
) -> list[PartJob]:
    """The jobs that featurise a replayed day (by split), one per part: consecutive counter
    buckets of at most ``max_candidates`` candidates in all (a larger bucket is a part of its
    own), each written as its own row groups. A day that fits is one part; the setting bounds
    the memory a part holds, whatever a day's traffic."""
    day_req, offsets = day.req, day.offsets
    frame = RequestFrame(
        t_us=day.t_us,
        user_id=day.users,
        query=day.queries,
        lat=float_col(day_req, state.cfg.requests.location, 0),
        lon=float_col(day_req, state.cfg.requests.location, 1),
        context={
            c: day_req[c].astype("str").where(day_req[c].notna(), None).to_numpy(dtype=object)
            for c in state.cfg.requests.categorical
        },
        offsets=offsets,
        item_id=day.item_ids,
        item_refs=refs,
    )
    randomized = day_req["randomized"].to_numpy(bool) if "randomized" in day_req else None
    request_ids = day_req["request_id"].to_numpy(dtype=object)
    split = day_req["split"].to_numpy()
    pp = day.policy_positions

    def part_job(i0: int, i1: int) -> PartJob:
        """The job for buckets i0..i1 (requests starts[i0]..ends[i1 - 1])."""
        b0, b1 = int(day.starts[i0]), int(day.ends[i1 - 1])
        rows = slice(int(offsets[b0]), int(offsets[b1]))
        inputs = PartInputs(
            take_frame(frame, b0, b1),
            lookups_of(i0, i1, b0, b1),
            request_ids[b0:b1],
            day.clicked[rows],
            day.ordered[rows],
            day.positions[rows],
            None if pp is None else pp[rows],
            None if randomized is None else randomized[b0:b1],
            split[b0:b1],
        )
        return lambda: featurize_part(inputs)

    sizes = offsets[day.ends] - offsets[day.starts]  # candidates per bucket
    jobs, i0, size = [], 0, 0
    for i, n in enumerate(sizes):
        if i > i0 and size + n > max_candidates:
            jobs.append(part_job(i0, i))
            i0, size = i, 0
        size += int(n)
    jobs.append(part_job(i0, len(sizes)))
    return jobs


def featurize_part(
    p: PartInputs, state: FeatureState, spec: FeatureSpec, max_candidates: int
) -> list[tuple[str, Lists]]:
    """One part's lists, by split."""
    feats = featurize_in_slices(p.frame, p.look, state, spec, max_candidates)
    lab = state.cfg.labels
    labels = np.where(p.clicked, lab.get("click", 1), 0)
    labels = np.maximum(labels, np.where(p.ordered, lab.get("order", 2), 0)).astype(np.int8)
    lists = Lists(
        request_id=p.request_ids,
        offsets=p.frame.offsets,
        item_ids=p.frame.item_id,
        labels=labels,
        num=feats.num,
        cat=feats.cat,
        positions=p.positions.astype(np.int16),
        policy_positions=None
        if p.policy_positions is None
        else p.policy_positions.astype(np.int16),
        ts=p.frame.t_us.astype("datetime64[us]"),
        user_id=p.frame.user_id,
        query=p.frame.query,
        randomized=p.randomized,
        hist_offsets=feats.hist_offsets,
        hist_item_ids=feats.hist_item_ids,
        hist_num=feats.hist_num,
        hist_cat=feats.hist_cat,
    )
    parts = []
    for name in ("train", "valid", "test"):
        idx = np.flatnonzero(p.split == name)
        if len(idx):
            parts.append((name, lists if len(idx) == len(lists) else lists.select(idx)))
    return parts
