"""True relevance of a candidate set for a search: the oracle that models never see.

Relevance is ``4 * sigmoid((u - centre) / scale)``, a graded scale from 0 (useless) to 4
(perfect), where the utility ``u`` is a sum of named terms (weights in ``RelevanceParams``):

- quality of the merchant (latent; rating and reviews are noisy views of it);
- intent: off-category merchants are penalised, a brand query finds its brand;
- personal taste: the user's affinity for the category, stronger for generic queries, and the
  match between the user's and the merchant's latent styles;
- price against the user's budget (the "cheap eats" and "date night" queries shift it);
- distance from the search location, scaled by the user's and the category's sensitivity;
- time of day (fit to the category's peak hours) and whether the merchant is open;
- list context (times ``WorldConfig.list_effect``): a near-duplicate of a better candidate
  loses value, the cheapest and the nearest of the same-category candidates gain value.

Every term is a function of the candidate *set*: permuting the candidates permutes the
relevance and nothing else, so the oracle order is well defined.
"""

from __future__ import annotations

import numpy as np

from pipelines.world.config import CATEGORIES, RelevanceParams
from pipelines.world.entities import N_STYLE, Items, Users
from pipelines.world.searches import KIND_BRAND, KIND_GENERIC, MOD_CHEAP, MOD_DATE, Searches

_TOLERANCE = np.array([c.distance_tolerance for c in CATEGORIES])
_FOOD = np.array([c.food for c in CATEGORIES])


