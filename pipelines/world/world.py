"""The simulated world as a library object.

>>> world = World.load("runs/demo/world")
>>> s = world.sample_searches(10, np.random.default_rng(0))        # after the logged period
>>> rel = world.relevance(s)                                        # oracle, per candidate
>>> r = world.respond(s, 0, ranked_item_ids, np.random.default_rng(1))  # clicks and orders

``World.create(cfg)`` draws a new world; ``save``/``load`` round-trip it exactly through
``world.json`` (every parameter) and two Parquet tables with every merchant's and user's traits.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io import write_json_atomic, write_parquet_atomic
from pipelines.world.clicks import (
    Response,
    attractiveness,
    examination,
    order_probability,
    respond,
)
from pipelines.world.config import (
    CATEGORIES,
    DISTRICTS,
    GENERIC_QUERIES,
    ORIGIN_LAT,
    ORIGIN_LON,
    WorldConfig,
)
from pipelines.world.entities import N_STYLE, Items, Users, make_items, make_users
from pipelines.world.policy import LoggingPolicy
from pipelines.world.relevance import true_relevance
from pipelines.world.searches import QueryBook, Searches, sample_searches

FORMAT = "ranker-world/1"
KM_PER_DEG_LAT = 111.32
KM_PER_DEG_LON = KM_PER_DEG_LAT * float(np.cos(np.radians(ORIGIN_LAT)))
# Independent random streams, so that changing one part of the world leaves the others as they were.
STREAM_ITEMS, STREAM_USERS, STREAM_SEARCHES, STREAM_POLICY, STREAM_CLICKS = 1, 2, 3, 4, 5


def to_latlon(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ORIGIN_LAT + np.asarray(y) / KM_PER_DEG_LAT, ORIGIN_LON + np.asarray(x) / KM_PER_DEG_LON


def to_km(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in km from lat/lon; the inverse of ``to_latlon``."""
    return (np.asarray(lon) - ORIGIN_LON) * KM_PER_DEG_LON, (
        np.asarray(lat) - ORIGIN_LAT
    ) * KM_PER_DEG_LAT


