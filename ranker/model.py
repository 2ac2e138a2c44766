"""The Transformer ranker: one request's candidates in, one relevance score per candidate out.

    candidates (B, L, F numeric + C categorical)          history (B, H events)
        |  CandidateEncoder: normalise, embed, project        |  HistoryEncoder
        v                                                     v
    tokens (B, L, D) ---- TargetAttention: each candidate reads the user's history (DIN/BST)
        |  [+ PairCounts: log1p(candidates sharing each pair column, e.g. the brand)]
        |  [+ SetContext: the list's mean token, projected (off by default)]
    ListBlock x n_layers: self-attention across the candidates (PRM-style list context),
        |                 padding masked, no positional encoding: permutation-equivariant;
        |                 a learned logit bias for pairs sharing a pair column, a null slot
        v
    ScoreHead -> scores (B, L)   [+ scale * baseline score, re-ranker only]
                                 [+ PositionBias(logged position), training only]

Numeric features arrive raw; their transforms and train-set normalisation live in buffers, so
the exported ONNX graph carries them. Attention masks are additive in the model's dtype (no
boolean masks), which keeps the graph exportable and fp16-safe.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ranker.layers import MASKED, MLP, ListBlock, TargetAttention, pair_matrix


@dataclass(frozen=True)
class FeatureSpec:
    """What the dataset fixes, never the user: the inputs' layout, transforms and the statistics
    fitted on the training split (from the dataset manifest; see ``spec_from_manifest``)."""

    num_transforms: list[str]  # per numeric feature: none | log1p | slog1p
    num_mean: list[float]  # of the transformed value, fitted on train
    num_std: list[float]
    cat_sizes: list[int]  # embedding rows per categorical feature (0 = unknown)
    hist_num_transforms: list[str] = field(default_factory=list)
    hist_num_mean: list[float] = field(default_factory=list)
    hist_num_std: list[float] = field(default_factory=list)
    hist_cat_sizes: list[int] = field(default_factory=list)
    hist_cat_shared: list[int] = field(default_factory=list)  # candidate field it shares, or -1
    # Index of a numeric input added, raw and scaled, to the score: the re-ranker's baseline
    # score. With the head's last layer zero-initialised the model starts as the baseline's
    # ranking and learns a correction to it (-1: off).
    residual_input: int = -1
    # Categorical inputs (indices into cat) whose shared values make two candidates a pair the
    # list attention can single out (brand, category): the feature config's [list]
    # pair_columns. Code 0 (unknown, none) pairs with nothing.
    pair_columns: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RankerConfig:
    """The architecture: the user's settings (``--set`` keys; see ``ranker.kinds.transformer``).
    Frozen: a built model's config does not change."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 3
    d_ff: int = 128
    cat_dim: int = 16
    dropout: float = 0.1  # on block outputs and MLPs
    # On attention weights. Off by default: any value > 0 takes the CPU off the fused attention
    # kernel (measured: attention forward + backward 3x slower) for no gain on our validation.
    attn_dropout: float = 0.0
    input_noise: float = 0.1  # std of Gaussian noise on normalised numeric inputs, training only
    # Share of categorical values (item ids included) replaced by "unknown" (0) in training:
    # keeps the model from memorising clicked items, and trains the cold-start embedding.
    cat_dropout: float = 0.0
    use_history: bool = True
    # 0: each numeric feature enters the candidate MLP as its normalised value. k > 0: also as
    # k learned frequencies (sin, cos) passed through a small per-feature layer, so that the
    # MLP need not carve thresholds out of one scalar (periodic embeddings, Gorishniy et al.
    # 2022, "On Embeddings for Numerical Features in Tabular Deep Learning").
    numeric_embedding: int = 0
    # False: each candidate attends to itself (and the null slot) only, and sees no pair
    # counts: the ablation without list context, blocks and depth kept.
    list_attention: bool = True
    # A learned key/value every candidate can attend to in the list blocks, so that attention
    # need not go to other candidates when none is relevant (softmax must put its mass somewhere).
    null_slot: bool = True
    pair_counts: bool = True  # log1p(candidates sharing each pair column) added to each token
    # The list's mean token, projected, added to every token before the blocks (DeepSets-style
    # set context). Off by default; with list_attention=False it is the ablation that sees what
    # the whole list is like but no other candidate in particular.
    set_context: bool = False
    bias_tower: bool = False  # a logged-position term added in training only (from --bias)
    max_position: int = 128

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureNormalizer(nn.Module):
    """Named transforms, then (x - mean) / std, clamped: raw features in, model-ready out."""

    log1p: torch.Tensor  # (F,) bool buffers and (F,) statistics, saved with the model
    slog1p: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, transforms: list[str], mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("log1p", torch.tensor([t == "log1p" for t in transforms]))
        self.register_buffer("slog1p", torch.tensor([t == "slog1p" for t in transforms]))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        # A transform no feature uses is left out of the graph (a served request otherwise
        # pays its element-wise passes over every candidate for nothing).
        self.uses = {t for t in transforms if t != "none"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., F) -> (..., F)
        if "log1p" in self.uses:
            x = torch.where(self.log1p, torch.log1p(torch.relu(x)), x)
        if "slog1p" in self.uses:
            x = torch.where(self.slog1p, torch.sign(x) * torch.log1p(torch.abs(x)), x)
        return torch.clamp((x - self.mean) / self.std, -8.0, 8.0)


