"""The blend's weight chosen on validation (``--set blend=auto``).

Which signal: on click logs, the held-out click likelihood of the blend under a position-based
click model: P(click on i) proportional to exp(t x blend_i) x p(position_i), softmax over each
list, the blend's scale t fitted on validation (one number per weight) and p the examination
propensities the training estimated. Measured against the test oracle across weights 0..1 on
world 48 (the tuning world) and four others (benchmarks/blend_weight.py; README "Choosing the
blend's weight"): its pick stayed within 0.001 oracle NDCG@10 of the best weight on every seed,
where validation click NDCG@10 (plain or IPS-weighted) lost up to 0.012 and the examined rule up
to 0.020, each leaning to one model or the other by world. On judged labels (no logged
positions) validation NDCG@10 reads relevance itself and is the signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ranker.ensemble import standardise_within_list
from ranker.losses import softmax_loss
from ranker.metrics import ndcg

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # the Transformer's share, 0 to 1
# The blend's scale in the click model: z-scores times t, t from 0.1 to about 80 (x1.25)
SCALES = tuple(0.1 * 1.25**i for i in range(31))
SIGNALS = ("click_likelihood", "ndcg@10", "none")
# Where validation cannot tell (no positive label in it, or no finite value on the curve): the
# equal blend, the best fixed weight on the tuning world 48.
FALLBACK_WEIGHT = 0.5


@dataclass(frozen=True)
class WeightChoice:
    weight: float
    signal: str  # one of SIGNALS
    curve: dict[str, float]  # weight (as text, for JSON) -> the signal, higher is better


def z_scores(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, L) within-list z-scores, as the served blend computes them (0 on padding)."""
    return standardise_within_list(
        torch.from_numpy(scores.astype(np.float32)), torch.from_numpy(mask)
    ).numpy()


def click_likelihood(
    blend: np.ndarray, clicks: np.ndarray, *, mask: np.ndarray, log_propensity: np.ndarray
) -> float:
    """Minus the click softmax loss (``ranker.losses.softmax_loss``, the training loss) of
    ``scale x blend + log_propensity``, at the best scale of ``SCALES``. All (B, L)."""
    t = torch.from_numpy
    m, y, lp = t(mask), t(clicks.astype(np.float32)), t(log_propensity.astype(np.float32))
    z = t(blend.astype(np.float32))
    return -min(float(softmax_loss(s * z + lp, y, mask=m)) for s in SCALES)


def choose_weight(
    own: np.ndarray,
    baseline: np.ndarray,
    labels: np.ndarray,
    *,
    mask: np.ndarray,
    log_propensity: np.ndarray | None,
) -> WeightChoice:
    """The Transformer's share of the blend, from ``WEIGHTS``, that validation likes best.

    ``own``, ``baseline``: (B, L) raw scores of the Transformer and the baseline; ``labels``:
    (B, L) validation labels; ``mask``: (B, L) the candidates; ``log_propensity``: (B, L) log
    examination propensity of each logged position (click logs), or None (judged labels: NDCG@10
    on them). Ties go to the smaller weight (nearer the baseline); a value that is not finite
    never wins; with nothing to read, ``FALLBACK_WEIGHT`` and the signal "none"."""
    if not (labels[mask] > 0).any():
        return WeightChoice(FALLBACK_WEIGHT, "none", {})
    z_own, z_base = z_scores(own, mask), z_scores(baseline, mask)
    curve: dict[str, float] = {}
    for w in WEIGHTS:
        blend = (1.0 - w) * z_base + w * z_own  # (B, L)
        if log_propensity is None:
            curve[str(w)] = float(np.nanmean(ndcg(blend, labels, mask=mask, k=10)))
        else:
            curve[str(w)] = click_likelihood(
                blend, labels, mask=mask, log_propensity=log_propensity
            )
    finite = [w for w in WEIGHTS if np.isfinite(curve[str(w)])]
    if not finite:
        return WeightChoice(FALLBACK_WEIGHT, "none", curve)
    best = max(finite, key=lambda w: curve[str(w)])  # max keeps the first of equals
    return WeightChoice(best, SIGNALS[log_propensity is None], curve)
