"""The feature transforms: one code path from raw request data and state lookups to tensors.

``feature_spec`` names every feature (the manifest's order); ``featurize`` computes them for B
requests and their N candidates. The batch pipeline calls it for the requests of one counter
bucket at a time, the server for one request: same function, same numbers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.features.config import FeatureConfig
from pipelines.features.items import ItemRefs
from pipelines.features.list_features import add_list_features
from pipelines.features.segments import (
    segment_ids,
)
from pipelines.features.sequence_features import (
    NO_HISTORY_AGE_H,
    add_history_features,
    sequence_tensors,
)
from pipelines.features.state import US_PER_S, FeatureState, Lookups
from pipelines.features.text import query_match, token_matrix, tokenize
from pipelines.lists.manifest import CategoricalFeature, NumericFeature

DEFAULT_DISTANCE_KM = 3.0  # when the request or the item has no location
PRIOR_CTR, PRIOR_CVR, PRIOR_WEIGHT = 0.05, 0.02, 10.0  # global-rate prior before any traffic
QUERY_WIDTH = 8


@dataclass
class RequestFrame:
    """B requests and their N candidates, raw."""

    t_us: np.ndarray  # (B,) int64
    user_id: np.ndarray  # (B,) str
    query: np.ndarray  # (B,) str
    lat: np.ndarray  # (B,) float64, NaN when unknown
    lon: np.ndarray  # (B,) float64
    context: dict[str, np.ndarray]  # request categorical columns, (B,) values
    offsets: np.ndarray  # (B + 1,)
    item_id: np.ndarray  # (N,) str
    overrides: dict[str, np.ndarray] | None = None  # numeric item attributes sent by a client
    item_refs: ItemRefs | None = None  # precomputed ``items.refs(item_id)``


@dataclass
class Features:
    num: np.ndarray  # (N, F) float32
    cat: np.ndarray  # (N, C) int32
    hist_offsets: np.ndarray  # (B + 1,)
    hist_item_ids: np.ndarray  # (M,)
    hist_num: np.ndarray  # (M, Hn) float32
    hist_cat: np.ndarray  # (M, Hc) int32


@dataclass
class FeatureSpec:
    numeric: list[NumericFeature]
    categorical: list[CategoricalFeature]
    history_numeric: list[NumericFeature]
    history_categorical: list[CategoricalFeature]

    @functools.cached_property
    def numeric_names(self) -> frozenset[str]:
        return frozenset(x.name for x in self.numeric)


def feature_spec(cfg: FeatureConfig, state: FeatureState) -> FeatureSpec:
    items = state.items
    num: list[NumericFeature] = []
    log1p = set(cfg.items.log1p)
    for j, name in enumerate(items.num_names):
        tr = "log1p" if name in log1p else "none"
        num.append(NumericFeature(name, "item", tr, float(items.num_defaults[j])))
    num.append(NumericFeature("item_known", "item"))
    num += [NumericFeature("hour", "context"), NumericFeature("weekday", "context")]
    if cfg.items.location and cfg.requests.location:
        num.append(NumericFeature("distance_km", "context", "log1p", DEFAULT_DISTANCE_KM))
    if cfg.items.hours:
        num.append(NumericFeature("open_now", "context", "none", 0.5))
    if cfg.items.text:
        num += [NumericFeature("text_match", "text"), NumericFeature("bm25", "text")]
    for w in state.window_names:
        num += [
            NumericFeature(f"item_imps_{w}", "counter", "log1p"),
            NumericFeature(f"item_ctr_{w}", "counter", "none", PRIOR_CTR),
            NumericFeature(f"item_cvr_{w}", "counter", "none", PRIOR_CVR),
            NumericFeature(f"qi_imps_{w}", "counter", "log1p"),
            NumericFeature(f"qi_ctr_{w}", "counter", "none", PRIOR_CTR),
            NumericFeature(f"ui_clicks_{w}", "counter", "log1p"),
            NumericFeature(f"uc_clicks_{w}", "counter", "log1p"),
            NumericFeature(f"uc_share_{w}", "counter"),
            NumericFeature(f"user_clicks_{w}", "counter", "log1p"),
        ]
    num += [
        NumericFeature("hist_len", "history", "log1p"),
        NumericFeature("hist_same_item", "history", "log1p"),
        NumericFeature("hist_last_age_h", "history", "log1p", NO_HISTORY_AGE_H),
    ]
    for c in cfg.history.item_numeric:
        if c not in items.num_names:
            raise ValueError(f"history.item_numeric names {c!r}, not a numeric item column")
        j = items.num_names.index(c)
        tr = "log1p" if c in log1p else "none"
        num += [
            NumericFeature(f"hist_mean_{c}", "history", tr, float(items.num_defaults[j])),
            NumericFeature(f"{c}_minus_hist", "history", "slog1p" if tr == "log1p" else "none"),
        ]
    if items.group is not None:
        num += [
            NumericFeature("hist_same_group", "history", "log1p"),
            NumericFeature("hist_group_share", "history"),
        ]
    known = {f.name for f in num}
    missing = [c for c in cfg.list.compare if c not in known]
    if missing:
        raise ValueError(f"list.compare names unknown feature(s) {missing}; known: {sorted(known)}")
    num.append(NumericFeature("list_len", "list", "log1p"))
    for c in cfg.list.compare:
        num += [NumericFeature(f"{c}_rank", "list", "none", 0.5), NumericFeature(f"{c}_z", "list")]
        if items.group is not None:
            num.append(NumericFeature(f"{c}_group_rank", "list", "none", 0.5))
    if items.group is not None:
        num += [
            NumericFeature("group_count", "list", "log1p"),
            NumericFeature("group_share", "list"),
        ]
        if "rating" in items.num_names:
            num += [
                NumericFeature("best_rated_gap", "list"),
                NumericFeature("is_best_rated", "list"),
            ]
            if items.sim_text is not None:
                num.append(NumericFeature("best_rated_similarity", "list"))

    cat: list[CategoricalFeature] = []
    if cfg.items.id_embedding:
        v = items.vocabs["item_id"]
        cat.append(
            CategoricalFeature("item_id", "item", v.size, None if v.hashed else "item_id", v.hashed)
        )
    for name in items.cat_names:
        v = items.vocabs[name]
        cat.append(CategoricalFeature(name, "item", v.size, None if v.hashed else name, v.hashed))
    cat += [CategoricalFeature("hour", "context", 25), CategoricalFeature("weekday", "context", 8)]
    for name, v in state.context_vocabs.items():
        cat.append(CategoricalFeature(f"req_{name}", "context", v.size, f"req_{name}"))
    for name, v in state.user_vocabs.items():
        cat.append(CategoricalFeature(f"user_{name}", "user", v.size, f"user_{name}"))

    hist_num = [NumericFeature("age_h", "history", "log1p"), NumericFeature("ordered", "history")]
    for c in cfg.history.item_numeric:
        j = items.num_names.index(c)
        hist_num.append(
            NumericFeature(
                c, "history", "log1p" if c in log1p else "none", float(items.num_defaults[j])
            )
        )
    v = items.vocabs["item_id"]
    hist_cat = [
        CategoricalFeature("item_id", "history", v.size, None if v.hashed else "item_id", v.hashed)
    ]
    if items.group is not None and items.group_vocab is not None:
        hist_cat.append(CategoricalFeature("group", "history", items.group_vocab.size))
    return FeatureSpec(num, cat, hist_num, hist_cat)


def featurize(
    frame: RequestFrame, look: Lookups, state: FeatureState, spec: FeatureSpec
) -> Features:
    """All features of B requests' candidates."""
    cfg, items = state.cfg, state.items
    seg = segment_ids(frame.offsets)
    n = len(frame.item_id)
    refs = frame.item_refs if frame.item_refs is not None else items.refs(frame.item_id)
    rows = refs.rows
    f: dict[str, np.ndarray] = {}

    # Item attributes: the client's value, else the item table's, else the column median.
    attrs = items.take("num_filled", rows)  # (N, F) float64
    for j, name in enumerate(items.num_names):
        v = attrs[:, j]
        if frame.overrides and name in frame.overrides:
            o = frame.overrides[name]
            v = np.where(np.isnan(o), v, o)
        f[name] = v
    f["item_known"] = (rows >= 0).astype(np.float64)

    t_s = frame.t_us // US_PER_S
    hour = ((t_s % 86400) / 3600.0)[seg]
    f["hour"] = hour
    f["weekday"] = (((t_s // 86400) + 3) % 7)[seg].astype(np.float64)  # 1970-01-01 was a Thursday
    if "distance_km" in spec.numeric_names:
        d = haversine_km(
            frame.lat[seg],
            frame.lon[seg],
            items.take("lat", rows),
            items.take("lon", rows),
        )
        f["distance_km"] = np.where(np.isnan(d), DEFAULT_DISTANCE_KM, d)
    if "open_now" in spec.numeric_names:
        op, cl = (
            items.take("open_hour", rows),
            items.take("close_hour", rows),
        )
        is_open = ((hour >= op) & (hour < cl)) | (hour + 24.0 < cl)
        f["open_now"] = np.where(np.isnan(op) | np.isnan(cl), 0.5, is_open.astype(np.float64))
    if "text_match" in spec.numeric_names:
        doc = items.take("text", rows)
        assert items.idf is not None
        f["text_match"], f["bm25"] = query_match(
            _query_tokens(frame.query), frame.offsets, doc, items.idf, items.avg_text_len
        )

    _counter_features(f, look, seg, state.window_names, cfg.counters.prior_strength)
    group = items.take("group", rows) if items.group is not None else None
    hist_refs = items.refs(look.sequences.item_id)
    add_history_features(f, frame, look, seg, state, group, refs, hist_refs)
    add_list_features(f, cfg, seg, frame.offsets, group, refs, items)

    num = np.empty((n, len(spec.numeric)), np.float32)
    for j, x in enumerate(spec.numeric):
        num[:, j] = f[x.name]
    cat = _categorical(frame, spec, state, rows, seg)
    hist_num, hist_cat = sequence_tensors(frame, look, state, spec, hist_refs)
    return Features(num, cat, look.sequences.offsets, look.sequences.item_id, hist_num, hist_cat)


def _query_tokens(queries: np.ndarray) -> np.ndarray:
    """(B, Tq) hashed query tokens; each distinct query is tokenised once."""
    if len(queries) <= 16:
        return token_matrix([tokenize(q) for q in queries], QUERY_WIDTH)
    codes, uniq = pd.factorize(pd.Series(queries, dtype=object))
    return token_matrix([tokenize(q) for q in uniq], QUERY_WIDTH)[codes]


def haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _counter_features(
    f: dict[str, np.ndarray], look: Lookups, seg: np.ndarray, windows: list[str], a: float
) -> None:
    """Smoothed rates: (events + a * prior) / (impressions + a), prior = the global rate."""
    c = look.counts
    for w_name, (w, g) in zip(windows, c["global"].items(), strict=True):
        g = g.astype(np.float64)
        p_ctr = ((g[:, 1] + PRIOR_CTR * PRIOR_WEIGHT) / (g[:, 0] + PRIOR_WEIGHT))[seg]
        p_cvr = ((g[:, 2] + PRIOR_CVR * PRIOR_WEIGHT) / (g[:, 0] + PRIOR_WEIGHT))[seg]
        item = c["item"][w].astype(np.float64)
        f[f"item_imps_{w_name}"] = item[:, 0]
        f[f"item_ctr_{w_name}"] = (item[:, 1] + a * p_ctr) / (item[:, 0] + a)
        f[f"item_cvr_{w_name}"] = (item[:, 2] + a * p_cvr) / (item[:, 0] + a)
        qi = c["qi"][w].astype(np.float64)
        f[f"qi_imps_{w_name}"] = qi[:, 0]
        f[f"qi_ctr_{w_name}"] = (qi[:, 1] + a * p_ctr) / (qi[:, 0] + a)
        f[f"ui_clicks_{w_name}"] = c["ui"][w][:, 0].astype(np.float64)
        uc = c["uc"][w][:, 0].astype(np.float64)
        user = c["user"][w][:, 0].astype(np.float64)[seg]
        f[f"uc_clicks_{w_name}"] = uc
        f[f"uc_share_{w_name}"] = np.where(user > 0, uc / np.maximum(user, 1), 0.0)
        f[f"user_clicks_{w_name}"] = user


def _categorical(
    frame: RequestFrame, spec: FeatureSpec, state: FeatureState, rows: np.ndarray, seg: np.ndarray
) -> np.ndarray:
    items = state.items
    cols: dict[str, np.ndarray] = {}
    if any(c.name == "item_id" for c in spec.categorical):
        v = items.vocabs["item_id"]
        idx = items.take("id_index", rows)
        if v.hashed and (rows < 0).any():  # new items still get their hash bucket
            idx = np.where(rows < 0, v.index(frame.item_id), idx)
        cols["item_id"] = idx
    item_cat = items.take("cat", rows)  # (N, C)
    for j, name in enumerate(items.cat_names):
        cols[name] = item_cat[:, j]
    t_s = frame.t_us // US_PER_S
    cols["hour"] = (1 + (t_s % 86400) // 3600)[seg]
    cols["weekday"] = (1 + ((t_s // 86400) + 3) % 7)[seg]
    for name, v in state.context_vocabs.items():
        values = frame.context.get(name, np.full(len(frame.t_us), None, dtype=object))
        cols[f"req_{name}"] = v.index(np.asarray(values, dtype=object))[seg]
    attrs = state.user_attributes(frame.user_id)
    for name, v in state.user_vocabs.items():
        cols[f"user_{name}"] = v.index(_as_str(attrs[name]))[seg]
    if not spec.categorical:
        return np.zeros((len(rows), 0), np.int32)
    return np.stack([cols[c.name] for c in spec.categorical], axis=1).astype(np.int32)


def _as_str(values: np.ndarray) -> np.ndarray:
    return np.array([None if v is None or v != v else str(v) for v in values], dtype=object)
