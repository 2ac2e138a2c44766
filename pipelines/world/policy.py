"""The logging policy: the ranker that produced the logs.

A plausible production heuristic (rating, review count, distance, a literal text match of the
query against the title, open now) with noise. It knows nothing of the user's tastes or budget,
of synonyms, or of the list context, which leaves room for learned rankers. A flagged share of
requests is shown with random swaps of adjacent positions (an intervention in the style of
Joachims et al. 2017), so that position bias can be estimated from the logs.
"""

from __future__ import annotations

import re

import numpy as np

from pipelines.world.config import PolicyParams
from pipelines.world.entities import Items
from pipelines.world.relevance import is_closed, pad_candidates
from pipelines.world.searches import Searches

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


class LoggingPolicy:
    def __init__(self, items: Items, p: PolicyParams):
        self.items = items
        self.p = p
        self._title_tokens = [tokens(t) for t in items.title]
        self._log_reviews = np.log1p(items.review_count)
        self._match: dict[str, np.ndarray] = {}

    def _text_match(self, query: str) -> np.ndarray:
        """Share of the query's tokens found in each merchant's title, (n_items,); cached."""
        m = self._match.get(query)
        if m is None:
            q = tokens(query)
            m = np.array([len(q & t) / max(1, len(q)) for t in self._title_tokens])
            self._match[query] = m
        return m

    def scores(self, s: Searches, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Policy scores (B, L) in candidate-set order, and the validity mask (B, L)."""
        cand, valid = pad_candidates(s.candidates)
        ci = np.maximum(cand, 0)
        it, p = self.items, self.p
        match = np.stack([self._text_match(str(q))[ci[k]] for k, q in enumerate(s.query)])
        dist = np.hypot(it.x[ci] - s.x[:, None], it.y[ci] - s.y[:, None])
        open_now = ~is_closed(it.open_hour[ci], it.close_hour[ci], s.hour()[:, None])
        score = (
            p.rating * _masked_z(it.rating[ci], valid)
            + p.reviews * _masked_z(self._log_reviews[ci], valid)
            - p.distance * np.log1p(dist)
            + p.text_match * match
            + p.open_now * open_now
            + rng.normal(0.0, p.noise, cand.shape)
        )
        return np.where(valid, score, -np.inf), valid

    def rank(
        self, s: Searches, rng: np.random.Generator, randomise: np.ndarray
    ) -> list[np.ndarray]:
        """Display order of each search: indices into its candidate set, top first.

        Searches flagged in ``randomise`` get random adjacent swaps on top of the policy order.
        """
        return [shown for shown, _ in self.rank_logged(s, rng, randomise)]

    def rank_logged(
        self, s: Searches, rng: np.random.Generator, randomise: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per search: (display order, the policy's own 1-based position of each shown item).

        The two differ only on randomised searches; a randomisation layer logs both, which is
        what lets position bias be estimated from swapped pairs.
        """
        score, valid = self.scores(s, rng)
        order = np.argsort(-score, axis=1, kind="stable")
        lens = valid.sum(axis=1)
        out = []
        for k in range(len(s)):
            policy = order[k, : lens[k]]
            if not randomise[k]:
                out.append((policy, np.arange(1, lens[k] + 1)))
                continue
            shown = adjacent_swaps(policy, rng)
            where = np.empty(lens[k], np.int64)
            where[policy] = np.arange(1, lens[k] + 1)
            out.append((shown, where[shown]))
        return out


def adjacent_swaps(order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swap pairs (o+1, o+2), (o+3, o+4), ... each with probability 1/2; o is 0 or 1 at random."""
    out = order.copy()
    start = int(rng.integers(0, 2))
    for a in range(start, len(out) - 1, 2):
        if rng.random() < 0.5:
            out[a], out[a + 1] = out[a + 1], out[a]
    return out


def _masked_z(v: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """z-score of each row over its valid entries; 0 where a row has no spread. (B, L)"""
    n = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    mean = np.where(valid, v, 0.0).sum(axis=1, keepdims=True) / n
    var = np.where(valid, (v - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / n
    sd = np.sqrt(var)
    return np.where(sd > 0, (v - mean) / np.where(sd > 0, sd, 1.0), 0.0)
