"""Export the Transformer ranker to ONNX with dynamic batch, list and history axes.

torch.onnx's dynamo exporter traces the model with symbolic sizes, so reshapes follow the
inputs (the model's attention is written with sizes read from its inputs, never with
nn.MultiheadAttention, whose traced graphs bake the sequence length in). Masks are additive
floats in the graph. The parity tests compare ONNX Runtime with torch across batch sizes,
list lengths and history lengths, empty histories included.
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import onnx
import torch
from torch import nn

from ranker.ensemble import TransformerModel, rankers_of
from ranker.kinds.transformer import INPUTS, OUTPUT
from ranker.model import FeatureNormalizer


def example_inputs(
    model: TransformerModel, b: int = 2, n: int = 7, h: int = 5
) -> tuple[torch.Tensor, ...]:
    c = model.spec
    return (
        torch.zeros(b, n, len(c.num_transforms)),
        torch.zeros(b, n, len(c.cat_sizes), dtype=torch.long),
        torch.ones(b, n, dtype=torch.bool),
        torch.zeros(b, h, len(c.hist_num_transforms)),
        torch.zeros(b, h, len(c.hist_cat_sizes), dtype=torch.long),
        torch.ones(b, h, dtype=torch.bool),
    )


Precision = Literal["fp32", "fp16"]


class _Fp32Normalizer(nn.Module):
    """A feature normaliser kept in float32 inside a float16 model: raw inputs (counts in the
    millions) overflow float16 (max 65,504); once normalised and clamped to +-8 they fit."""

    def __init__(self, norm: FeatureNormalizer):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).half()  # (..., F) float16


def half_precision(model: TransformerModel) -> TransformerModel:
    """A float16 copy of ``model`` for GPU serving: float32 in and out, the feature
    normalisers and the residual input in float32, everything else in float16."""
    half = copy.deepcopy(model).eval().half()
    for ranker in rankers_of(half):
        for owner in (ranker.candidates, ranker.history):
            if owner is not None:
                owner.norm = _Fp32Normalizer(owner.norm.float())  # type: ignore[assignment]
    return half


class _Fp32Scores(nn.Module):
    def __init__(self, model: TransformerModel):
        super().__init__()
        self.model = model

    def forward(
        self,
        num: torch.Tensor,
        cat: torch.Tensor,
        mask: torch.Tensor,
        hist_num: torch.Tensor,
        hist_cat: torch.Tensor,
        hist_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.model(num, cat, mask, hist_num, hist_cat, hist_mask).float()  # (B, L)


def transformer_to_onnx(
    model: TransformerModel, metadata: dict[str, str] | None = None, precision: Precision = "fp32"
) -> bytes:
    """The model (eval mode, no position tower) as ONNX bytes, opset chosen by torch.
    ``fp16``: see ``half_precision``; its inputs and outputs stay float32."""
    model = model.eval()
    exported: nn.Module = model if precision == "fp32" else _Fp32Scores(half_precision(model))
    batch, cands, hist = (
        torch.export.Dim("batch"),
        torch.export.Dim("list"),
        torch.export.Dim("history"),
    )
    shapes = {
        "num": {0: batch, 1: cands},
        "cat": {0: batch, 1: cands},
        "mask": {0: batch, 1: cands},
        "hist_num": {0: batch, 1: hist},
        "hist_cat": {0: batch, 1: hist},
        "hist_mask": {0: batch, 1: hist},
    }
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            exported,
            example_inputs(model),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes=shapes,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
        assert program is not None
        path = Path(tmp) / "model.onnx"
        program.save(str(path))
        proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def metadata_json(**items: object) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in items.items()}