def drop_categories(cat: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """In training, each categorical value replaced by 0 ("unknown") with probability p."""
    if not training or p <= 0:
        return cat
    return cat * (torch.rand(cat.shape, device=cat.device) >= p)  # (..., C)


class PeriodicEmbedding(nn.Module):
    """(..., F) normalised numerics -> (..., F * width): per feature, sin and cos of k learned
    frequencies, then a per-feature linear layer and ReLU."""

    def __init__(self, n_features: int, k: int, width: int = 8, sigma: float = 0.5):
        super().__init__()
        self.freq = nn.Parameter(sigma * torch.randn(n_features, k))
        self.weight = nn.Parameter(torch.randn(n_features, 2 * k, width) / math.sqrt(2 * k))
        self.bias = nn.Parameter(torch.zeros(n_features, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = 2 * math.pi * x[..., None] * self.freq  # (..., F, k)
        v = torch.cat([torch.sin(v), torch.cos(v)], dim=-1)  # (..., F, 2k)
        h = F.relu(torch.einsum("...fk,fkw->...fw", v, self.weight) + self.bias)  # (..., F, W)
        return h.flatten(-2)  # (..., F * W)


class CandidateEncoder(nn.Module):
    """Numeric and categorical features of each candidate -> a D-dim token."""

    def __init__(self, spec: FeatureSpec, cfg: RankerConfig):
        super().__init__()
        self.norm = FeatureNormalizer(spec.num_transforms, spec.num_mean, spec.num_std)
        self.embeddings = nn.ModuleList(nn.Embedding(n, cfg.cat_dim) for n in spec.cat_sizes)
        n_num = len(spec.num_transforms)
        self.periodic = (
            PeriodicEmbedding(n_num, cfg.numeric_embedding) if cfg.numeric_embedding else None
        )
        width = 8 if self.periodic is not None else 0
        d_in = n_num * (1 + width) + cfg.cat_dim * len(spec.cat_sizes)
        self.proj = MLP(d_in, 2 * cfg.d_model, cfg.d_model, cfg.dropout)
        self.ln = nn.LayerNorm(cfg.d_model)
        self.noise = cfg.input_noise

    def forward(self, num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        x = self.norm(num)  # (B, L, F)
        if self.training and self.noise > 0:  # DASALC-style augmentation of tabular inputs
            x = x + self.noise * torch.randn_like(x)
        parts = [x]
        if self.periodic is not None:
            parts.append(self.periodic(x))  # (B, L, F * 8)
        parts += [emb(cat[..., j]) for j, emb in enumerate(self.embeddings)]  # (B, L, cat_dim)
        return self.ln(self.proj(torch.cat(parts, dim=-1)))  # (B, L, D)


class HistoryEncoder(nn.Module):
    """Behaviour-sequence events (item, category, age, ordered) -> D-dim tokens."""

    def __init__(self, spec: FeatureSpec, cfg: RankerConfig, candidate: CandidateEncoder):
        super().__init__()
        self.norm = FeatureNormalizer(
            spec.hist_num_transforms, spec.hist_num_mean, spec.hist_num_std
        )
        # A history item shares its embedding with the same candidate field (DIN): what the
        # model learns about an item as a candidate carries over to clicks on it.
        embs: list[nn.Module] = []
        for size, shared in zip(spec.hist_cat_sizes, spec.hist_cat_shared, strict=True):
            embs.append(
                candidate.embeddings[shared] if shared >= 0 else nn.Embedding(size, cfg.cat_dim)
            )
        self.embeddings = nn.ModuleList(embs)
        d_in = len(spec.hist_num_transforms) + cfg.cat_dim * len(spec.hist_cat_sizes)
        self.proj = MLP(d_in, 2 * cfg.d_model, cfg.d_model, cfg.dropout)
        self.ln = nn.LayerNorm(cfg.d_model)
        self.cat_dropout = cfg.cat_dropout

    def forward(self, hist_num: torch.Tensor, hist_cat: torch.Tensor) -> torch.Tensor:
        hist_cat = drop_categories(hist_cat, self.cat_dropout, self.training)
        parts = [self.norm(hist_num)]  # (B, H, Hn)
        parts += [emb(hist_cat[..., j]) for j, emb in enumerate(self.embeddings)]
        return self.ln(self.proj(torch.cat(parts, dim=-1)))  # (B, H, D)


class Ranker(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: RankerConfig):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.candidates = CandidateEncoder(spec, cfg)
        self.history: HistoryEncoder | None = None
        self.target_attention: TargetAttention | None = None
        if cfg.use_history and spec.hist_cat_sizes:
            self.history = HistoryEncoder(spec, cfg, self.candidates)
            self.target_attention = TargetAttention(cfg)
        n_pairs = len(spec.pair_columns) if cfg.list_attention else 0
        self.blocks = nn.ModuleList(ListBlock(cfg, n_pairs) for _ in range(cfg.n_layers))
        self.pair_counts = nn.Linear(n_pairs, cfg.d_model) if n_pairs and cfg.pair_counts else None
        self.set_context = nn.Linear(cfg.d_model, cfg.d_model) if cfg.set_context else None
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = MLP(cfg.d_model, cfg.d_model, 1, cfg.dropout)
        self.residual_scale = nn.Parameter(torch.ones(())) if spec.residual_input >= 0 else None
        self.position_bias = nn.Embedding(cfg.max_position + 1, 1) if cfg.bias_tower else None
        if self.position_bias is not None:
            nn.init.zeros_(self.position_bias.weight)

    def start_position_bias(self, log_propensity: np.ndarray) -> None:
        """Start the position tower at log p(examined) per position (beyond the array, its
        last value) instead of zero; why, and why not by default: ``TrainConfig.position_prior``
        and the README's "Is it the model or the clicks?"."""
        if self.position_bias is None:
            return
        table = np.asarray(log_propensity, dtype=np.float32)
        idx = np.minimum(np.arange(self.cfg.max_position + 1), len(table) - 1)
        with torch.no_grad():
            self.position_bias.weight[:, 0] = torch.from_numpy(table[idx])

    def forward(
        self,
        num: torch.Tensor,  # (B, L, F) float
        cat: torch.Tensor,  # (B, L, C) int64
        mask: torch.Tensor,  # (B, L) bool, real candidates
        hist_num: torch.Tensor,  # (B, H, Hn) float
        hist_cat: torch.Tensor,  # (B, H, Hc) int64
        hist_mask: torch.Tensor,  # (B, H) bool
        positions: torch.Tensor | None = None,  # (B, L) logged positions, training only
    ) -> torch.Tensor:
        # Dropped here, not in the encoder: the pairs must not see a category it blanked.
        cat = drop_categories(cat, self.cfg.cat_dropout, self.training)  # (B, L, C)
        x = self.candidates(num, cat)  # (B, L, D)
        if self.history is not None and self.target_attention is not None:
            hist = self.history(hist_num, hist_cat)  # (B, H, D)
            x = self.target_attention(x, hist, hist_mask)  # (B, L, D)
        if self.set_context is not None:
            real = mask[..., None].to(x.dtype)  # (B, L, 1)
            mean = (x * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1.0)
            x = x + self.set_context(mean)  # (B, L, D), the (B, 1, D) mean broadcast
        closed = ~mask[:, None, :]  # (B, 1, L): padding is never a key
        idx = torch.arange(mask.shape[1], device=mask.device)
        others = idx[:, None] != idx[None, :]  # (L, L)
        if not self.cfg.list_attention:
            closed = closed | others  # (B, L, L): itself only
        key_bias = closed.to(x.dtype)[:, None] * MASKED  # (B, 1, 1|L, L)
        pairs = None
        if self.blocks and self.spec.pair_columns and self.cfg.list_attention:
            pairs = pair_matrix(cat, mask, self.spec.pair_columns).to(x.dtype)  # (B, P, L, L)
            if self.pair_counts is not None:
                x = x + self.pair_counts(torch.log1p(pairs.sum(-1).transpose(1, 2)))  # (B, L, D)
        if self.cfg.null_slot and self.blocks:
            # The null slot's key column, added once here rather than in every block: padding
            # (B, h, L, L) per block was 4% of a served list's model time (ONNX Runtime).
            key_bias = F.pad(key_bias, (1, 0))  # (B, 1, 1|L, 1 + L)
            pairs = None if pairs is None else F.pad(pairs, (1, 0))  # (B, P, L, 1 + L)
        for block in self.blocks:
            x = block(x, key_bias, pairs)
        scores = self.head(self.ln_f(x)).squeeze(-1)  # (B, L)
        if self.residual_scale is not None:
            scores = scores + self.residual_scale * num[..., self.spec.residual_input]  # (B, L)
        if positions is not None and self.position_bias is not None:
            scores = scores + self.position_offset(positions)  # (B, L)
        return scores

    def position_offset(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, L) what the position tower adds to the scores in training (0 without a tower):
        the scores minus this are the served ones."""
        if self.position_bias is None:
            return torch.zeros(positions.shape, device=positions.device)
        pos = torch.clamp(positions, 0, self.cfg.max_position)
        return self.position_bias(pos).squeeze(-1)  # (B, L)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_weights(model: nn.Module, seed: int) -> None:
    """Deterministic initialisation (small normal weights, zero biases).

    A residual re-ranker's last head layer starts at zero: its first scores are the baseline's.
    """
    gen = torch.Generator().manual_seed(seed)
    residual_head = (
        model.head.fc2.weight
        if isinstance(model, Ranker) and model.spec.residual_input >= 0
        else None
    )
    for name, p in model.named_parameters():
        if "position_bias" in name or name.endswith(("null", "pair_bias", "residual_scale")):
            continue
        if p is residual_head:  # the head's last layer, found by reference, not by name
            nn.init.zeros_(p)
            continue
        if name.endswith("bias"):  # (the periodic embedding's are per feature: 2-D)
            nn.init.zeros_(p)
        elif p.dim() >= 2:
            std = 0.02 if "embeddings" in name else 1.0 / math.sqrt(p.shape[1])
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
