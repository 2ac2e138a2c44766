"""Uncertainty for metrics averaged over requests, resampling users (clusters), not requests.

Requests of one user are correlated (same tastes, same home), so a bootstrap over requests
would claim too much certainty. Every interval here resamples users with replacement, with a
fixed number of resamples and a fixed seed; a metric's value on a resample is the ratio of the
resampled per-user sums to the resampled per-user counts of defined (non-NaN) requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEST_NAME = "paired randomisation test: sign flips of per-user summed differences"


@dataclass
class Clusters:
    """Requests grouped by user, and one shared set of bootstrap weights (paired by design)."""

    index: np.ndarray  # (R,) cluster of each request
    n: int  # number of clusters
    weights: np.ndarray  # (n_boot, n) how often each cluster is drawn in each resample
    flips: np.ndarray  # (n_perm, n) random signs for the randomisation test

    @classmethod
    def of(
        cls, groups: np.ndarray, n_boot: int = 1000, n_perm: int = 10000, seed: int = 0
    ) -> Clusters:
        _, index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        n = int(index.max()) + 1 if len(index) else 0
        rng = np.random.default_rng(seed)
        weights = (
            rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
            if n
            else np.zeros((n_boot, 0))
        )
        flips = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, n)) if n else np.zeros((n_perm, 0))
        return cls(index.reshape(-1), n, weights, flips)

    def sums(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-cluster sum and count of the defined values."""
        ok = ~np.isnan(values)
        s = np.bincount(self.index[ok], weights=values[ok], minlength=self.n)
        c = np.bincount(self.index[ok], minlength=self.n).astype(np.float64)
        return s, c


@dataclass
class Estimate:
    value: float
    ci95: tuple[float, float]
    n: int  # requests that define the metric

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "ci95": list(self.ci95), "n": self.n}


def mean_ci(values: np.ndarray, cl: Clusters) -> Estimate:
    """Mean over defined requests, with a 95% percentile interval from the cluster bootstrap."""
    s, c = cl.sums(values)
    total = c.sum()
    if total == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")), 0)
    boot = (cl.weights @ s) / np.maximum(cl.weights @ c, 1e-12)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Estimate(float(s.sum() / total), (float(lo), float(hi)), int(total))


@dataclass
class Difference:
    diff: float
    ci95: tuple[float, float]
    p_value: float
    n: int

    def to_dict(self) -> dict[str, object]:
        return {
            "diff": self.diff,
            "ci95": list(self.ci95),
            "p_value": self.p_value,
            "n": self.n,
            "test": TEST_NAME,
        }


def paired_difference(a: np.ndarray, b: np.ndarray, cl: Clusters) -> Difference:
    """Mean of a - b over requests where both are defined; bootstrap CI and a two-sided p-value.

    The p-value flips the sign of each user's summed difference at random (the null: within a
    user, which model scored which is exchangeable) and counts flips at least as extreme.
    """
    d = np.where(np.isnan(a) | np.isnan(b), np.nan, a - b)
    est = mean_ci(d, cl)
    s, _ = cl.sums(d)
    observed = abs(s.sum())
    null = np.abs(cl.flips @ s)
    p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))
    return Difference(est.value, est.ci95, p, est.n)


def weighted_mean_ci(values: np.ndarray, weights: np.ndarray, cl: Clusters) -> Estimate:
    """A mean of per-cluster values weighted by per-cluster weights (e.g. GAUC: per-user AUC
    weighted by the user's impressions); clusters with a NaN value are left out."""
    ok = ~np.isnan(values)
    v, w = np.where(ok, values, 0.0), np.where(ok, weights, 0.0)
    if w.sum() == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")), 0)
    boot = (cl.weights @ (v * w)) / np.maximum(cl.weights @ w, 1e-12)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Estimate(float((v * w).sum() / w.sum()), (float(lo), float(hi)), int(ok.sum()))
