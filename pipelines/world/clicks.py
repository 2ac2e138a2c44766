"""The click model: how simulated users answer a displayed ranking.

Going down the list, a user examines position p (1 = top) with probability ``p ** -eta``
(position bias), clicks an examined item with probability ``floor + span * (2^rel - 1) / 15``
(attractiveness grows with true relevance), orders after a click with a probability that rises
steeply with relevance, and stops after an order (satisfied) or, sometimes, after a click.

All randomness comes from five uniform draws per displayed position, taken from the generator
the caller passes, in a fixed order. Replaying a ranking with a generator in the same state
therefore reproduces the same clicks: the logs record each request's ``click_seed`` for that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from pipelines.world.config import ClickParams

N_DRAWS = 5  # examine, click, order, stop, dwell


@dataclass
class Response:
    """Outcome of one displayed list, in display order."""

    clicked: np.ndarray  # bool (L,)
    ordered: np.ndarray  # bool (L,)
    dwell_ms: np.ndarray  # float (L,), NaN where not clicked


def examination(position: np.ndarray, p: ClickParams) -> np.ndarray:
    """Probability that a user who has not stopped examines 1-based ``position``."""
    return np.power(np.asarray(position, dtype=np.float64), -p.eta)


def attractiveness(rel: np.ndarray, p: ClickParams) -> np.ndarray:
    return p.attract_floor + p.attract_span * (np.exp2(rel) - 1.0) / 15.0


def order_probability(rel: np.ndarray, p: ClickParams) -> np.ndarray:
    return p.order_max / (1.0 + np.exp(-p.order_slope * (rel - p.order_mid)))


def draw_uniforms(rng: np.random.Generator, n: int) -> np.ndarray:
    """The random state one displayed list consumes: (N_DRAWS, n) uniforms."""
    return rng.random((N_DRAWS, n))


def respond_batch(rel: np.ndarray, valid: np.ndarray, u: np.ndarray, p: ClickParams) -> Response:
    """Clicks for a batch of displayed lists.

    rel: (B, L) true relevance in display order; valid: (B, L) bool; u: (B, N_DRAWS, L).
    Returns (B, L) arrays.
    """
    b, n = rel.shape
    clicked = np.zeros((b, n), dtype=bool)
    ordered = np.zeros((b, n), dtype=bool)
    alive = np.ones(b, dtype=bool)
    exam = examination(np.arange(1, n + 1), p)
    att = attractiveness(rel, p)
    orderp = order_probability(rel, p)
    for k in range(n):
        seen = alive & valid[:, k] & (u[:, 0, k] < exam[k])
        c = seen & (u[:, 1, k] < att[:, k])
        o = c & (u[:, 2, k] < orderp[:, k])
        leave = o | (c & (u[:, 3, k] < p.stop_after_click))
        clicked[:, k] = c
        ordered[:, k] = o
        alive &= ~leave
    # Dwell time: longer on better items and on orders; log-normal.
    z = ndtri(np.clip(u[:, 4, :], 1e-12, 1 - 1e-12))
    dwell = np.exp(8.5 + 0.3 * rel + 0.6 * ordered + 0.5 * z)
    dwell = np.where(clicked, np.round(dwell), np.nan)
    return Response(clicked=clicked, ordered=ordered, dwell_ms=dwell)


def respond(rel: np.ndarray, rng: np.random.Generator, p: ClickParams) -> Response:
    """Clicks for one displayed list; ``rel`` is the true relevance in display order."""
    n = len(rel)
    u = draw_uniforms(rng, n)
    r = respond_batch(rel[None, :], np.ones((1, n), dtype=bool), u[None], p)
    return Response(clicked=r.clicked[0], ordered=r.ordered[0], dwell_ms=r.dwell_ms[0])
