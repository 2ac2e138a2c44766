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
    f["hist_len"] = hlen[seg].astype(np.float64)
    hseg = segment_ids(sq.offsets)
    last_t = np.full(len(hlen), -1, np.int64)
    if len(sq.t_us):
        np.maximum.at(last_t, hseg, sq.t_us)
    age = np.where(last_t >= 0, (frame.t_us - last_t) / 3.6e9, NO_HISTORY_AGE_H)
    f["hist_last_age_h"] = age[seg]
    # The user's usual price, rating, ...: the mean over the history, and the candidate's gap.
    for c in state.cfg.history.item_numeric:
        j = state.items.num_names.index(c)
        vals = _hist_attr(state.items, hist_refs.rows, j)
        total = np.bincount(hseg, weights=vals, minlength=len(hlen))
        mean = np.where(hlen > 0, total / np.maximum(hlen, 1), state.items.num_defaults[j])[seg]
        f[f"hist_mean_{c}"] = mean
        f[f"{c}_minus_hist"] = np.where(hlen[seg] > 0, f[c] - mean, 0.0)
    # Same item in the history: match (request, item hash) pairs.
    f["hist_same_item"] = _pair_counts(frame.offsets, refs.hashes, sq.offsets, hist_refs.hashes)
    if group is not None:
        same = _pair_counts(frame.offsets, group, sq.offsets, state.groups(hist_refs.rows))
        f["hist_same_group"] = same
        f["hist_group_share"] = np.where(hlen[seg] > 0, same / np.maximum(hlen[seg], 1), 0.0)


def _hist_attr(items: ItemTable, rows: np.ndarray, j: int) -> np.ndarray:
    """Numeric attribute j of history items; the column median for unknown items."""
    return items.take("num_filled", rows)[:, j]


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