def pad_candidates(candidates: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Candidate index lists -> (cand (B, L) int with -1 padding, valid (B, L) bool)."""
    b = len(candidates)
    width = max((len(c) for c in candidates), default=0)
    cand = np.full((b, max(width, 1)), -1, dtype=np.int64)
    for k, c in enumerate(candidates):
        cand[k, : len(c)] = c
    return cand, cand >= 0


def hour_fit(category: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """How much a category is wanted at an hour, in [0, 1] (1 at a peak hour)."""
    out = np.zeros(np.broadcast(category, hour).shape)
    for c, cat in enumerate(CATEGORIES):
        sel = category == c
        if not np.any(sel):
            continue
        h = np.broadcast_to(hour, sel.shape)[sel]
        best = np.zeros_like(h)
        for p in cat.peaks:
            diff = np.abs(h - p) % 24.0
            diff = np.minimum(diff, 24.0 - diff)
            best = np.maximum(best, np.exp(-0.5 * (diff / 2.0) ** 2))
        out[sel] = best
    return out


def is_closed(open_hour: np.ndarray, close_hour: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """True where the merchant is closed at ``hour`` (close may pass midnight, e.g. 26)."""
    open_now = ((hour >= open_hour) & (hour < close_hour)) | (hour + 24.0 < close_hour)
    return ~open_now


def base_utility(
    items: Items, users: Users, p: RelevanceParams, s: Searches, cand: np.ndarray
) -> np.ndarray:
    """Utility of each candidate without the list-context terms. (B, L); padding is garbage."""
    ci = np.maximum(cand, 0)  # (B, L) safe index; padded slots are masked by callers
    cat = items.category[ci]
    u = s.user[:, None]  # (B, 1)
    hour = s.hour()[:, None]
    kind = s.kind[:, None]
    mod = s.modifier[:, None]

    util = p.quality * items.quality[ci]
    util = util + np.where(mod == MOD_DATE, p.cheap_date * items.quality[ci], 0.0)

    generic = kind == KIND_GENERIC
    off = np.where(generic, ~_FOOD[cat], cat != s.category[:, None])
    util = util - p.off_intent * off
    util = util + np.where(
        (kind == KIND_BRAND) & (items.brand[ci] == s.brand[:, None]), p.brand_match, 0.0
    )

    taste = users.taste[u, cat]  # (B, L)
    util = util + (p.taste + p.generic_taste * generic) * taste
    style = np.einsum("bd,bld->bl", users.style[s.user], items.style[ci]) / np.sqrt(N_STYLE)
    util = util + p.style * style

    budget = users.budget[u]
    budget = np.where(mod == MOD_CHEAP, np.minimum(budget, 1.5), budget)
    budget = np.where(mod == MOD_DATE, np.minimum(budget + 1.0, 4.0), budget)
    level = items.price_level[ci]
    over = np.maximum(0.0, level - budget)
    under = np.maximum(0.0, budget - 1.0 - level)
    sens = users.price_sensitivity[u] * np.where(mod == MOD_CHEAP, 1.5, 1.0)
    util = util - sens * (p.price_over * over + p.price_under * under)

    dist = np.hypot(items.x[ci] - s.x[:, None], items.y[ci] - s.y[:, None])
    util = util - p.distance * users.distance_sensitivity[u] * _TOLERANCE[cat] * np.log1p(dist)

    util = util + p.hour * (hour_fit(cat, hour) - 0.5)
    util = util - p.closed * is_closed(items.open_hour[ci], items.close_hour[ci], hour)
    return util


def list_context(
    items: Items,
    p: RelevanceParams,
    s: Searches,
    cand: np.ndarray,
    valid: np.ndarray,
    base: np.ndarray,
) -> np.ndarray:
    """The set-dependent part of utility, before scaling by the list-effect strength. (B, L)"""
    ci = np.maximum(cand, 0)
    cat = items.category[ci]  # (B, L)
    brand = items.brand[ci]
    x, y = items.x[ci], items.y[ci]
    price = items.avg_price[ci]
    pair = valid[:, :, None] & valid[:, None, :]  # (B, L, L) both real candidates
    pair &= ~np.eye(cand.shape[1], dtype=bool)[None]
    same_cat = (cat[:, :, None] == cat[:, None, :]) & pair

    # Similarity of i to j: branches of one brand are near-duplicates; otherwise same-category
    # merchants next door at a similar price are close substitutes.
    same_brand = (brand[:, :, None] == brand[:, None, :]) & (brand[:, :, None] >= 0)
    d_ij = np.hypot(x[:, :, None] - x[:, None, :], y[:, :, None] - y[:, None, :])
    rel_price = np.abs(np.log(price[:, :, None] + 1.0) - np.log(price[:, None, :] + 1.0))
    sim = np.where(same_brand, 1.0, 0.7 * np.exp(-d_ij / 0.4) * np.exp(-rel_price / 0.3))
    sim = np.where(same_cat, sim, 0.0)  # (B, L, L)
    better = 1.0 / (1.0 + np.exp(-(base[:, None, :] - base[:, :, None]) / 0.25))  # j better than i
    duplicate = (sim * better).max(axis=2, initial=0.0)  # (B, L)

    # Best deal and nearest among same-category candidates (only where there is a choice).
    dist = np.hypot(x - s.x[:, None], y - s.y[:, None])
    has_peer = same_cat.any(axis=2)
    inf = np.inf
    cheaper_peer = np.where(same_cat, price[:, None, :], inf).min(axis=2)
    nearer_peer = np.where(same_cat, dist[:, None, :], inf).min(axis=2)
    cheapest = has_peer & (price <= cheaper_peer)
    nearest = has_peer & (dist <= nearer_peer)

    effect = -p.duplicate * duplicate + p.best_deal * cheapest + p.nearest * nearest
    return np.where(valid, effect, 0.0)


def true_relevance(
    items: Items, users: Users, p: RelevanceParams, list_effect: float, s: Searches
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Relevance with and without the list-context terms, one array per search (set order)."""
    rel: list[np.ndarray] = [np.zeros(0)] * len(s)
    rel0: list[np.ndarray] = [np.zeros(0)] * len(s)
    # Group searches of similar length so the (B, L, L) pair arrays carry little padding.
    by_len = np.argsort([len(c) for c in s.candidates], kind="stable")
    for lo in range(0, len(s), _GROUP):
        idx = by_len[lo : lo + _GROUP]
        g = s.take(idx)
        cand, valid = pad_candidates(g.candidates)
        base = base_utility(items, users, p, g, cand)
        ctx = list_context(items, p, g, cand, valid, base) if list_effect > 0 else 0.0
        r, r0 = _grade(base + list_effect * ctx, p), _grade(base, p)
        for j, k in enumerate(idx):
            m = len(g.candidates[j])
            rel[k], rel0[k] = r[j, :m], r0[j, :m]
    return rel, rel0


_GROUP = 256


def _grade(util: np.ndarray, p: RelevanceParams) -> np.ndarray:
    return 4.0 / (1.0 + np.exp(-(util - p.centre) / p.scale))
