"""Copies of a model's weights kept beside training: the exponential moving average validated
and kept, and snapshots of the best weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights, unaffected by later training steps."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # Multi-tensor ops: one kernel per op for all tensors on CUDA rather than two per
        # tensor; on the CPU the same per-tensor arithmetic as mul_ then add_ (same results).
        live = model.state_dict()
        fl = [k for k, v in live.items() if v.dtype.is_floating_point]
        shadow = [self.shadow[k] for k in fl]
        torch._foreach_mul_(shadow, self.decay)
        torch._foreach_add_(shadow, [live[k] for k in fl], alpha=1 - self.decay)
        for k, v in live.items():
            if not v.dtype.is_floating_point:
                self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Run with the averaged weights, then put the raw ones back."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(raw)
