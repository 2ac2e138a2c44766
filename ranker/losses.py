"""Listwise and pointwise ranking losses on padded batches of lists (torch).

Conventions
-----------
* Every loss is ``loss(scores, labels, *, mask, weights=None, ...) -> Tensor`` (a scalar):
  scores (B, L) float, labels (B, L) graded relevance >= 0, mask (B, L) bool (True = a real
  candidate), weights (B, L) optional non-negative per-item weights, e.g. inverse propensity
  weights; each loss says where they enter. ``weights=None`` is the same as all ones.
* Padded slots may hold anything (huge values, NaN, inf): they are replaced with `torch.where`
  before any arithmetic, so they change neither the value nor the gradient (zero there).
* Gains are ``2**label - 1``, discounts ``1 / log2(1 + rank)``; a positive has label > 0.
* Listwise losses (softmax, lambdaloss, approxndcg): a list contributes when its real candidates
  carry some weighted gain, sum(weight * gain) > 0 (without weights: it has a positive). The
  loss is the mean over contributing lists. BCE is pointwise and averages over every real
  candidate, lists without positives included.
* When nothing contributes the loss is a zero still connected to ``scores`` (its gradient is all
  zeros), so a training step on such a batch is a harmless no-op rather than an error.
* Computation runs in float32 (float64 when scores are float64, e.g. for gradcheck) with autocast
  disabled, so bfloat16 or float16 scores from an autocast region give no NaN or overflow.
* Real scores are expected to be finite; only padded slots may hold garbage.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSSES",
    "approx_ndcg_loss",
    "bce_loss",
    "bound_loss",
    "distill_loss",
    "lambda_loss",
    "softmax_loss",
]

_LN2 = math.log(2.0)


class _Batch(NamedTuple):
    """A sanitised batch, all (B, L): padded slots hold 0 in scores, labels and weights."""

    scores: Tensor  # float32/float64, connected to the caller's scores
    labels: Tensor
    mask: Tensor  # bool
    weights: Tensor


def _prepare(scores: Tensor, labels: Tensor, mask: Tensor, weights: Tensor | None) -> _Batch:
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D (B, L), got shape {tuple(scores.shape)}")
    shape = scores.shape
    for name, t in (("labels", labels), ("mask", mask), ("weights", weights)):
        if t is not None and t.shape != shape:
            raise ValueError(
                f"{name} must have the shape of scores {tuple(shape)}, got {tuple(t.shape)}"
            )
    # bfloat16/float16 lack the range and precision for exp2, logsigmoid and the sums below
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=dtype, device=scores.device)
    # torch.where (not multiplication by the mask): 0 * NaN is NaN, and the backward of where
    # sends exactly zero gradient to the padded slots
    s = torch.where(m, scores.to(dtype), zero)
    y = torch.where(m, labels.to(dtype), zero)
    w = m.to(dtype) if weights is None else torch.where(m, weights.to(dtype), zero)
    return _Batch(s, y, m, w)


def _gains(labels: Tensor) -> Tensor:
    return torch.exp2(labels) - 1.0


def _ideal_dcg(labels: Tensor, k: int | None) -> Tensor:
    """(B,) DCG@k of the ideal order; padded labels are 0, so they add no gain."""
    length = labels.shape[1]
    ranks = torch.arange(1, length + 1, dtype=labels.dtype, device=labels.device)
    disc = 1.0 / torch.log2(1.0 + ranks)
    if k is not None:
        disc = torch.where(ranks <= k, disc, torch.zeros_like(disc))
    return (_gains(labels.sort(dim=1, descending=True).values) * disc).sum(dim=1)


def _mean_over_lists(per_list: Tensor, contributes: Tensor) -> Tensor:
    """Mean of (B,) per_list over lists where contributes; a connected 0 when there are none.

    per_list must be finite everywhere (also where a list does not contribute), so the zero
    gradient that `where` routes to those lists never meets a NaN.
    """
    total = torch.where(contributes, per_list, torch.zeros_like(per_list)).sum()
    return total / contributes.sum().clamp(min=1)


def _check_k(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive int or None, got {k!r}")


def softmax_loss(
    scores: Tensor, labels: Tensor, *, mask: Tensor, weights: Tensor | None = None
) -> Tensor:
    """ListNet top-one loss: softmax cross-entropy against a gain-proportional target.

    scores, labels, mask, weights: (B, L). The target over a list's real candidates is
    proportional to weights * (2**label - 1); the loss of a list is
    -sum_i target_i * log_softmax(scores)_i over real candidates. Returns a scalar: the mean over
    lists with sum(weights * gain) > 0.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        b = _prepare(scores, labels, mask, weights)
        weighted_gain = b.weights * _gains(b.labels)
        total = weighted_gain.sum(dim=1, keepdim=True)
        target = weighted_gain / total.clamp(min=torch.finfo(total.dtype).tiny)
        # padding gets the most negative finite logit, not -inf: with -inf a fully padded row
        # makes NaN through (-inf) - (-inf); `where` would hide it from the result, but not from
        # the backward pass or torch.autograd.detect_anomaly
        logits = b.scores.masked_fill(~b.mask, torch.finfo(b.scores.dtype).min)
        log_p = torch.log_softmax(logits, dim=1)
        per_item = torch.where(b.mask, target * log_p, torch.zeros_like(log_p))
        return _mean_over_lists(-per_item.sum(dim=1), total.squeeze(1) > 0)


