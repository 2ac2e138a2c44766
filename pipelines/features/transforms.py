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
from pipelines.features.jit import jit
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
from pipelines.features.text import PAD, query_match, token_matrix, tokenize
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

    # (F, N) built row by row, then one transposing copy: cheaper than 59 strided columns.
    num = np.array([f[x.name] for x in spec.numeric], np.float32).reshape(len(spec.numeric), n)
    num = num.T.copy()  # (N, F)
    cat = _categorical(frame, spec, state, rows, seg)
    hist_num, hist_cat = sequence_tensors(frame, look, state, spec, hist_refs)
    return Features(num, cat, look.sequences.offsets, look.sequences.item_id, hist_num, hist_cat)


def _query_tokens(queries: np.ndarray) -> np.ndarray:
    """(B, Tq) hashed query tokens; each distinct query is tokenised once."""
    if len(queries) <= 16:  # a live request: its query's tokens remembered across requests
        rows = [_query_token_row(q) for q in queries]
        out = np.full((len(rows), max(1, max(map(len, rows), default=1))), PAD, np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out
    codes, uniq = pd.factorize(pd.Series(queries, dtype=object))
    return token_matrix([tokenize(q) for q in uniq], QUERY_WIDTH)[codes]


@functools.lru_cache(maxsize=100_000)
def _query_token_row(query: object) -> tuple[int, ...]:
    """One query's row of ``token_matrix`` without its padding (hashing a token does not
    depend on the other texts of the call, so the rows assemble into the same matrix)."""
    toks = tokenize(query)
    return tuple(token_matrix([toks], QUERY_WIDTH)[0, : min(len(toks), QUERY_WIDTH)].tolist())


def haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Great-circle distance in km between points 1 and 2 ((n,) arrays; NaN where a point is
    unknown)."""
    args = (np.asarray(a, np.float64) for a in (lat1, lon1, lat2, lon2))
    return _haversine(*args)


@jit
def _haversine(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    # One compiled loop instead of a dozen array calls. Its sin and cos are the C library's,
    # not numpy's vectorised ones: values may differ from the array version in the last bit,
    # the same for the batch and the live path, which both call this.
    out = np.empty(len(lat1))
    for i in range(len(lat1)):
        p1, p2 = np.radians(lat1[i]), np.radians(lat2[i])
        dlat, dlon = p2 - p1, np.radians(lon2[i] - lon1[i])
        a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
        out[i] = 2 * 6371.0088 * np.arcsin(np.sqrt(min(max(a, 0.0), 1.0)))
    return out


def _counter_features(
    f: dict[str, np.ndarray], look: Lookups, seg: np.ndarray, windows: list[str], a: float
) -> None:
    """Smoothed rates: (events + a * prior) / (impressions + a), prior = the global rate."""
    c = look.counts
    for w_name, w in zip(windows, c["global"], strict=True):
        out = _counter_window(
            c["item"][w], c["qi"][w], c["ui"][w], c["uc"][w], c["user"][w], c["global"][w], seg, a
        )  # (N, 9): columns in COUNTER_COLUMNS order
        for j, name in enumerate(COUNTER_COLUMNS):
            f[f"{name}_{w_name}"] = out[:, j]


COUNTER_COLUMNS = (
    "item_imps",
    "item_ctr",
    "item_cvr",
    "qi_imps",
    "qi_ctr",
    "ui_clicks",
    "uc_clicks",
    "uc_share",
    "user_clicks",
)


@jit
def _counter_window(
    item: np.ndarray,
    qi: np.ndarray,
    ui: np.ndarray,
    uc: np.ndarray,
    user: np.ndarray,
    glob: np.ndarray,
    seg: np.ndarray,
    a: float,
) -> np.ndarray:
    """One window's counter features per candidate, (N, 9) in ``COUNTER_COLUMNS`` order, from
    the counts of the candidate's keys (item, qi: (N, K); ui, uc: (N, 1)) and of its request's
    (user: (B, 1), glob: (B, 3)). One loop instead of some forty array calls per window; each
    value is the same float64 expression, so the bits are those of the array version."""
    out = np.empty((len(seg), 9))
    for i in range(len(seg)):
        b = seg[i]
        g0, g1, g2 = float(glob[b, 0]), float(glob[b, 1]), float(glob[b, 2])
        p_ctr = (g1 + PRIOR_CTR * PRIOR_WEIGHT) / (g0 + PRIOR_WEIGHT)
        p_cvr = (g2 + PRIOR_CVR * PRIOR_WEIGHT) / (g0 + PRIOR_WEIGHT)
        imps, q_imps = float(item[i, 0]), float(qi[i, 0])
        clicks_uc, clicks_user = float(uc[i, 0]), float(user[b, 0])
        out[i, 0] = imps
        out[i, 1] = (float(item[i, 1]) + a * p_ctr) / (imps + a)
        out[i, 2] = (float(item[i, 2]) + a * p_cvr) / (imps + a)
        out[i, 3] = q_imps
        out[i, 4] = (float(qi[i, 1]) + a * p_ctr) / (q_imps + a)
        out[i, 5] = float(ui[i, 0])
        out[i, 6] = clicks_uc
        out[i, 7] = clicks_uc / max(clicks_user, 1.0) if clicks_user > 0 else 0.0
        out[i, 8] = clicks_user
    return out


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
    out = np.array([cols[c.name] for c in spec.categorical], np.int32)
    return out.reshape(len(spec.categorical), len(rows)).T.copy()  # (N, C)


def _as_str(values: np.ndarray) -> np.ndarray:
    return np.array([None if v is None or v != v else str(v) for v in values], dtype=object)
