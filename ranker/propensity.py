"""Position bias from randomised traffic: examination propensities by position.

On requests shown with random swaps of adjacent positions, the item the logging policy put at
position k is shown at k or at k + 1 by a coin flip, independently of the item. Its click rate
at k + 1 over its click rate at k estimates ``p(k + 1) / p(k)``, the ratio of examination
probabilities (intervention harvesting with swap interventions; Joachims et al. 2017, Agarwal et
al. 2019). Both members of each swapped pair contribute. What is estimated is the effective
examination: the chance a user reaches and looks at position k, including users who stopped
earlier (after an order, say).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Propensities:
    """Examination propensity per 1-based position (index 0 is position 1)."""

    values: np.ndarray  # (P,) float64, values[0] = 1
    clicks_used: int  # clicks on randomised requests behind the estimate
    eta: float = 1.0  # the fitted power law: p(k) = k ** -eta

    def at(self, positions: np.ndarray) -> np.ndarray:
        """Propensities of 1-based positions; beyond the table, the last value."""
        idx = np.clip(np.asarray(positions, np.int64) - 1, 0, len(self.values) - 1)
        return self.values[idx]

    def ipw(self, positions: np.ndarray, clip: float = 20.0) -> np.ndarray:
        """Inverse propensity weights, clipped at ``clip`` to bound variance."""
        return np.minimum(1.0 / self.at(positions), clip)

    def to_list(self) -> list[float]:
        return [float(v) for v in self.values]


def estimate_propensities(
    shown: np.ndarray,
    intended: np.ndarray,
    clicked: np.ndarray,
    randomized: np.ndarray,
    max_position: int = 100,
    max_pair: int = 20,
) -> Propensities:
    """Estimate examination propensities from swapped adjacent pairs.

    shown, intended: (N,) 1-based displayed and intended (policy) positions of each impression;
    clicked: (N,) bool; randomized: (N,) bool, the impression's request was randomised.

    Each pair (k, k + 1) up to ``max_pair`` gives a log-ratio ``log p(k+1) - log p(k)`` with
    variance about 1/clicks on each side. A power law ``p(k) = k^-eta`` is fitted to them by
    weighted least squares: with a few hundred randomised clicks the per-position ratios are
    too noisy to chain, while one slope is well determined and keeps inverse propensity weights
    smooth. ``pair_log_ratios`` keeps the raw estimates for reports and tests.
    """
    r = randomized.astype(bool)
    s, t, c = shown[r].astype(np.int64), intended[r].astype(np.int64), clicked[r].astype(bool)
    ratios = pair_log_ratios(s, t, c, max_pair)
    num = den = 0.0
    for k, (lr, var) in ratios.items():
        d = np.log(k + 1) - np.log(k)
        num += lr * d / var
        den += d * d / var
    eta = float(np.clip(-num / den, 0.0, 3.0)) if den > 0 else 1.0
    curve = np.arange(1, max_position + 1, dtype=np.float64) ** -eta
    return Propensities(values=curve, clicks_used=int(c.sum()), eta=eta)


def pair_log_ratios(
    shown: np.ndarray, intended: np.ndarray, clicked: np.ndarray, max_pair: int
) -> dict[int, tuple[float, float]]:
    """{k: (log p(k+1)/p(k), its approximate variance)} for pairs with clicks on each side."""
    out: dict[int, tuple[float, float]] = {}
    for k in range(1, max_pair + 1):
        rate_k = rate_k1 = 0.0
        var = 0.0
        for t in (k, k + 1):  # the items the policy put at k and at k + 1
            at_k = (intended == t) & (shown == k)
            at_k1 = (intended == t) & (shown == k + 1)
            ck, ck1 = int(clicked[at_k].sum()), int(clicked[at_k1].sum())
            if ck == 0 or ck1 == 0:
                break
            rate_k += ck / at_k.sum()
            rate_k1 += ck1 / at_k1.sum()
            var += 1.0 / ck + 1.0 / ck1
        else:
            out[k] = (float(np.log(rate_k1 / rate_k)), var / 4.0)
    return out