def _score_ranks(scores: Tensor, mask: Tensor) -> Tensor:
    """(B, L) int64 1-based ranks by scores descending, ties by index; padding after reals."""
    keys = scores.detach().masked_fill(~mask, -math.inf)
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices
    return order.argsort(dim=1) + 1


def lambda_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    mask: Tensor,
    weights: Tensor | None = None,
    mu: float = 10.0,
    sigma: float = 1.0,
    k: int | None = None,
) -> Tensor:
    """LambdaLoss, NDCG-Loss2++ (Wang et al. 2018, CIKM), for metric-driven pairwise training.

    scores, labels, mask, weights: (B, L). For every pair of real candidates with
    label_i > label_j the loss adds -log2(sigmoid(sigma * (s_i - s_j))) times the weight

        (rho_ij + mu * delta_ij) * |G_i - G_j| * weights_i

    where G = (2**label - 1) / ideal DCG, ranks r come from the current scores (descending, ties
    by index), D(r) = log2(1 + r), rho_ij = |1/D(r_i) - 1/D(r_j)| (the LambdaRank term) and
    delta_ij = |1/D(|r_i - r_j|) - 1/D(|r_i - r_j| + 1)| (the NDCG-Loss2 term); mu mixes the two
    as in the paper. Pair weights are constants: no gradient flows through ranks or labels.
    weights_i is the weight of the more relevant item of the pair.

    With k, the metric is NDCG@k: G is normalised by the ideal DCG@k, and only pairs with at
    least one item in the current top k count (swapping two items below k leaves NDCG@k as is).

    Returns a scalar: the mean over lists with sum(weights * gain) > 0 of the per-list sum over
    pairs.
    """
    _check_k(k)
    with torch.autocast(device_type=scores.device.type, enabled=False):
        b = _prepare(scores, labels, mask, weights)
        s, y, m = b.scores, b.labels, b.mask
        with torch.no_grad():
            ideal = _ideal_dcg(y, k)
            g = _gains(y) / ideal.clamp(min=torch.finfo(ideal.dtype).tiny).unsqueeze(1)
            ranks = _score_ranks(s, m)
            inv_d = 1.0 / torch.log2(1.0 + ranks.to(s.dtype))
            rho = (inv_d.unsqueeze(2) - inv_d.unsqueeze(1)).abs()
            # delta depends on the rank gap alone: look it up in a table over gaps 0..L instead
            # of evaluating logs on all B*L*L pairs (gap 0 only occurs on the diagonal, a non-pair)
            gaps = torch.arange(s.shape[1] + 1, dtype=s.dtype, device=s.device)
            inv_gap = 1.0 / torch.log2(1.0 + gaps.clamp(min=1.0))
            delta = (inv_gap - 1.0 / torch.log2(2.0 + gaps)).abs()
            delta = delta[(ranks.unsqueeze(2) - ranks.unsqueeze(1)).abs()]
            pairs = m.unsqueeze(2) & m.unsqueeze(1) & (y.unsqueeze(2) > y.unsqueeze(1))
            if k is not None:
                pairs &= (ranks.unsqueeze(2) <= k) | (ranks.unsqueeze(1) <= k)
            # within a pair G_i > G_j (label_i > label_j), so G_i - G_j needs no abs
            pair_w = (rho + mu * delta) * (g.unsqueeze(2) - g.unsqueeze(1)) * b.weights.unsqueeze(2)
            pair_w = torch.where(pairs, pair_w, torch.zeros_like(pair_w))
        # -log2(sigmoid(x)) = -logsigmoid(x) / ln 2; logsigmoid stays finite for large |x|
        diff = s.unsqueeze(2) - s.unsqueeze(1)  # [b, i, j] = s_i - s_j
        per_list = -(pair_w * F.logsigmoid(sigma * diff)).sum(dim=(1, 2)) / _LN2
        contributes = (b.weights * _gains(y)).sum(dim=1) > 0
        return _mean_over_lists(per_list, contributes)


