"""Models combined by their standardised scores: a seed ensemble (Transformers trained alike
from different seeds, scored as one model) and a blend of a Transformer with its baseline.

Each member's scores are standardised within the list (their scales differ from seed to seed),
then averaged. Measured before it was built (``compare_models.py --ensemble``, worlds 31 and 37,
never tuned on; oracle NDCG@10): three standalone Transformers gained 0.009-0.020 over each of
their single seeds, two to three times what three LightGBMs gain over theirs. The price is
inference: every member scores every list (``--set ensemble=3`` triples the model's time).

The ensemble takes the inputs ``Ranker`` takes and returns what it returns, so training's
validation, scoring, the ONNX export (one graph holding every member) and serving use it as
they use one model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ranker.model import FeatureSpec, Ranker, RankerConfig


def standardise_within_list(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) scores minus their list's mean over real candidates, divided by the list's
    standard deviation (population; a constant list gives zeros). Padding gives zero."""
    m = mask.to(scores.dtype)  # (B, L)
    n = m.sum(-1, keepdim=True).clamp_min(1.0)  # (B, 1)
    mean = (scores * m).sum(-1, keepdim=True) / n  # (B, 1)
    centred = (scores - mean) * m  # (B, L)
    sd = torch.sqrt((centred * centred).sum(-1, keepdim=True) / n)  # (B, 1)
    # Where the list is constant (or has one candidate), every z is 0, not 0 / 0.
    return centred / torch.where(sd > 0, sd, torch.ones_like(sd))  # (B, L)


class SeedEnsemble(nn.Module):
    """Members of one architecture and feature spec; the mean of their standardised scores."""

    def __init__(self, members: Sequence[Ranker]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("a seed ensemble needs at least two members")
        first = members[0]
        if any(m.spec != first.spec or m.cfg != first.cfg for m in members[1:]):
            raise ValueError("a seed ensemble's members must share their spec and architecture")
        self.members = nn.ModuleList(members)
        self.spec: FeatureSpec = first.spec
        self.cfg: RankerConfig = first.cfg

    def forward(
        self,
        num: torch.Tensor,  # (B, L, F) float
        cat: torch.Tensor,  # (B, L, C) int64
        mask: torch.Tensor,  # (B, L) bool, real candidates
        hist_num: torch.Tensor,  # (B, H, Hn) float
        hist_cat: torch.Tensor,  # (B, H, Hc) int64
        hist_mask: torch.Tensor,  # (B, H) bool
    ) -> torch.Tensor:
        z = [
            standardise_within_list(m(num, cat, mask, hist_num, hist_cat, hist_mask), mask)
            for m in self.members
        ]  # each (B, L)
        return torch.stack(z).mean(0)  # (B, L)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BaselineBlend(nn.Module):
    """A re-ranker that blends instead of correcting: ``(1 - weight)`` times the baseline's score
    and ``weight`` times a Transformer's (one model or a seed ensemble, trained on the dataset's
    features alone), each standardised within the list.

    Its inputs are a re-ranker's (the dataset's numeric features, then the baseline's score and
    rank), so serving feeds it as it feeds the residual re-ranker. Why it exists: on world 47
    (50,000 requests) the residual re-ranker gained +0.0015 to +0.0025 oracle NDCG@10 over its
    LightGBM, while the equal blend of that LightGBM with an independently trained standalone
    Transformer gained +0.011 (README "A blend of the two models").
    """

    def __init__(self, inner: Ranker | SeedEnsemble, spec: FeatureSpec, weight: float):
        super().__init__()
        # 0 and 1: the baseline's or the Transformer's ranking alone, through the same inputs
        # (both models still run)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"a blend's weight must be in [0, 1], got {weight}")
        self.n_inner = len(inner.spec.num_transforms)
        if len(spec.num_transforms) != self.n_inner + 2:
            raise ValueError("a blend's inputs are its Transformer's plus the baseline's two")
        self.inner: Ranker | SeedEnsemble = inner
        self.spec = spec  # the inputs it is fed: the Transformer's, then the baseline's
        self.cfg: RankerConfig = inner.cfg
        self.weight = float(weight)
        self.baseline_input = self.n_inner  # the baseline's score (ranker.inputs.baseline_inputs)

    def forward(
        self,
        num: torch.Tensor,  # (B, L, F + 2) float: the dataset's features, baseline score, rank
        cat: torch.Tensor,  # (B, L, C) int64
        mask: torch.Tensor,  # (B, L) bool, real candidates
        hist_num: torch.Tensor,  # (B, H, Hn) float
        hist_cat: torch.Tensor,  # (B, H, Hc) int64
        hist_mask: torch.Tensor,  # (B, H) bool
    ) -> torch.Tensor:
        own = self.inner(num[..., : self.n_inner], cat, mask, hist_num, hist_cat, hist_mask)
        # float32 whatever the Transformer's precision: a float16 copy adds its z-scores here
        z_own = standardise_within_list(own.float(), mask)  # (B, L)
        z_base = standardise_within_list(num[..., self.baseline_input].float(), mask)  # (B, L)
        return (1.0 - self.weight) * z_base + self.weight * z_own  # (B, L)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# What the Transformer kind trains, scores and exports: one model, a seed ensemble, or either
# blended with the baseline.
TransformerModel = Ranker | SeedEnsemble | BaselineBlend


def rankers_of(model: TransformerModel) -> list[Ranker]:
    """The single models inside ``model``."""
    inner = model.inner if isinstance(model, BaselineBlend) else model
    if isinstance(inner, Ranker):
        return [inner]
    return [m for m in inner.members if isinstance(m, Ranker)]


def member_seed(seed: int, k: int) -> int:
    """Member k's training seed: apart from the seeds ``ranker train --seeds N`` gives its
    versions (seed, seed + 1, ...), so two published ensembles share no member."""
    return seed + 100_003 * k
