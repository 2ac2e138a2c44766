"""A straightforward ranking server: the baseline that our serving is compared with.

Issue 12 asks how ``ranker serve`` compares with the server a team usually writes first:
"FastAPI + pydantic + torch eager, features in Python per candidate". This is that server. It
answers the same POST /v1/rank bodies as ours and does the same work for each one. For every
candidate, a Python loop builds the feature row from the same feature state, held in plain
dicts: item attributes, item / query-item / user-item / user-category counters, the user's
50-click history, and list comparisons. That gives the same 59 numeric and 9 categorical
features. LightGBM's ``Booster.predict`` gives the baseline score and rank. The Transformer
re-ranker then runs in eager PyTorch. On the snapshot state its features equal ours (checked to
1e-5). Its scores can still differ a little: its counters stay at the snapshot, while ours
advance to the request time. It is written for the demo's feature configuration, as such a
server would be.

    python benchmarks/naive_server.py --run runs/demo --port 8100 --workers 2 [--device auto]

``benchmarks/serve_load.py`` runs it beside ours and prints the ratio.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

from pipelines.features.keys import hash_strings
from pipelines.features.sequence_features import NO_HISTORY_AGE_H
from pipelines.features.state import FeatureState, normalize_query
from pipelines.features.text import BM25_B, BM25_K1, PAD, token_matrix, tokenize
from pipelines.features.transforms import DEFAULT_DISTANCE_KM, PRIOR_CTR, PRIOR_CVR, PRIOR_WEIGHT
from ranker.registry import resolve
from ranker.train.checkpoint import load_model

M64 = 2**64 - 1
ZERO = ((0, 0, 0), (0, 0, 0))  # the counts of a key never seen, per window


class Candidate(BaseModel):
    item_id: str


class RankRequest(BaseModel):
    user_id: str
    query: str
    ts: datetime
    model: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    candidates: list[Candidate]


class RankedItem(BaseModel):
    item_id: str
    score: float
    rank: int


class RankResponse(BaseModel):
    items: list[RankedItem]


def combine(a: int, b: int) -> int:
    """``pipelines.features.keys.combine`` of two 64-bit keys, on Python ints."""
    h = (a * 0x9E3779B97F4A7C15 + b) & M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dlon = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


def pct(sorted_values: list[float], x: float) -> float:
    """Ascending rank of x among the values, in [0, 1], ties averaged (0.5 when alone)."""
    n = len(sorted_values)
    lo, hi = bisect.bisect_left(sorted_values, x), bisect.bisect_right(sorted_values, x)
    return (lo + hi - 1) / 2 / (n - 1) if n > 1 else 0.5


def vocab(values: list[str]) -> dict[str, int]:
    return {v: i + 1 for i, v in enumerate(values)}  # 0: unknown


class NaiveRanker:
    def __init__(self, run: Path, device: str):
        st = FeatureState.load(run / "lists" / "state")
        ref = resolve(run / "registry" / "transformer")
        card = ref.card()
        assert card.reranker is not None and card.baseline is not None
        base = resolve(card.baseline, registry=ref.registry)
        fm = card.feature_manifest
        self.num_names = fm.numeric_names + list(card.reranker["inputs"])
        self.cat_names = ["cat_" + name for name in fm.categorical_names]
        self.lgb_names = base.card().details["feature_names"]  # 59 numeric, 8 "cat_*"
        self.booster = lgb.Booster(model_file=str(base.path / "model.txt"))
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(auto if device == "auto" else device)
        self.model = load_model(ref.path / "checkpoint.pt")[0].to(self.device).eval()
        # The state as plain Python dicts.
        self.cfg, it = st.cfg, st.items
        assert it.text is not None and it.sim_text is not None and it.idf is not None
        assert it.lat is not None and it.lon is not None and it.group is not None
        assert it.open_hour is not None and it.close_hour is not None
        self.defaults = dict(zip(it.num_names, it.num_defaults.tolist(), strict=True))
        self.unknown: dict[str, Any] = {
            "hash": None, "attrs": self.defaults, "id": 0, "group": 0, "where": (math.nan,) * 4,
            "cat": {f"cat_{c}": 0 for c in it.cat_names}, "text": [], "sim": set(),
        }  # fmt: skip
        self.items: dict[str, dict[str, Any]] = {}
        for r, item_id in enumerate(it.ids.tolist()):
            attrs = np.where(np.isnan(it.num[r]), it.num_defaults, it.num[r]).tolist()
            self.items[item_id] = {
                "hash": int(it.hashes[r]),
                "attrs": dict(zip(it.num_names, attrs, strict=True)),
                "cat": {f"cat_{c}": int(v) for c, v in zip(it.cat_names, it.cat[r], strict=True)},
                "id": int(it.id_index[r]),
                "group": int(it.group[r]),
                "where": tuple(float(v[r]) for v in (it.lat, it.lon, it.open_hour, it.close_hour)),
                "text": [t for t in it.text[r].tolist() if t != PAD],
                "sim": {t for t in it.sim_text[r].tolist() if t != PAD},
            }
        self.idf = dict(zip(it.idf.tokens.tolist(), it.idf.idf.tolist(), strict=True))
        self.avg_len = max(it.avg_text_len, 1e-9)
        self.windows = st.window_names
        self.counts: dict[str, dict[int, tuple[tuple[int, ...], ...]]] = {}
        for name, table in st.counters.items():
            keys = table.index.keys().tolist()
            per_w = [v.tolist() for v in table.lookup_ids(np.arange(len(keys))).values()]
            self.counts[name] = {k: tuple(tuple(c[i]) for c in per_w) for i, k in enumerate(keys)}
        self.history = st.history.stored()
        self.devices = vocab(st.context_vocabs["device"].values)
        uv = {n: vocab(v.values) for n, v in st.user_vocabs.items()}
        self.users = {
            u: {f"cat_user_{n}": uv[n].get(str(v), 0) for n, v in zip(uv, row, strict=True)}
            for u, row in st._user_dict.items()
        }
        self.no_user = {f"cat_user_{n}": 0 for n in uv}

    def score(self, req: RankRequest) -> list[float]:
        cfg, t_us = self.cfg, int(req.ts.timestamp() * 1_000_000)
        t_s, ctx = t_us // 1_000_000, req.context
        lat, lon = (math.nan if ctx.get(k) is None else float(ctx[k]) for k in ("lat", "lon"))
        hour, weekday = (t_s % 86400) / 3600.0, ((t_s // 86400) + 3) % 7
        hu = int(hash_strings([req.user_id])[0])
        hq = int(hash_strings([normalize_query(req.query)])[0])
        q_toks = [t for t in token_matrix([tokenize(req.query)], 8)[0].tolist() if t != PAD]
        hist = [e for e in self.history.get(req.user_id, []) if e[0] < t_us][-cfg.history.max_len :]
        hist_items = [self.items.get(i, self.unknown) for _, i, _ in hist]
        same_item, same_group = Counter(e[1] for e in hist), Counter(h["group"] for h in hist_items)
        hist_mean = {
            c: sum(h["attrs"][c] for h in hist_items) / len(hist) if hist else self.defaults[c]
            for c in cfg.history.item_numeric
        }
        g, user = self.counts["global"].get(0, ZERO), self.counts["user"].get(hu, ZERO)
        context = {
            "cat_hour": 1 + (t_s % 86400) // 3600,
            "cat_weekday": 1 + weekday,
            "cat_req_device": self.devices.get(str(ctx.get("device")), 0),
            **self.users.get(req.user_id, self.no_user),
        }
        a = cfg.counters.prior_strength
        rows: list[dict[str, Any]] = []
        for c in req.candidates:  # one candidate at a time
            it = self.items.get(c.item_id, self.unknown)
            ih, group = it["hash"] or int(hash_strings([c.item_id])[0]), it["group"]
            f = {**it["attrs"], **it["cat"], **context, "cat_item_id": it["id"]}
            f["item_known"], f["hour"], f["weekday"] = float(it is not self.unknown), hour, weekday
            i_lat, i_lon, op, cl = it["where"]
            known = not math.isnan(lat + lon + i_lat + i_lon)
            f["distance_km"] = (
                haversine_km(lat, lon, i_lat, i_lon) if known else DEFAULT_DISTANCE_KM
            )
            is_open = (op <= hour < cl) or hour + 24.0 < cl
            f["open_now"] = 0.5 if math.isnan(op) or math.isnan(cl) else float(is_open)
            toks = it["text"]
            f["text_match"] = len({q for q in q_toks if q in toks}) / max(len(set(q_toks)), 1)
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(toks) / self.avg_len)
            tf = [(q, toks.count(q)) for q in q_toks]
            f["bm25"] = sum(self.idf.get(q, 0.0) * n * (BM25_K1 + 1) / (n + norm) for q, n in tf)
            item = self.counts["item"].get(ih, ZERO)
            qi = self.counts["qi"].get(combine(hq, ih), ZERO)
            ui = self.counts["ui"].get(combine(hu, ih), ZERO)
            uc = self.counts["uc"].get(combine(hu, group), ZERO)
            for w, name in enumerate(self.windows):
                p_ctr = (g[w][1] + PRIOR_CTR * PRIOR_WEIGHT) / (g[w][0] + PRIOR_WEIGHT)
                p_cvr = (g[w][2] + PRIOR_CVR * PRIOR_WEIGHT) / (g[w][0] + PRIOR_WEIGHT)
                f[f"item_imps_{name}"] = item[w][0]
                f[f"item_ctr_{name}"] = (item[w][1] + a * p_ctr) / (item[w][0] + a)
                f[f"item_cvr_{name}"] = (item[w][2] + a * p_cvr) / (item[w][0] + a)
                f[f"qi_imps_{name}"] = qi[w][0]
                f[f"qi_ctr_{name}"] = (qi[w][1] + a * p_ctr) / (qi[w][0] + a)
                f[f"ui_clicks_{name}"], f[f"uc_clicks_{name}"] = ui[w][0], uc[w][0]
                f[f"uc_share_{name}"] = uc[w][0] / user[w][0] if user[w][0] > 0 else 0.0
                f[f"user_clicks_{name}"] = user[w][0]
            f["hist_len"], f["hist_same_item"] = len(hist), same_item[c.item_id]
            f["hist_last_age_h"] = (t_us - hist[-1][0]) / 3.6e9 if hist else NO_HISTORY_AGE_H
            for col, mean in hist_mean.items():
                f[f"hist_mean_{col}"], f[f"{col}_minus_hist"] = mean, f[col] - mean if hist else 0.0
            f["hist_same_group"] = same_group[group]
            f["hist_group_share"] = same_group[group] / len(hist) if hist else 0.0
            f["_group"], f["_tie"], f["_sim"] = group, ih - 2**64 if ih >= 2**63 else ih, it["sim"]
            rows.append(f)
        self.list_features(rows)
        x = np.array([[f[n] for n in self.lgb_names] for f in rows])
        base = np.asarray(self.booster.predict(x, raw_score=True, num_threads=1)).tolist()
        if req.model == "lgbm":
            return base
        for r, i in enumerate(sorted(range(len(base)), key=lambda i: -base[i])):
            rows[i]["baseline_score"], rows[i]["baseline_rank"] = base[i], r + 1.0
        hist_num = [
            [(t_us - t) / 3.6e9, float(o), *(h["attrs"][c] for c in cfg.history.item_numeric)]
            for (t, _, o), h in zip(hist, hist_items, strict=True)
        ]
        hist_cat = [[h["id"], h["group"]] for h in hist_items]
        dev, n, nh, hn = self.device, len(rows), len(hist), 2 + len(cfg.history.item_numeric)
        with torch.inference_mode():
            scores = self.model(
                torch.tensor([[[f[k] for k in self.num_names] for f in rows]], device=dev),
                torch.tensor([[[f[k] for k in self.cat_names] for f in rows]], device=dev),
                torch.ones((1, n), dtype=torch.bool, device=dev),
                torch.tensor(hist_num, dtype=torch.float32, device=dev).reshape(1, nh, hn),
                torch.tensor(hist_cat, dtype=torch.int64, device=dev).reshape(1, nh, 2),
                torch.ones((1, nh), dtype=torch.bool, device=dev),
            )
        return [float(s) for s in scores[0].tolist()]

    def list_features(self, rows: list[dict[str, Any]]) -> None:
        """Each candidate against the others of its list: ranks, z-scores, groups, best rated."""
        n, groups = len(rows), dict[int, list[int]]()
        for i, f in enumerate(rows):
            groups.setdefault(f["_group"], []).append(i)
        for c in self.cfg.list.compare:
            vals = [f[c] for f in rows]
            ranked, mean = sorted(vals), sum(vals) / n
            by_group = {gr: sorted(vals[i] for i in idx) for gr, idx in groups.items()}
            sd = math.sqrt(max(sum(v * v for v in vals) / n - mean * mean, 0.0))
            flat = sd <= 1e-6 * max(1.0, abs(mean))
            for f in rows:
                f[f"{c}_rank"], f[f"{c}_z"] = pct(ranked, f[c]), 0.0 if flat else (f[c] - mean) / sd
                f[f"{c}_group_rank"] = pct(by_group[f["_group"]], f[c])
        best = {  # each group's members, the best rated first
            gr: sorted(idx, key=lambda i: (-rows[i]["rating"], rows[i]["_tie"]))
            for gr, idx in groups.items()
        }
        for i, f in enumerate(rows):
            members = best[f["_group"]]
            f["list_len"], f["group_count"], f["group_share"] = n, len(members), len(members) / n
            j = -1 if len(members) == 1 else members[1] if members[0] == i else members[0]
            a, b = f["_sim"], rows[j]["_sim"]
            f["best_rated_gap"] = rows[j]["rating"] - f["rating"] if j >= 0 else 0.0
            f["is_best_rated"] = float(j < 0 or f["rating"] >= rows[j]["rating"])
            f["best_rated_similarity"] = len(a & b) / len(a | b) if j >= 0 and a | b else 0.0


def create_app() -> FastAPI:
    """One worker's app (uvicorn's factory mode); its arguments come from NAIVE_* variables."""
    torch.set_num_threads(1)
    ranker = NaiveRanker(Path(os.environ["NAIVE_RUN"]), os.environ.get("NAIVE_DEVICE", "auto"))
    app = FastAPI(title="naive ranker")

    @app.get("/healthz")
    def healthz() -> dict[str, int]:
        return {"pid": os.getpid()}  # a client waiting for every worker counts the pids

    @app.post("/v1/rank")
    def rank(req: RankRequest) -> RankResponse:
        scores = ranker.score(req)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return RankResponse(
            items=[
                RankedItem(item_id=req.candidates[i].item_id, score=scores[i], rank=r + 1)
                for r, i in enumerate(order)
            ]
        )

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description="a straightforward ranking server (a benchmark)")
    ap.add_argument("--run", type=Path, default=Path("runs/demo"), help="a demo run directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    os.environ["NAIVE_RUN"], os.environ["NAIVE_DEVICE"] = str(args.run.resolve()), args.device
    uvicorn.run(
        "naive_server:create_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
