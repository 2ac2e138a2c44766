"""Export the Transformer ranker to ONNX with dynamic batch, list and history axes.

torch.onnx's dynamo exporter traces the model with symbolic sizes, so reshapes follow the
inputs (the model's attention is written with sizes read from its inputs, never with
nn.MultiheadAttention, whose traced graphs bake the sequence length in). Masks are additive
floats in the graph. The parity tests compare ONNX Runtime with torch across batch sizes,
list lengths and history lengths, empty histories included.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from ranker.model import Ranker

INPUTS = ("num", "cat", "mask", "hist_num", "hist_cat", "hist_mask")
OUTPUT = "scores"


def example_inputs(model: Ranker, b: int = 2, n: int = 7, h: int = 5) -> tuple[torch.Tensor, ...]:
    c = model.cfg
    return (
        torch.zeros(b, n, len(c.num_transforms)),
        torch.zeros(b, n, len(c.cat_sizes), dtype=torch.long),
        torch.ones(b, n, dtype=torch.bool),
        torch.zeros(b, h, len(c.hist_num_transforms)),
        torch.zeros(b, h, len(c.hist_cat_sizes), dtype=torch.long),
        torch.ones(b, h, dtype=torch.bool),
    )


def transformer_to_onnx(model: Ranker, metadata: dict[str, str] | None = None) -> bytes:
    """The model (eval mode, no position tower) as ONNX bytes, opset chosen by torch."""
    model = model.eval()
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
            model,
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
