"""Ranking losses against plain-loop references, plus invariances, padding, weights and autocast."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from ranker.losses import (
    LOSSES,
    approx_ndcg_loss,
    bce_loss,
    lambda_loss,
    softmax_loss,
)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
LISTWISE = ["softmax", "lambdaloss", "approxndcg"]

# --------------------------------------------------------------------------------------------
# references: one list at a time in Python floats, real candidates only


def softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def gain(label: float) -> float:
    return 2.0**label - 1.0


def ideal_dcg(y: list[float], k: int | None = None) -> float:
    top = sorted(y, reverse=True)[:k]
    return sum(gain(lab) / math.log2(r + 2.0) for r, lab in enumerate(top))


def has_weighted_gain(y: list[float], w: list[float]) -> bool:
    return sum(wi * gain(yi) for yi, wi in zip(y, w, strict=True)) > 0


def ref_softmax(s: list[float], y: list[float], w: list[float]) -> float | None:
    g = [wi * gain(yi) for yi, wi in zip(y, w, strict=True)]
    if sum(g) <= 0:
        return None
    top = max(s)
    lse = top + math.log(sum(math.exp(si - top) for si in s))
    return -sum(gi / sum(g) * (si - lse) for gi, si in zip(g, s, strict=True))


def ref_lambda(
    s: list[float],
    y: list[float],
    w: list[float],
    mu: float = 10.0,
    sigma: float = 1.0,
    k: int | None = None,
) -> float | None:
    if not has_weighted_gain(y, w):
        return None
    n = len(s)
    order = sorted(range(n), key=lambda i: (-s[i], i))
    rank = {item: pos + 1 for pos, item in enumerate(order)}
    idcg = ideal_dcg(y, k)

    def inv_d(r: float) -> float:
        return 1.0 / math.log2(1.0 + r)

    total = 0.0
    for i in range(n):
        for j in range(n):
            ri, rj = rank[i], rank[j]
            if y[i] <= y[j] or (k is not None and ri > k and rj > k):
                continue
            rho = abs(inv_d(ri) - inv_d(rj))
            delta = abs(inv_d(abs(ri - rj)) - inv_d(abs(ri - rj) + 1))
            weight = (rho + mu * delta) * abs(gain(y[i]) - gain(y[j])) / idcg * w[i]
            total += weight * softplus(-sigma * (s[i] - s[j])) / math.log(2.0)
    return total


def ref_approx(s: list[float], y: list[float], w: list[float], alpha: float = 10.0) -> float | None:
    if not has_weighted_gain(y, w):
        return None
    dcg = 0.0
    for i in range(len(s)):
        pi = 1.0 + sum(
            1.0 / (1.0 + math.exp(-alpha * (s[j] - s[i]))) for j in range(len(s)) if j != i
        )
        dcg += w[i] * gain(y[i]) / math.log2(1.0 + pi)
    return -dcg / ideal_dcg(y)


def split(batch: Batch) -> list[tuple[list[float], list[float], list[float]]]:
    s, y, m, w = batch
    out = []
    for i in range(s.shape[0]):
        keep = m[i]
        out.append((s[i, keep].tolist(), y[i, keep].tolist(), w[i, keep].tolist()))
    return out


def ref_batch(name: str, batch: Batch, **kw: float | int | None) -> float:
    if name == "bce":
        total, count = 0.0, 0
        for s, y, w in split(batch):
            for si, yi, wi in zip(s, y, w, strict=True):
                total += wi * (softplus(si) - (1.0 if yi > 0 else 0.0) * si)
                count += 1
        return total / max(count, 1)
    ref: Callable[..., float | None] = {
        "softmax": ref_softmax,
        "lambdaloss": ref_lambda,
        "approxndcg": ref_approx,
    }[name]
    values = [v for s, y, w in split(batch) if (v := ref(s, y, w, **kw)) is not None]
    return sum(values) / len(values) if values else 0.0


def random_batch(
    b: int, n: int, *, seed: int, dtype: torch.dtype = torch.float64, garbage: bool = True
) -> Batch:
    """Tie-free scores, labels 0-4 (sparse), random lengths at random slots, garbage padding."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, n, generator=g, dtype=torch.float64) * 2.0
    labels = torch.randint(0, 5, (b, n), generator=g) * (torch.rand(b, n, generator=g) < 0.4)
    lengths = torch.randint(1, n + 1, (b, 1), generator=g)
    slots = torch.rand(b, n, generator=g).argsort(dim=1)
    mask = slots < lengths
    weights = 0.2 + 2.8 * torch.rand(b, n, generator=g, dtype=torch.float64)
    if garbage:
        scores = scores.masked_fill(~mask, float("nan"))
        labels = labels.to(torch.float64).masked_fill(~mask, 7.0)
        weights = weights.masked_fill(~mask, float("inf"))
    return scores.to(dtype), labels.to(dtype), mask, weights.to(dtype)


