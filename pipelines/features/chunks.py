"""Bounded memory for ``ranker features``: a day is featurised and written in parts, and each
part is featurised in slices of requests.

A part is a run of consecutive counter buckets of at most ``max_candidates`` candidates (a
larger bucket is a part of its own), written as its own row groups: what one part holds in
flight no longer grows with a day's traffic. A day that fits is one part, as before.

Inside a part, ``featurize`` computes every feature of a request from that request alone (its
candidates, its counters, its history), so slices of whole requests give the numbers of the
whole part at once; the slices' outputs are joined before the part is written. Values never
depend on the setting; the files do only through their row groups (and the manifest's
normalisation statistics, summed part by part): tests/pipelines/test_features.py checks both.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipelines.features.history import Sequences
from pipelines.features.state import FeatureState, Lookups
from pipelines.features.transforms import Features, FeatureSpec, RequestFrame, featurize

DEFAULT_MAX_CANDIDATES = 65_536
PER_REQUEST_TABLES = ("user", "global")  # counter tables looked up per request, not candidate


def request_slices(offsets: np.ndarray, max_candidates: int) -> list[tuple[int, int]]:
    """Consecutive request ranges [b0, b1) of at most ``max_candidates`` candidates each (a
    larger request gets a range of its own)."""
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    out, b0, n = [], 0, len(offsets) - 1
    while b0 < n:
        # the last request whose candidates still fit, at least one request
        b1 = int(np.searchsorted(offsets, offsets[b0] + max_candidates, side="right")) - 1
        b1 = min(max(b1, b0 + 1), n)
        out.append((b0, b1))
        b0 = b1
    return out


def featurize_in_slices(
    frame: RequestFrame,
    look: Lookups,
    state: FeatureState,
    spec: FeatureSpec,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> Features:
    """``featurize(frame, look, state, spec)``, a slice of requests at a time."""
    slices = request_slices(frame.offsets, max_candidates)
    if len(slices) <= 1:
        return featurize(frame, look, state, spec)
    parts = [featurize(*_take(frame, look, b0, b1), state, spec) for b0, b1 in slices]
    return Features(
        num=np.concatenate([p.num for p in parts]),
        cat=np.concatenate([p.cat for p in parts]),
        hist_offsets=_join_offsets([p.hist_offsets for p in parts]),
        hist_item_ids=np.concatenate([p.hist_item_ids for p in parts]),
        hist_num=np.concatenate([p.hist_num for p in parts]),
        hist_cat=np.concatenate([p.hist_cat for p in parts]),
    )


def _take(frame: RequestFrame, look: Lookups, b0: int, b1: int) -> tuple[RequestFrame, Lookups]:
    """Requests [b0, b1) of a frame and its lookups, offsets rebased to 0."""
    return take_frame(frame, b0, b1), take_lookups(look, frame.offsets, b0, b1)


def take_lookups(look: Lookups, offsets: np.ndarray, b0: int, b1: int) -> Lookups:
    """The lookups of requests [b0, b1) (views); ``offsets``: the requests' candidates."""
    lo, hi = int(offsets[b0]), int(offsets[b1])
    rows, reqs = slice(lo, hi), slice(b0, b1)
    sq = look.sequences
    h0, h1 = int(sq.offsets[b0]), int(sq.offsets[b1])
    counts = {
        t: {w: a[reqs] if t in PER_REQUEST_TABLES else a[rows] for w, a in by_window.items()}
        for t, by_window in look.counts.items()
    }
    seqs = Sequences(
        offsets=sq.offsets[b0 : b1 + 1] - h0,
        item_id=sq.item_id[h0:h1],
        t_us=sq.t_us[h0:h1],
        ordered=sq.ordered[h0:h1],
    )
    return replace(look, counts=counts, sequences=seqs)


def take_frame(frame: RequestFrame, b0: int, b1: int) -> RequestFrame:
    """Requests [b0, b1) of a frame (views), offsets rebased to 0."""
    lo, hi = int(frame.offsets[b0]), int(frame.offsets[b1])
    rows, reqs = slice(lo, hi), slice(b0, b1)
    refs = frame.item_refs
    return RequestFrame(
        t_us=frame.t_us[reqs],
        user_id=frame.user_id[reqs],
        query=frame.query[reqs],
        lat=frame.lat[reqs],
        lon=frame.lon[reqs],
        context={k: v[reqs] for k, v in frame.context.items()},
        offsets=frame.offsets[b0 : b1 + 1] - lo,
        item_id=frame.item_id[rows],
        overrides=None
        if frame.overrides is None
        else {k: v[rows] for k, v in frame.overrides.items()},
        item_refs=None if refs is None else refs[rows],
    )


def concat_lookups(looks: list[Lookups]) -> Lookups:
    """The lookups of consecutive request blocks (counter buckets) as one block."""
    counts = {
        table: {w: np.concatenate([lk.counts[table][w] for lk in looks]) for w in by_window}
        for table, by_window in looks[0].counts.items()
    }
    seqs = [lk.sequences for lk in looks]
    return Lookups(
        counts=counts,
        sequences=Sequences(
            offsets=_join_offsets([s.offsets for s in seqs]),
            item_id=np.concatenate([s.item_id for s in seqs]),
            t_us=np.concatenate([s.t_us for s in seqs]),
            ordered=np.concatenate([s.ordered for s in seqs]),
        ),
    )


def _join_offsets(parts: list[np.ndarray]) -> np.ndarray:
    out, base = [np.zeros(1, np.int64)], 0
    for off in parts:
        out.append(np.asarray(off[1:], np.int64) + base)
        base += int(off[-1])
    return np.concatenate(out)
