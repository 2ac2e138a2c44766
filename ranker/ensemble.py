"""A seed ensemble: Transformers trained alike from different seeds, scored as one model.

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


# What the Transformer kind trains, scores and exports: one model or a seed ensemble.
TransformerModel = Ranker | SeedEnsemble


def member_seed(seed: int, k: int) -> int:
    """Member k's training seed: apart from the seeds ``ranker train --seeds N`` gives its
    versions (seed, seed + 1, ...), so two published ensembles share no member."""
    return seed + 100_003 * k
