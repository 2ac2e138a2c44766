"""Statistics of online experiments: ratio metrics by the delta method, the minimum detectable
effect, the sample-ratio-mismatch check, and the interleaving preference test.

The unit of randomisation is the user, so every variance here is computed over users: a
ratio metric (orders per request, clicks per impression) is sum(X_u) / sum(N_u) over the
variant's users, with the delta-method variance of that ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95, Z80 = 1.959963984540054, 0.8416212335729143  # two-sided 5% level, 80% power


@dataclass
class Ratio:
    value: float
    var: float  # delta-method variance of the ratio
    users: int


def ratio(x: np.ndarray, n: np.ndarray) -> Ratio:
    """sum(x) / sum(n) over users, with its delta-method variance. x, n: per-user totals."""
    k = len(x)
    if k == 0 or n.sum() == 0:
        return Ratio(float("nan"), float("nan"), k)
    r = x.sum() / n.sum()
    mean_n = n.mean()
    if k < 2:
        return Ratio(float(r), float("nan"), k)
    cov = np.cov(np.stack([x, n]), ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (k * mean_n**2)
    return Ratio(float(r), float(max(var, 0.0)), k)


@dataclass
class Lift:
    lift: float  # relative: treatment / control - 1
    ci95: tuple[float, float]
    p_value: float
    mde: float  # relative minimum detectable effect at 5% / 80% power for this traffic
    test: str = "two-sided z-test on the relative lift, delta-method variances over users"


def relative_lift(control: Ratio, treatment: Ratio) -> Lift:
    """Lift of the treatment over the control, its 95% CI, p-value and the traffic's MDE."""
    c, t = control.value, treatment.value
    if not (c > 0) or np.isnan(t) or np.isnan(control.var) or np.isnan(treatment.var):
        nan = float("nan")
        return Lift(nan, (nan, nan), nan, nan)
    lift = t / c - 1
    se = (
        (t / c) * np.sqrt(treatment.var / t**2 + control.var / c**2)
        if t > 0
        else np.sqrt(treatment.var) / c
    )
    z = lift / se if se > 0 else 0.0
    p = float(2 * stats.norm.sf(abs(z)))
    # Under H0 both variants share the control's rate: MDE = (z_a + z_b) * se at lift 0.
    se0 = np.sqrt(treatment.var / c**2 + control.var / c**2)
    return Lift(
        float(lift), (float(lift - Z95 * se), float(lift + Z95 * se)), p, float((Z95 + Z80) * se0)
    )


@dataclass
class Srm:
    chi2: float
    p_value: float
    observed: dict[str, int]
    expected: dict[str, float]
    alarm: bool
    threshold: float = 0.001
    test: str = "chi-squared goodness of fit of users per variant to the configured weights"


def sample_ratio_mismatch(
    users: dict[str, int], weights: dict[str, float], threshold: float = 0.001
) -> Srm:
    total = sum(users.get(v, 0) for v in weights)
    wsum = sum(weights.values())
    expected = {v: total * w / wsum for v, w in weights.items()}
    obs = [users.get(v, 0) for v in weights]
    exp = [expected[v] for v in weights]
    if total == 0 or len(weights) < 2:
        return Srm(
            float("nan"),
            float("nan"),
            dict(zip(weights, obs, strict=True)),
            expected,
            False,
            threshold,
        )
    chi2, p = stats.chisquare(obs, exp)
    return Srm(
        float(chi2),
        float(p),
        dict(zip(weights, obs, strict=True)),
        expected,
        bool(p < threshold),
        threshold,
    )


@dataclass
class Preference:
    wins_a: int
    wins_b: int
    ties: int
    share_b: float  # share of decided requests won by b
    ci95: tuple[float, float]
    p_value: float
    test: str = "two-sided exact binomial test of b's wins among decided requests against 1/2"


def interleaving_preference(wins_a: int, wins_b: int, ties: int) -> Preference:
    n = wins_a + wins_b
    if n == 0:
        nan = float("nan")
        return Preference(wins_a, wins_b, ties, nan, (nan, nan), nan)
    test = stats.binomtest(wins_b, n, 0.5)
    ci = test.proportion_ci(0.95, method="wilson")
    return Preference(
        wins_a, wins_b, ties, wins_b / n, (float(ci.low), float(ci.high)), float(test.pvalue)
    )