def call(
    name: str, batch: Batch, *, weighted: bool = True, **kw: float | int | None
) -> torch.Tensor:
    s, y, m, w = batch
    return LOSSES[name](s, y, mask=m, weights=w if weighted else None, **kw)


CASES: list[tuple[str, dict[str, float | int | None]]] = [
    ("softmax", {}),
    ("lambdaloss", {}),
    ("lambdaloss", {"k": 3}),
    ("lambdaloss", {"mu": 0.5, "sigma": 2.0}),
    ("approxndcg", {}),
    ("approxndcg", {"alpha": 2.0}),
    ("bce", {}),
]


# --------------------------------------------------------------------------------------------
# against the references


@pytest.mark.parametrize(("name", "kw"), CASES)
@pytest.mark.parametrize(("b", "n"), [(1, 1), (3, 2), (6, 7), (8, 20)])
def test_losses_match_loop_references(name: str, kw: dict, b: int, n: int) -> None:
    batch = random_batch(b, n, seed=31 * b + n)
    for weighted in (False, True):
        ref_w = batch if weighted else (*batch[:3], batch[2].to(torch.float64))
        expected = ref_batch(name, ref_w, **kw)
        got = call(name, batch, weighted=weighted, **kw)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # float32 computes the same up to rounding
    b32 = random_batch(b, n, seed=31 * b + n, dtype=torch.float32)
    expected = ref_batch(name, batch, **kw)
    assert call(name, b32, **kw).item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_approx_ndcg_known_value() -> None:
    # TF-Ranking's documented example: labels [1, 0], scores [0.6, 0.8], temperature 0.1
    s = torch.tensor([[0.6, 0.8]])
    y = torch.tensor([[1.0, 0.0]])
    got = approx_ndcg_loss(s, y, mask=torch.ones(1, 2, dtype=torch.bool), alpha=10.0)
    assert got.item() == pytest.approx(-0.655107, abs=1e-6)


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_gradcheck(name: str, kw: dict) -> None:
    s, y, m, w = random_batch(2, 4, seed=2, garbage=False)
    s.requires_grad_(True)
    fn = LOSSES[name]
    assert torch.autograd.gradcheck(lambda x: fn(x, y, mask=m, weights=w, **kw), (s,))


# --------------------------------------------------------------------------------------------
# invariances


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_padding_never_matters(name: str, kw: dict) -> None:
    s, y, m, w = random_batch(6, 9, seed=4, dtype=torch.float32)
    base = None
    for fill in (0.0, 1e30, -1e30, float("nan"), float("inf"), float("-inf")):
        x = s.masked_fill(~m, fill).requires_grad_(True)
        y2 = y.masked_fill(~m, fill if math.isfinite(fill) else float("nan"))
        w2 = w.masked_fill(~m, fill)
        loss = LOSSES[name](x, y2, mask=m, weights=w2, **kw)
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert (x.grad[~m] == 0).all()
        if base is None:
            base = (loss.detach(), x.grad)
        else:
            torch.testing.assert_close(loss.detach(), base[0])
            torch.testing.assert_close(x.grad, base[1])


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_permuting_candidates_within_lists_changes_nothing(name: str, kw: dict) -> None:
    s, y, m, w = random_batch(5, 8, seed=8)
    perm = torch.rand(5, 8, generator=torch.Generator().manual_seed(0)).argsort(dim=1)
    shuffled = (s.gather(1, perm), y.gather(1, perm), m.gather(1, perm), w.gather(1, perm))
    torch.testing.assert_close(call(name, shuffled, **kw), call(name, (s, y, m, w), **kw))


