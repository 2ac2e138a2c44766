"""``ranker export --model REGISTRY/NAME[/VERSION]``: add ``model.onnx`` to a registry version.

The ONNX file and its sha256 land in the version's manifest atomically; the graph is checked
against the framework's own scores on a sample before anything is written.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ranker.registry import ModelRef, add_file, resolve
from ranker.scoring import LoadedModel

if TYPE_CHECKING:
    from ranker.export.transformer_onnx import Precision

log = logging.getLogger(__name__)
# Largest |ONNX - framework| score difference accepted on the sample, per precision. float16
# keeps about 3 significant digits: 1.5e-3 at most was measured on the demo's re-ranker over
# 256 lists of 100 candidates (top-10 unchanged in every list, Kendall tau 0.9997).
PARITY_ATOL = {"fp32": 1e-4, "fp16": 1e-2}


def export_model(spec: str, precision: Precision = "fp32") -> ModelRef:
    from ranker.scoring import load

    ref = resolve(spec)
    lm = load(ref)
    if precision != "fp32" and lm.kind != "transformer":
        raise ValueError(f"{ref}: --precision {precision} applies to Transformer models only")
    meta = {"kind": lm.kind, "model": str(ref), "schema": lm.features.schema_key()}
    if lm.kind == "lgbm":
        from ranker.export.lgbm_onnx import booster_to_onnx

        assert lm.booster is not None
        data = booster_to_onnx(lm.booster).SerializeToString()
        inputs = {
            "features": "(N, F) float32: numeric features, then categorical codes (no item_id)"
        }
    else:
        from ranker.export.transformer_onnx import INPUTS, metadata_json, transformer_to_onnx

        assert lm.ranker is not None
        data = transformer_to_onnx(lm.ranker, metadata_json(**meta), precision)
        inputs = {name: "see ranker/export/transformer_onnx.py" for name in INPUTS}
    diff = _sample_parity(lm, data)
    log.info("%s: ONNX vs %s max abs difference %.2e on a sample", ref, lm.kind, diff)
    if not diff <= PARITY_ATOL[precision]:
        raise ValueError(
            f"{ref}: ONNX scores differ from the framework's by {diff:.3g}; not exported"
        )
    info = {"inputs": inputs, "precision": precision, "parity_max_abs_diff": diff}
    add_file(ref, "model.onnx", data, {"onnx": info})
    return ref


def _sample_parity(lm: LoadedModel, data: bytes) -> float:
    """Max |ONNX - framework| on random inputs of a few shapes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    if lm.kind == "lgbm":
        assert lm.booster is not None
        n_feat = lm.booster.num_feature()
        x = rng.normal(0, 3, (64, n_feat)).astype(np.float32)
        ref = lm.booster.predict(x, raw_score=True)
        out = sess.run(None, {"features": x})[0]
        return float(np.abs(out - ref).max())
    import torch

    from ranker.export.transformer_onnx import INPUTS

    assert lm.ranker is not None
    c = lm.ranker.cfg
    for b, n, h in ((1, 1, 0), (3, 7, 1), (4, 40, 12)):
        xs = (
            torch.from_numpy(rng.normal(0, 3, (b, n, len(c.num_transforms))).astype(np.float32)),
            torch.from_numpy(random_codes(rng, c.cat_sizes, (b, n))),
            torch.ones(b, n, dtype=torch.bool),
            torch.from_numpy(
                rng.uniform(0, 50, (b, h, len(c.hist_num_transforms))).astype(np.float32)
            ),
            torch.from_numpy(random_codes(rng, c.hist_cat_sizes, (b, h))),
            torch.ones(b, h, dtype=torch.bool),
        )
        with torch.no_grad():
            ref_t = lm.ranker(*xs).numpy()
        out = sess.run(None, {k: v.numpy() for k, v in zip(INPUTS, xs, strict=True)})[0]
        worst = max(worst, float(np.abs(out - ref_t).max()))
    return worst


def random_codes(rng: np.random.Generator, sizes: list[int], shape: tuple[int, int]) -> np.ndarray:
    """(*shape, len(sizes)) int64 category codes, each column within its vocabulary."""
    out = np.zeros((*shape, len(sizes)), np.int64)
    for j, s in enumerate(sizes):
        out[..., j] = rng.integers(0, s, shape)
    return out