def approx_ndcg_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    mask: Tensor,
    weights: Tensor | None = None,
    alpha: float = 10.0,
) -> Tensor:
    """ApproxNDCG (Qin, Liu and Li 2010; Bruch et al. 2019): NDCG with a smooth rank.

    scores, labels, mask, weights: (B, L). The rank of item i is approximated by
    pi_i = 1 + sum_{j != i, real} sigmoid(alpha * (s_j - s_i)); the loss of a list is
    -(sum_i weights_i * (2**label_i - 1) / log2(1 + pi_i)) / ideal DCG, the ideal DCG from the
    labels alone (so it is linear in the weights). Larger alpha: closer to true NDCG, rougher
    gradients. Returns a scalar: the mean over lists with sum(weights * gain) > 0.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        b = _prepare(scores, labels, mask, weights)
        s, y, m = b.scores, b.labels, b.mask
        length = s.shape[1]
        others = m.unsqueeze(1) & ~torch.eye(length, dtype=torch.bool, device=s.device)
        # [b, i, j] = sigmoid(alpha * (s_j - s_i)): a soft count of j ranking above i
        beaten_by = torch.sigmoid(alpha * (s.unsqueeze(1) - s.unsqueeze(2)))
        approx_rank = 1.0 + torch.where(others, beaten_by, torch.zeros_like(beaten_by)).sum(2)
        weighted_gain = b.weights * _gains(y)
        dcg = (weighted_gain / torch.log2(1.0 + approx_rank)).sum(dim=1)
        ideal = _ideal_dcg(y, None)
        per_list = -dcg / ideal.clamp(min=torch.finfo(ideal.dtype).tiny)
        return _mean_over_lists(per_list, weighted_gain.sum(dim=1) > 0)


def bce_loss(
    scores: Tensor, labels: Tensor, *, mask: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Pointwise binary cross-entropy with logits on the target label > 0.

    scores, labels, mask, weights: (B, L). Returns a scalar: sum over real candidates of
    weights_i * bce_i divided by the number of real candidates (not by the sum of weights, so
    inverse propensity weights keep their unbiasedness). Every real candidate counts, in lists
    with or without positives; a batch with no real candidate gives a connected zero.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        b = _prepare(scores, labels, mask, weights)
        target = (b.labels > 0).to(b.scores.dtype)
        per_item = F.binary_cross_entropy_with_logits(b.scores, target, reduction="none")
        total = torch.where(b.mask, b.weights * per_item, torch.zeros_like(per_item)).sum()
        return total / b.mask.sum().clamp(min=1)


def distill_loss(
    scores: Tensor, teacher: Tensor, *, mask: Tensor, temperature: float = 1.0
) -> Tensor:
    """Listwise distillation (Hinton et al. 2015, applied per list): the cross-entropy from
    softmax(teacher / T) to softmax(scores / T) over each list's real candidates, minus the
    teacher's entropy (so a student equal to its teacher scores 0), times T**2 (which keeps the
    gradient's size as T changes).

    scores, teacher, mask: (B, L); teacher is a constant (no gradient reaches it). Returns a
    scalar: the mean over lists with a real candidate (a one-candidate list adds 0).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    with torch.autocast(device_type=scores.device.type, enabled=False):
        b = _prepare(scores, teacher.detach(), mask, None)
        low = torch.finfo(b.scores.dtype).min  # padding's logit, as in softmax_loss
        log_q = torch.log_softmax((b.scores / temperature).masked_fill(~b.mask, low), dim=1)
        log_p = torch.log_softmax((b.labels / temperature).masked_fill(~b.mask, low), dim=1)
        kl = torch.where(b.mask, log_p.exp() * (log_p - log_q), torch.zeros_like(log_q))
        return _mean_over_lists(kl.sum(dim=1) * temperature**2, b.mask.any(dim=1))


# every entry takes (scores, labels, *, mask, weights=None); lambdaloss and approxndcg also take
# their own keyword parameters (mu, sigma, k; alpha), hence Callable[..., Tensor]
LOSSES: dict[str, Callable[..., Tensor]] = {
    "softmax": softmax_loss,
    "lambdaloss": lambda_loss,
    "approxndcg": approx_ndcg_loss,
    "bce": bce_loss,
}


# Losses that average over real candidates; the others average over the lists with a positive.
# A mean over batches equals the loss over a whole split when each batch's loss is weighted by
# its count of these (ranker.train.scoring.held_out_loss).
PER_CANDIDATE = frozenset({"bce"})


def bound_loss(name: str, **settings: Any) -> Callable[..., Tensor]:
    """The loss ``name`` with those of ``settings`` (k, mu, alpha) its signature takes."""
    fn = LOSSES[name]
    takes = inspect.signature(fn).parameters
    return functools.partial(fn, **{k: v for k, v in settings.items() if k in takes})