@pytest.mark.parametrize("name", LISTWISE)
def test_lists_without_positives_contribute_nothing(name: str) -> None:
    good = (torch.tensor([[0.3, -1.0, 2.0]]), torch.tensor([[2.0, 0.0, 1.0]]))
    empty = (torch.tensor([[5.0, 1.0, -2.0]]), torch.tensor([[0.0, 0.0, 0.0]]))
    padded = (torch.tensor([[float("nan")] * 3]), torch.tensor([[4.0, 4.0, 4.0]]))
    m1, m3 = torch.ones(1, 3, dtype=torch.bool), torch.tensor([[True] * 3, [True] * 3, [False] * 3])
    alone = LOSSES[name](good[0], good[1], mask=m1)
    s = torch.cat([good[0], empty[0], padded[0]])
    y = torch.cat([good[1], empty[1], padded[1]])
    torch.testing.assert_close(LOSSES[name](s, y, mask=m3), alone)


def test_bce_counts_every_real_candidate() -> None:
    s = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    m = torch.tensor([[True, True], [True, False]])
    expected = (softplus(0.3) - 0.3 + softplus(-1.0) + softplus(2.0)) / 3
    assert bce_loss(s, y, mask=m).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_batch_with_nothing_to_learn_gives_a_connected_zero(name: str) -> None:
    nan = float("nan")
    cases = [
        (torch.randn(3, 4), torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.bool)),
        (torch.full((2, 3), nan), torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool)),
        (torch.zeros(0, 5), torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.bool)),
    ]
    if name == "bce":  # bce learns from negatives too, so only the padded batches are empty
        cases = cases[1:]
    for s, y, m in cases:
        x = s.clone().requires_grad_(True)
        loss = LOSSES[name](x, y, mask=m)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert x.grad is not None and (x.grad == 0).all()


@pytest.mark.parametrize(("name", "kw"), [c for c in CASES if c[0] != "bce"])
def test_the_ideal_order_has_the_lower_loss(name: str, kw: dict) -> None:
    g = torch.Generator().manual_seed(12)
    for _ in range(10):
        n = int(torch.randint(2, 12, (1,), generator=g))
        y = torch.randint(0, 5, (1, n), generator=g).to(torch.float32)
        if y.max() == y.min():
            y[0, 0] = y.max() + 1.0
        m = torch.ones(1, n, dtype=torch.bool)
        ideal = y + 0.01 * torch.rand(1, n, generator=g)  # ordered like the labels, no ties
        assert LOSSES[name](ideal, y, mask=m, **kw) < LOSSES[name](-ideal, y, mask=m, **kw)


# --------------------------------------------------------------------------------------------
# weights (inverse propensity weighting)


@pytest.mark.parametrize("name", list(LOSSES))
def test_unit_weights_equal_no_weights(name: str) -> None:
    s, y, m, _ = random_batch(4, 6, seed=9)
    torch.testing.assert_close(
        LOSSES[name](s, y, mask=m, weights=torch.ones_like(s)), LOSSES[name](s, y, mask=m)
    )


