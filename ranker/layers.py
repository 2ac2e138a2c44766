"""The Transformer ranker's layers (see ``ranker.model`` for how they stack): the feed-forward
block, attention with an additive key mask, the target attention over the history, the list
blocks and the pair matrix they read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ranker.model import RankerConfig

MASKED = -1.0e4  # additive attention mask for padding: exp() underflows to 0, fp16-safe


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with an additive key mask; shapes from the inputs only."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        # x: (B, Lq, D) queries; ctx: (B, Lk, D) keys/values; key_bias: (B, 1, 1, Lk) additive
        b, lq, d = x.shape
        h = self.n_heads
        q = self.q(x).view(b, lq, h, d // h).transpose(1, 2)  # (B, h, Lq, D/h)
        k, v = self.kv(ctx).chunk(2, dim=-1)  # (B, Lk, D) each
        k = k.view(b, -1, h, d // h).transpose(1, 2)  # (B, h, Lk, D/h)
        v = v.view(b, -1, h, d // h).transpose(1, 2)  # (B, h, Lk, D/h)
        if torch.onnx.is_in_onnx_export():
            # Written out for the exporter: its decomposition of the fused call below, and
            # the head concatenation that decomposition forces, cost 19 graph nodes per
            # attention; a served request pays ONNX Runtime's per-node overhead on each.
            att = (q * (d // h) ** -0.5) @ k.transpose(-2, -1) + key_bias  # (B, h, Lq, Lk)
            y = att.softmax(-1) @ v  # (B, h, Lq, D/h)
            return self.out(y.transpose(1, 2).reshape(b, lq, d))  # (B, Lq, D)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_bias.to(q.dtype),
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, h, Lq, D/h)
        # Heads side by side without a view: with a per-head mask (pair biases) the ONNX
        # exporter's attention decomposition leaves strides that transpose + reshape refuses
        # (and .contiguous() before it, tried again: the same refusal).
        y = torch.cat(y.unbind(1), dim=-1)  # (B, Lq, D), head-major like transpose + reshape
        return self.out(y)


class TargetAttention(nn.Module):
    """Each candidate attends over the user's history (plus a learned "no history" slot)."""

    def __init__(self, cfg: RankerConfig):
        super().__init__()
        self.null = nn.Parameter(torch.zeros(1, 1, cfg.d_model))  # always attendable
        self.ln = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attn_dropout)

    def forward(self, x: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        ctx = torch.cat([self.null.expand(b, 1, -1), hist], dim=1)  # (B, 1 + H, D)
        valid = torch.cat([hist_mask.new_ones((b, 1)), hist_mask], dim=1)  # (B, 1 + H)
        bias = (~valid).to(x.dtype)[:, None, None, :] * MASKED  # (B, 1, 1, 1 + H)
        return x + self.attn(self.ln(x), ctx, bias)  # (B, L, D)


class ListBlock(nn.Module):
    """Pre-norm Transformer block: self-attention across candidates, then a feed-forward.

    Two additions to plain self-attention, both measured against the self-only ablation: a
    learned bias per head and pair column on the logits of pairs sharing that column (so a
    head can look at the other branches of the same brand), and a null slot."""

    def __init__(self, cfg: RankerConfig, n_pair_columns: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attn_dropout)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = MLP(cfg.d_model, cfg.d_ff, cfg.d_model, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.null = nn.Parameter(torch.zeros(1, 1, cfg.d_model)) if cfg.null_slot else None
        self.pair_bias = (
            nn.Parameter(torch.zeros(n_pair_columns, cfg.n_heads)) if n_pair_columns else None
        )

    def forward(
        self, x: torch.Tensor, key_bias: torch.Tensor, pairs: torch.Tensor | None
    ) -> torch.Tensor:
        # key_bias: (B, 1, L, K) additive (padding, and the self-only ablation's mask);
        # pairs: (B, P, L, K) 1.0 where two different candidates share pair column p. K keys:
        # L candidates, after the null slot's key (always open, never a pair) when there is one.
        h = self.ln1(x)
        bias = key_bias
        if pairs is not None and self.pair_bias is not None:
            # (h, P) @ (B, P, L*K): one matrix product lands in the (B, h, L, K) layout (an
            # einsum here exported as transposes around it).
            b, n_pairs, n, k = pairs.shape
            per_head = self.pair_bias.t() @ pairs.reshape(b, n_pairs, n * k)  # (B, h, L*K)
            bias = bias + per_head.reshape(b, -1, n, k)  # (B, h, L, K)
        ctx = h
        if self.null is not None:
            ctx = torch.cat([self.null.expand(x.shape[0], 1, -1), h], dim=1)  # (B, 1 + L, D)
        x = x + self.drop(self.attn(h, ctx, bias))  # (B, L, D)
        return x + self.drop(self.ffn(self.ln2(x)))  # (B, L, D)


def pair_matrix(cat: torch.Tensor, mask: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """(B, P, L, L) bool: candidates i != j, both real, sharing a known (> 0) value of
    categorical column ``columns[p]``. cat: (B, L, C) codes; mask: (B, L) real candidates."""
    idx = torch.arange(mask.shape[1], device=mask.device)  # (L,)
    pc = cat[..., columns].transpose(1, 2)  # (B, P, L)
    # A candidate that cannot pair (padding, code 0) gets a negative code of its own, so one
    # comparison finds the pairs: three boolean passes over (B, P, L, L) took a fifth of a
    # served request's model time (ONNX Runtime, 100 candidates).
    pc = torch.where((pc > 0) & mask[:, None, :], pc, -1 - idx)  # (B, P, L)
    same = pc[..., :, None] == pc[..., None, :]  # (B, P, L, L), the diagonal included
    return same & (idx[:, None] != idx[None, :])  # (B, P, L, L)
