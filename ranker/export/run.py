"""``ranker export --model REGISTRY/NAME[/VERSION]``: add ``model.onnx`` to a registry version.

The ONNX file and its sha256 land in the version's card atomically; the graph is checked
against the framework's own scores on a sample before anything is written. The kind builds
the graph and the sample (``ranker.kinds``).
"""

from __future__ import annotations

import logging

import numpy as np

from ranker.registry import ModelRef, add_file, resolve
from ranker.scoring import LoadedModel

log = logging.getLogger(__name__)
# Largest |ONNX - framework| score difference accepted on the sample, per precision. float16
# keeps about 3 significant digits: 1.5e-3 at most was measured on the demo's re-ranker over
# 256 lists of 100 candidates (top-10 unchanged in every list, Kendall tau 0.9997).
PARITY_ATOL = {"fp32": 1e-4, "fp16": 1e-2}


def export_model(spec: str, precision: str = "fp32") -> ModelRef:
    from ranker.scoring import load

    ref = resolve(spec)
    lm = load(ref)
    if precision not in lm.kind_impl.precisions:
        raise ValueError(
            f"{ref}: --precision {precision} does not apply to {lm.kind} models "
            f"(they export {list(lm.kind_impl.precisions)})"
        )
    data = lm.kind_impl.to_onnx(lm.scorer, lm.card, precision)
    diff = sample_parity(lm, data)
    log.info("%s: ONNX vs %s max abs difference %.2e on a sample", ref, lm.kind, diff)
    if not diff <= PARITY_ATOL[precision]:
        raise ValueError(
            f"{ref}: ONNX scores differ from the framework's by {diff:.3g}; not exported"
        )
    info = {
        "inputs": lm.kind_impl.onnx_inputs(),
        "precision": precision,
        "parity_max_abs_diff": diff,
    }
    add_file(ref, "model.onnx", data, onnx=info)
    return ref


def sample_parity(lm: LoadedModel, data: bytes) -> float:
    """Max |ONNX - framework| on the kind's random samples."""
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for case in lm.kind_impl.parity_cases(lm.scorer, np.random.default_rng(0)):
        out = sess.run(None, case.feeds)[0]
        worst = max(worst, float(np.abs(out - case.expected).max()))
    return worst


def random_codes(rng: np.random.Generator, sizes: list[int], shape: tuple[int, int]) -> np.ndarray:
    """(*shape, len(sizes)) int64 category codes, each column within its vocabulary."""
    out = np.zeros((*shape, len(sizes)), np.int64)
    for j, s in enumerate(sizes):
        out[..., j] = rng.integers(0, s, shape)
    return out
