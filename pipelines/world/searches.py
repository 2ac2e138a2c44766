"""Searches: who searches, what for, when, where, and which candidates retrieval returns.

A search carries a query text. The world reads the intent back from the text alone (the
``QueryBook``), so a request that reaches the server as JSON can be judged by the same world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.world.config import CATEGORIES, DISTRICTS, GENERIC_QUERIES, WorldConfig
from pipelines.world.entities import Items, Users

KIND_CATEGORY, KIND_GENERIC, KIND_BRAND = 0, 1, 2
MOD_NONE, MOD_CHEAP, MOD_DATE = 0, 1, 2
_MODIFIERS = {"none": MOD_NONE, "cheap": MOD_CHEAP, "date": MOD_DATE}
_KIND_SHARES = (0.52, 0.36, 0.12)  # category, generic, brand
_AWAY_SHARE = 0.3  # searches made away from home
_NOISE_SHARE = 0.2  # candidates retrieval adds from other categories (related, nearby)


@dataclass(frozen=True)
class Intent:
    kind: int
    category: int = -1
    brand: int = -1
    modifier: int = MOD_NONE


class QueryBook:
    """Maps query texts to intents and back; unknown texts read as a generic query."""

    def __init__(self, brand_names: list[str], brand_category: np.ndarray):
        self._by_text: dict[str, Intent] = {}
        self.category_texts = [c.synonyms for c in CATEGORIES]
        for c, cat in enumerate(CATEGORIES):
            for s in cat.synonyms:
                self._by_text[s] = Intent(KIND_CATEGORY, category=c)
        for text, mod in GENERIC_QUERIES:
            self._by_text[text] = Intent(KIND_GENERIC, modifier=_MODIFIERS[mod])
        self.brand_texts = [b.lower() for b in brand_names]
        for b, text in enumerate(self.brand_texts):
            self._by_text[text] = Intent(KIND_BRAND, category=int(brand_category[b]), brand=b)

    def intent(self, query: str) -> Intent:
        return self._by_text.get(query.strip().lower(), Intent(KIND_GENERIC))


@dataclass
class Searches:
    """A batch of searches; arrays of length B and a candidate set per search."""

    request_id: np.ndarray  # str
    user: np.ndarray  # int, user index
    t: np.ndarray  # int64, seconds since the Unix epoch (UTC)
    x: np.ndarray  # km east, where the search was made
    y: np.ndarray  # km north
    query: np.ndarray  # str
    kind: np.ndarray  # int, KIND_*
    category: np.ndarray  # int, intended category or -1
    brand: np.ndarray  # int, intended brand or -1
    modifier: np.ndarray  # int, MOD_*
    device: np.ndarray  # str
    candidates: list[np.ndarray]  # item indices per search, in no particular order

    def __len__(self) -> int:
        return len(self.user)

    def hour(self) -> np.ndarray:
        """Hour of the day as a float in [0, 24)."""
        return (self.t % 86400) / 3600.0

    def take(self, idx: np.ndarray) -> Searches:
        return Searches(
            request_id=self.request_id[idx],
            user=self.user[idx],
            t=self.t[idx],
            x=self.x[idx],
            y=self.y[idx],
            query=self.query[idx],
            kind=self.kind[idx],
            category=self.category[idx],
            brand=self.brand[idx],
            modifier=self.modifier[idx],
            device=self.device[idx],
            candidates=[self.candidates[i] for i in idx],
        )


def sample_searches(
    cfg: WorldConfig,
    items: Items,
    users: Users,
    book: QueryBook,
    rng: np.random.Generator,
    n: int,
    start_s: int,
    days: float,
    id_prefix: str = "r",
    user_pool: np.ndarray | None = None,
) -> Searches:
    """Draw ``n`` searches uniformly over ``days`` days from ``start_s``, sorted by time.

    ``user_pool``: user indices the searchers are drawn from (by activity); default all.
    """
    pool = np.arange(len(users)) if user_pool is None else np.asarray(user_pool)
    act = users.activity[pool]
    user = pool[rng.choice(len(pool), size=n, p=act / act.sum())]
    kind = rng.choice(3, size=n, p=_KIND_SHARES)
    taste = users.taste[user]  # (n, C)

    # Category searches follow the user's tastes; brand searches too, through the brand's category.
    cat_pick = _draw_rows(rng, taste)  # (n,)
    brand_pick = _draw_rows(rng, taste[:, items.brand_category])  # (n,)
    generic_pick = rng.integers(0, len(GENERIC_QUERIES), size=n)
    synonym_u = rng.random(n)

    category = np.where(kind == KIND_CATEGORY, cat_pick, -1)
    category = np.where(kind == KIND_BRAND, items.brand_category[brand_pick], category)
    brand = np.where(kind == KIND_BRAND, brand_pick, -1)
    modifier = np.where(
        kind == KIND_GENERIC, [_MODIFIERS[GENERIC_QUERIES[g][1]] for g in generic_pick], MOD_NONE
    )
    query = np.empty(n, dtype=object)
    peaks: list[tuple[float, ...]] = []
    for k in range(n):
        if kind[k] == KIND_GENERIC:
            text = GENERIC_QUERIES[generic_pick[k]][0]
            query[k] = text
            peaks.append(_GENERIC_PEAKS.get(text, (12.0, 19.0)))
        else:
            c = int(category[k])
            if kind[k] == KIND_BRAND:
                query[k] = book.brand_texts[brand[k]]
            else:
                syn = CATEGORIES[c].synonyms
                query[k] = syn[int(synonym_u[k] * len(syn))]
            peaks.append(CATEGORIES[c].peaks)
    hour = _hours_near(rng, peaks)

    day = rng.integers(0, max(1, int(np.ceil(days))), size=n)
    seconds = np.floor(hour * 3600.0).astype(np.int64) + day * 86400
    seconds = np.minimum(seconds, int(days * 86400) - 1)
    t = start_s + seconds

    away = rng.random(n) < _AWAY_SHARE
    d_away = rng.integers(0, len(DISTRICTS), size=n)
    dx = np.array([d[1] for d in DISTRICTS])[d_away]
    dy = np.array([d[2] for d in DISTRICTS])[d_away]
    x = np.where(away, dx + rng.normal(0, 1.5, n), users.home_x[user] + rng.normal(0, 0.6, n))
    y = np.where(away, dy + rng.normal(0, 1.5, n), users.home_y[user] + rng.normal(0, 0.6, n))

    retriever = _Retriever(cfg, items)
    candidates = [
        retriever(rng, x[k], y[k], int(kind[k]), int(category[k]), int(brand[k])) for k in range(n)
    ]
    order = np.argsort(t, kind="stable")
    width = max(7, len(str(n)))
    out = Searches(
        request_id=np.array([f"{id_prefix}{i:0{width}d}" for i in range(n)], dtype=object),
        user=user,
        t=t,
        x=x,
        y=y,
        query=query,
        kind=kind,
        category=category,
        brand=brand,
        modifier=modifier,
        device=users.device[user],
        candidates=candidates,
    )
    sorted_out = out.take(order)
    sorted_out.request_id = out.request_id  # ids follow time order
    return sorted_out


_GENERIC_PEAKS = {"lunch": (12.0,), "dinner": (19.0,), "date night": (19.5,)}


class _Retriever:
    """Candidate generation: nearby merchants matching the query, plus retrieval noise."""

    def __init__(self, cfg: WorldConfig, items: Items):
        self.cfg = cfg
        self.items = items
        food = np.array([c.food for c in CATEGORIES])
        self.pool = {c: np.flatnonzero(items.category == c) for c in range(len(CATEGORIES))}
        self.others = {c: np.flatnonzero(items.category != c) for c in range(len(CATEGORIES))}
        self.pool[-1] = np.flatnonzero(food[items.category])  # generic queries: food merchants
        self.others[-1] = np.flatnonzero(~food[items.category])
        self.branches = {b: np.flatnonzero(items.brand == b) for b in range(len(items.brand_names))}

    def __call__(
        self, rng: np.random.Generator, x: float, y: float, kind: int, category: int, brand: int
    ) -> np.ndarray:
        """A shuffled candidate set of item indices."""
        cfg, it = self.cfg, self.items
        n_target = int(
            np.clip(
                round(cfg.median_candidates * rng.lognormal(0.0, 0.5)),
                cfg.min_candidates,
                cfg.max_candidates,
            )
        )
        n_target = min(n_target, len(it))
        key = -1 if kind == KIND_GENERIC else category
        pool, others = self.pool[key], self.others[key]
        n_noise = min(int(rng.binomial(n_target, _NOISE_SHARE)), len(others))
        n_main = min(n_target - n_noise, len(pool))

        chosen: list[np.ndarray] = []
        if kind == KIND_BRAND:
            br = self.branches[brand]
            br = _nearest(br, it.x[br] - x, it.y[br] - y, max(1, n_main // 4))
            chosen.append(br)
            pool = np.setdiff1d(pool, br)
            n_main = max(0, min(n_main - len(br), len(pool)))
        near = _nearest(pool, it.x[pool] - x, it.y[pool] - y, int(np.ceil(1.5 * n_main)))
        chosen.append(rng.choice(near, size=n_main, replace=False) if n_main else near[:0])
        if n_noise:
            near_o = _nearest(others, it.x[others] - x, it.y[others] - y, 4 * n_noise)
            chosen.append(rng.choice(near_o, size=n_noise, replace=False))
        cand = np.concatenate(chosen)
        if len(cand) < cfg.min_candidates:  # a sparse corner of the city: widen the net
            rest = np.setdiff1d(np.arange(len(it)), cand)
            fill = _nearest(rest, it.x[rest] - x, it.y[rest] - y, cfg.min_candidates - len(cand))
            cand = np.concatenate([cand, fill])
        return rng.permutation(cand)


def _nearest(idx: np.ndarray, dx: np.ndarray, dy: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` entries of ``idx`` nearest to the origin of (dx, dy), nearest first."""
    d2 = dx * dx + dy * dy
    if k < len(idx):
        part = np.argpartition(d2, k - 1)[:k]
        return idx[part[np.lexsort((idx[part], d2[part]))]]
    return idx[np.lexsort((idx, d2))]


def _draw_rows(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``logits`` (softmax probabilities)."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    u = rng.random(len(p)) * cdf[:, -1]
    return np.minimum((u[:, None] > cdf).sum(axis=1), p.shape[1] - 1)


def _hours_near(rng: np.random.Generator, peaks: list[tuple[float, ...]]) -> np.ndarray:
    """Hours of the day near the given peaks (normal, sd 1.6 h), 12% uniform over the day."""
    n = len(peaks)
    pick = rng.random(n)
    noise = rng.normal(0.0, 1.6, n)
    uniform = rng.uniform(0.0, 24.0, n)
    flat = rng.random(n) < 0.12
    peak = np.array([p[int(u * len(p))] for p, u in zip(peaks, pick, strict=True)])
    return np.where(flat, uniform, (peak + noise) % 24.0)
