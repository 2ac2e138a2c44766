"""Features from the user's behaviour sequence: aggregates per candidate, and the sequence itself
as tensors for the Transformer's target attention."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipelines.features.items import ItemRefs, ItemTable
from pipelines.features.jit import jit
from pipelines.features.segments import segment_ids
from pipelines.features.state import FeatureState, Lookups

if TYPE_CHECKING:
    from pipelines.features.transforms import FeatureSpec, RequestFrame

NO_HISTORY_AGE_H = 24.0 * 365  # "last click" age of a user without history


def add_history_features(
    f: dict[str, np.ndarray],
    frame: RequestFrame,
    look: Lookups,
    seg: np.ndarray,
    state: FeatureState,
    group: np.ndarray | None,
    refs: ItemRefs,
    hist_refs: ItemRefs,
) -> None:
    sq = look.sequences
    hlen = np.diff(sq.offsets)
    items, names = state.items, state.cfg.history.item_numeric
    cols = [items.num_names.index(c) for c in names]
    agg = _history_aggregates(
        np.asarray(frame.offsets, np.int64),
        np.asarray(sq.offsets, np.int64),
        np.asarray(sq.t_us, np.int64),
        np.asarray(frame.t_us, np.int64),
        items.take("num_filled", hist_refs.rows)[:, cols],
        np.stack([f[c] for c in names], axis=1) if names else np.zeros((len(seg), 0)),
        items.num_defaults[cols].astype(np.float64),
    )  # (N, 2 + 2 * len(names))
    f["hist_len"], f["hist_last_age_h"] = agg[:, 0], agg[:, 1]
    # The user's usual price, rating, ...: the mean over the history, and the candidate's gap.
    for j, c in enumerate(names):
        f[f"hist_mean_{c}"], f[f"{c}_minus_hist"] = agg[:, 2 + 2 * j], agg[:, 3 + 2 * j]
    # Same item in the history: match (request, item hash) pairs.
    f["hist_same_item"] = _pair_counts(frame.offsets, refs.hashes, sq.offsets, hist_refs.hashes)
    if group is not None:
        same = _pair_counts(frame.offsets, group, sq.offsets, state.groups(hist_refs.rows))
        f["hist_same_group"] = same
        f["hist_group_share"] = np.where(hlen[seg] > 0, same / np.maximum(hlen[seg], 1), 0.0)


def _hist_attr(items: ItemTable, rows: np.ndarray, j: int) -> np.ndarray:
    """Numeric attribute j of history items; the column median for unknown items."""
    return items.take("num_filled", rows)[:, j]


@jit
def _history_aggregates(
    offsets: np.ndarray,
    hist_offsets: np.ndarray,
    hist_t: np.ndarray,
    t_us: np.ndarray,
    hist_vals: np.ndarray,
    cand_vals: np.ndarray,
    defaults: np.ndarray,
) -> np.ndarray:
    """Per candidate: its request's history length, hours since the last event, and for each
    attribute column j the history's mean and the candidate's gap to it (0 without history).
    Sums run in event order from 0.0, as ``np.bincount`` adds: the bits of the array version."""
    k = hist_vals.shape[1]
    out = np.empty((len(cand_vals), 2 + 2 * k))
    means = np.empty(k)
    for b in range(len(offsets) - 1):
        lo, hi = hist_offsets[b], hist_offsets[b + 1]
        n = hi - lo
        last = -1
        for h in range(lo, hi):
            last = max(last, hist_t[h])
        age = (t_us[b] - last) / 3.6e9 if last >= 0 else NO_HISTORY_AGE_H
        for j in range(k):
            total = 0.0
            for h in range(lo, hi):
                total += hist_vals[h, j]
            means[j] = total / max(n, 1) if n > 0 else defaults[j]
        for i in range(offsets[b], offsets[b + 1]):
            out[i, 0] = float(n)
            out[i, 1] = age
            for j in range(k):
                out[i, 2 + 2 * j] = means[j]
                out[i, 3 + 2 * j] = cand_vals[i, j] - means[j] if n > 0 else 0.0
    return out


def _pair_counts(
    offsets: np.ndarray, key: np.ndarray, hist_offsets: np.ndarray, hist_key: np.ndarray
) -> np.ndarray:
    """For each candidate, how many history events of its request share its key."""
    return _count_matches(
        np.asarray(offsets, np.int64),
        key.astype(np.uint64),
        np.asarray(hist_offsets, np.int64),
        hist_key.astype(np.uint64),
    )


@jit
def _count_matches(
    offsets: np.ndarray, key: np.ndarray, hist_offsets: np.ndarray, hist_key: np.ndarray
) -> np.ndarray:
    out = np.zeros(len(key))
    for b in range(len(offsets) - 1):
        for i in range(offsets[b], offsets[b + 1]):
            for h in range(hist_offsets[b], hist_offsets[b + 1]):
                out[i] += key[i] == hist_key[h]
    return out


def sequence_tensors(
    frame: RequestFrame, look: Lookups, state: FeatureState, spec: FeatureSpec, hist_refs: ItemRefs
) -> tuple[np.ndarray, np.ndarray]:
    sq = look.sequences
    hseg = segment_ids(sq.offsets)
    m = len(sq.item_id)
    age_h = (frame.t_us[hseg] - sq.t_us) / 3.6e9 if m else np.zeros(0)
    items = state.items
    rows = hist_refs.rows
    cols_num = [age_h, sq.ordered.astype(np.float64)]
    cols_num += [
        _hist_attr(items, rows, items.num_names.index(c)) for c in state.cfg.history.item_numeric
    ]
    hist_num = (
        np.stack(cols_num, axis=1).astype(np.float32)
        if m
        else np.zeros((0, len(spec.history_numeric)), np.float32)
    )
    cols = []
    v = items.vocabs["item_id"]
    idx = items.take("id_index", rows)
    if v.hashed and m and (rows < 0).any():
        idx = np.where(rows < 0, v.index(sq.item_id), idx)
    cols.append(idx)
    if len(spec.history_categorical) > 1:
        cols.append(items.take("group", rows))
    hist_cat = (
        np.stack(cols, axis=1).astype(np.int32)
        if m
        else np.zeros((0, len(spec.history_categorical)), np.int32)
    )
    return hist_num, hist_cat