def test_doubling_a_positive_weight_follows_each_formula() -> None:
    s = torch.tensor([[0.5, 1.5, -0.2, 0.9]], dtype=torch.float64)
    y = torch.tensor([[2.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    m = torch.ones(1, 4, dtype=torch.bool)
    w = torch.ones(1, 4, dtype=torch.float64)
    w2 = w.clone()
    w2[0, 2] = 2.0  # the label-1 positive counts twice
    e2 = torch.zeros_like(w)
    e2[0, 2] = 1.0

    # softmax: the target moves from (3, 1)/4 to (3, 2)/5 on the two positives
    log_p = torch.log_softmax(s, dim=1)[0]
    expected = -(3 / 5 * log_p[0] + 2 / 5 * log_p[2])
    torch.testing.assert_close(softmax_loss(s, y, mask=m, weights=w2), expected)
    # the other losses are linear in the weights: the change is item 2's own contribution
    for fn in (lambda_loss, approx_ndcg_loss, bce_loss):
        delta = fn(s, y, mask=m, weights=w2) - fn(s, y, mask=m, weights=w)
        torch.testing.assert_close(delta, fn(s, y, mask=m, weights=e2))
    # approx: item 2's term is -(gain / log2(1 + approx rank)) / ideal DCG
    pi = 1.0 + sum(1.0 / (1.0 + math.exp(-10.0 * (sj - (-0.2)))) for sj in (0.5, 1.5, 0.9))
    own = -(1.0 / math.log2(1.0 + pi)) / (3.0 + 1.0 / math.log2(3.0))
    assert approx_ndcg_loss(s, y, mask=m, weights=e2).item() == pytest.approx(own, rel=1e-12)
    # bce: item 2's term is its cross-entropy over the 4 real candidates
    own = softplus(-0.2) - (-0.2)
    assert bce_loss(s, y, mask=m, weights=e2).item() == pytest.approx(own / 4, rel=1e-12)
    # lambda: item 2 is the more relevant item of the pairs (2, 1) and (2, 3)
    expected_lambda = ref_lambda([0.5, 1.5, -0.2, 0.9], [2.0, 0.0, 1.0, 0.0], [0, 0, 1.0, 0])
    got = lambda_loss(s, y, mask=m, weights=e2).item()
    assert got == pytest.approx(expected_lambda, rel=1e-12)


# --------------------------------------------------------------------------------------------
# precision, autocast, API


@pytest.mark.parametrize("name", list(LOSSES))
def test_low_precision_and_autocast(name: str) -> None:
    s, y, m, w = random_batch(4, 10, seed=6, dtype=torch.float32, garbage=False)
    layer = torch.nn.Linear(3, 1)
    feats = torch.randn(4, 10, 3, generator=torch.Generator().manual_seed(1))
    feats = feats.masked_fill(~m.unsqueeze(2), 1e4)  # padding blows up in bfloat16 arithmetic
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = (layer(feats).squeeze(2) * 1e3).masked_fill(~m, float("inf"))
        assert scores.dtype == torch.bfloat16
        loss = LOSSES[name](scores, y, mask=m, weights=w)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    # inside the loss the bfloat16 scores are exactly widened to float32
    torch.testing.assert_close(loss, LOSSES[name](scores.detach().float(), y, mask=m, weights=w))
    half = LOSSES[name](s.half().masked_fill(~m, float("-inf")), y, mask=m, weights=w)
    assert half.dtype == torch.float32 and torch.isfinite(half)


def test_registry_and_argument_checks() -> None:
    expected = {
        "softmax": softmax_loss,
        "lambdaloss": lambda_loss,
        "approxndcg": approx_ndcg_loss,
        "bce": bce_loss,
    }
    assert expected == LOSSES
    s, y, m = torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    for fn in LOSSES.values():
        with pytest.raises(ValueError, match="shape"):
            fn(s, y[:, :2], mask=m)
        with pytest.raises(ValueError, match="2-D"):
            fn(s[0], y[0], mask=m[0])
    with pytest.raises(ValueError, match="k must be"):
        lambda_loss(s, y, mask=m, k=0)


def test_lambda_ranks_break_ties_by_index() -> None:
    g = torch.Generator().manual_seed(21)
    s = torch.randint(0, 3, (4, 40), generator=g).to(torch.float64)  # many ties
    y = torch.randint(0, 4, (4, 40), generator=g).to(torch.float64)
    m = torch.ones(4, 40, dtype=torch.bool)
    batch = (s, y, m, torch.ones_like(s))
    for k in (None, 5):
        expected = ref_batch("lambdaloss", batch, k=k)
        assert lambda_loss(s, y, mask=m, k=k).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
@pytest.mark.parametrize("name", list(LOSSES))
def test_no_nan_anywhere_in_the_graph(name: str) -> None:
    # anomaly mode raises on any NaN produced in backward, even one masked out afterwards
    s = torch.tensor([[0.2, float("nan"), -1.0], [float("nan")] * 3, [5.0, -2.0, 0.0]])
    y = torch.tensor([[1.0, 2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    m = torch.tensor([[True, False, True], [False] * 3, [True] * 3])
    x = s.requires_grad_(True)
    with torch.autograd.detect_anomaly(check_nan=True):
        LOSSES[name](x, y, mask=m).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