class World:
    def __init__(self, cfg: WorldConfig, items: Items, users: Users):
        self.cfg = cfg
        self.items = items
        self.users = users
        self.book = QueryBook(items.brand_names, items.brand_category)
        self.policy = LoggingPolicy(items, cfg.policy)
        self.start_s = int(datetime.fromisoformat(cfg.start).timestamp())
        self.end_s = self.start_s + cfg.days * 86400
        self._item_index = {iid: i for i, iid in enumerate(items.item_id)}
        self._user_index = {uid: i for i, uid in enumerate(users.user_id)}

    # ---- construction and persistence -------------------------------------------------------
    @classmethod
    def create(cls, cfg: WorldConfig) -> World:
        items = make_items(cfg, np.random.default_rng([cfg.seed, STREAM_ITEMS]))
        users = make_users(cfg, np.random.default_rng([cfg.seed, STREAM_USERS]))
        return cls(cfg, items, users)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "start": self.cfg.start,
            "end_unix_s": self.end_s,
            "relevance_scale": "real number in [0, 4]: 4 * sigmoid((utility - centre) / scale); "
            "oracle NDCG uses gain 2^rel - 1",
            "categories": [asdict(c) for c in CATEGORIES],
            "districts": [list(d) for d in DISTRICTS],
            "generic_queries": [list(q) for q in GENERIC_QUERIES],
            "brands": [
                {"name": n, "category": CATEGORIES[int(c)].name}
                for n, c in zip(self.items.brand_names, self.items.brand_category, strict=True)
            ],
            "origin": {"lat": ORIGIN_LAT, "lon": ORIGIN_LON},
        }
        write_json_atomic(meta, path / "world.json")
        it = self.items
        write_parquet_atomic(
            pa.table(
                {
                    "item_id": pa.array(it.item_id, pa.string()),
                    "category": it.category,
                    "brand": it.brand,
                    "district": it.district,
                    "x": it.x,
                    "y": it.y,
                    "price_level": it.price_level,
                    "avg_price": it.avg_price,
                    "rating": it.rating,
                    "review_count": it.review_count,
                    "open_hour": it.open_hour,
                    "close_hour": it.close_hour,
                    "title": pa.array(it.title, pa.string()),
                    "quality": it.quality,
                    **{f"style_{d}": it.style[:, d] for d in range(it.style.shape[1])},
                }
            ),
            path / "items.parquet",
        )
        us = self.users
        cols: dict[str, Any] = {
            "user_id": pa.array(us.user_id, pa.string()),
            "home_district": us.home_district,
            "home_x": us.home_x,
            "home_y": us.home_y,
            "budget": us.budget,
            "price_sensitivity": us.price_sensitivity,
            "distance_sensitivity": us.distance_sensitivity,
            "activity": us.activity,
            "device": pa.array(us.device, pa.string()),
            "member": us.member,
        }
        for c, cat in enumerate(CATEGORIES):
            cols[f"taste_{cat.name}"] = us.taste[:, c]
        for d in range(us.style.shape[1]):
            cols[f"style_{d}"] = us.style[:, d]
        write_parquet_atomic(pa.table(cols), path / "users.parquet")

    @classmethod
    def load(cls, path: str | Path) -> World:
        import json

        path = Path(path)
        meta_file = path / "world.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"no world.json in {path}: not a world directory")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_file}: format {meta.get('format')!r}, expected {FORMAT!r}")
        cfg = WorldConfig.from_dict(meta["config"])
        t = pq.read_table(path / "items.parquet").to_pydict()
        brand_names = [b["name"] for b in meta["brands"]]
        cat_index = {c.name: k for k, c in enumerate(CATEGORIES)}
        items = Items(
            item_id=np.array(t["item_id"], dtype=object),
            category=np.array(t["category"]),
            brand=np.array(t["brand"]),
            district=np.array(t["district"]),
            x=np.array(t["x"]),
            y=np.array(t["y"]),
            price_level=np.array(t["price_level"]),
            avg_price=np.array(t["avg_price"]),
            rating=np.array(t["rating"]),
            review_count=np.array(t["review_count"]),
            open_hour=np.array(t["open_hour"]),
            close_hour=np.array(t["close_hour"]),
            title=np.array(t["title"], dtype=object),
            quality=np.array(t["quality"]),
            style=np.stack([np.array(t[f"style_{d}"]) for d in range(N_STYLE)], axis=1),
            brand_names=brand_names,
            brand_category=np.array([cat_index[b["category"]] for b in meta["brands"]]),
        )
        u = pq.read_table(path / "users.parquet").to_pydict()
        users = Users(
            user_id=np.array(u["user_id"], dtype=object),
            home_district=np.array(u["home_district"]),
            home_x=np.array(u["home_x"]),
            home_y=np.array(u["home_y"]),
            taste=np.stack([np.array(u[f"taste_{c.name}"]) for c in CATEGORIES], axis=1),
            style=np.stack([np.array(u[f"style_{d}"]) for d in range(N_STYLE)], axis=1),
            budget=np.array(u["budget"]),
            price_sensitivity=np.array(u["price_sensitivity"]),
            distance_sensitivity=np.array(u["distance_sensitivity"]),
            activity=np.array(u["activity"]),
            device=np.array(u["device"], dtype=object),
            member=np.array(u["member"]),
        )
        return cls(cfg, items, users)

    # ---- searches ----------------------------------------------------------------------------
    def sample_searches(
        self,
        n: int,
        rng: np.random.Generator,
        start_s: int | None = None,
        days: float = 1.0,
        id_prefix: str = "s",
        user_pool: np.ndarray | None = None,
    ) -> Searches:
        """New searches from ``start_s`` (default: the end of the logged period) on, by the
        users in ``user_pool`` (indices; default everyone)."""
        start = self.end_s if start_s is None else start_s
        s = sample_searches(
            self.cfg, self.items, self.users, self.book, rng, n, start, days, id_prefix, user_pool
        )
        # Searches travel as lat/lon (logs, HTTP); snap to the round trip so that a search read
        # back from a log gives bit-identical relevance.
        lat, lon = to_latlon(s.x, s.y)
        s.x, s.y = to_km(lat, lon)
        return s

    def searches_from_requests(self, frame: pd.DataFrame) -> Searches:
        """Searches from logged or served requests.

        ``frame`` needs ``request_id, ts, user_id, query, lat, lon`` and ``item_ids`` (the
        candidates, as a list per row). Raises ``KeyError`` naming unknown users or items.
        """
        user = self.user_index(frame["user_id"].to_numpy())
        ts = pd.to_datetime(frame["ts"], utc=True)
        t = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
        x, y = to_km(frame["lat"].to_numpy(np.float64), frame["lon"].to_numpy(np.float64))
        intents = [self.book.intent(q) for q in frame["query"]]
        cands = [self.item_index(np.asarray(c, dtype=object)) for c in frame["item_ids"]]
        return Searches(
            request_id=frame["request_id"].astype(str).to_numpy(dtype=object),
            user=user,
            t=np.asarray(t, dtype=np.int64),
            x=x,
            y=y,
            query=frame["query"].to_numpy(dtype=object),
            kind=np.array([i.kind for i in intents]),
            category=np.array([i.category for i in intents]),
            brand=np.array([i.brand for i in intents]),
            modifier=np.array([i.modifier for i in intents]),
            device=self.users.device[user],
            candidates=cands,
        )

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        missing = [u for u in ids if str(u) not in self._user_index]
        if missing:
            raise KeyError(f"{len(missing)} user(s) unknown to this world, e.g. {missing[:3]}")
        return np.array([self._user_index[str(u)] for u in ids], dtype=np.int64)

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        missing = [i for i in ids if str(i) not in self._item_index]
        if missing:
            raise KeyError(f"{len(missing)} item(s) unknown to this world, e.g. {missing[:3]}")
        return np.array([self._item_index[str(i)] for i in ids], dtype=np.int64)

    # ---- the oracle and the simulated users -------------------------------------------------
    def relevance(self, s: Searches, list_effect: float | None = None) -> list[np.ndarray]:
        """True relevance (0..4) of every candidate of every search, in candidate-set order."""
        strength = self.cfg.list_effect if list_effect is None else list_effect
        rel, _ = true_relevance(self.items, self.users, self.cfg.relevance, strength, s)
        return rel

    def relevance_parts(self, s: Searches) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(relevance, relevance with the list-context terms switched off) per search."""
        return true_relevance(self.items, self.users, self.cfg.relevance, self.cfg.list_effect, s)

    def respond(
        self, s: Searches, k: int, ranked_item_ids: np.ndarray, rng: np.random.Generator
    ) -> Response:
        """Clicks and orders of search ``k``'s user on the list shown in ``ranked_item_ids`` order.

        The shown items must be candidates of the search (a ranking may show fewer, e.g. top_k).
        """
        cand = s.candidates[k]
        pos_in_set = {int(i): j for j, i in enumerate(cand)}
        shown = self.item_index(np.asarray(ranked_item_ids, dtype=object))
        bad = [self.items.item_id[i] for i in shown if int(i) not in pos_in_set]
        if bad:
            raise ValueError(
                f"ranking shows items that are not candidates of the search: {bad[:3]}"
            )
        rel = self.relevance(s.take(np.array([k])))[0]
        return respond(rel[[pos_in_set[int(i)] for i in shown]], rng, self.cfg.clicks)

    def examination_curve(self, n: int) -> np.ndarray:
        """Examination probability of positions 1..n for a user who has not stopped yet."""
        return examination(np.arange(1, n + 1), self.cfg.clicks)

    def effective_examination(
        self, s: Searches, rng: np.random.Generator, n: int = 20
    ) -> np.ndarray:
        """Chance that position 1..n is examined at all under the logging policy's rankings.

        Users stop after an order (and sometimes after a click), so the effective curve falls
        faster than ``examination_curve``; it is what position-bias estimates from clicks see.
        Computed exactly from the click model, averaged over the searches ``s``.
        """
        p = self.cfg.clicks
        rel = self.relevance(s)
        orders = self.policy.rank(s, rng, np.zeros(len(s), dtype=bool))
        total, count = np.zeros(n), np.zeros(n)
        exam = examination(np.arange(1, n + 1), p)
        for r, o in zip(rel, orders, strict=True):
            shown = r[o][:n]
            click = attractiveness(shown, p)
            stop = click * (
                order_probability(shown, p) * (1 - p.stop_after_click) + p.stop_after_click
            )
            alive = np.concatenate([[1.0], np.cumprod(1 - exam[: len(shown)] * stop)[:-1]])
            m = len(shown)
            total[:m] += alive * exam[:m]
            count[:m] += 1
        curve = total / np.maximum(count, 1)
        return curve / curve[0]
