"""ONNX export: parity with the framework's own scores across shapes, and the registry entry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ops.cli import main
from ranker.export.run import random_codes
from ranker.kinds.transformer import INPUTS
from ranker.registry import resolve
from ranker.scoring import load
from ranker.train.run import TrainRequest, run_training

ATOL = 1e-4  # CPU parity goal


@pytest.fixture(scope="module")
def exported(small_registry: Path) -> Path:
    return small_registry


def test_export_command(
    small_lists: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "reg"
    run_training(
        TrainRequest(
            "lgbm", small_lists, reg, bias="none", progress=False, overrides={"max_rounds": 20}
        )
    )
    assert main(["export", "--model", str(reg / "lgbm")]) == 0
    assert "exported lgbm/v1" in capsys.readouterr().out
    assert main(["export", "--model", str(reg / "nope")]) == 2


def test_export_adds_the_file_and_its_sha256_to_the_manifest(exported: Path) -> None:
    for name in ("lgbm", "transformer"):
        ref = resolve(exported / name)
        m = json.loads((ref.path / "manifest.json").read_text())
        data = (ref.path / "model.onnx").read_bytes()
        assert m["files"]["model.onnx"] == hashlib.sha256(data).hexdigest()
        assert m["onnx"]["parity_max_abs_diff"] <= ATOL
    assert not list(exported.rglob(".*.tmp"))


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_transformer_onnx_matches_torch(exported: Path, batch: int) -> None:
    lm = load(exported / "transformer")
    sess = ort.InferenceSession(str(lm.ref.path / "model.onnx"), providers=["CPUExecutionProvider"])
    c = lm.scorer.model.spec  # type: ignore[attr-defined]
    rng = np.random.default_rng(batch)
    for n in (1, 7, 100, 500):
        for h in (0, 1, 50):
            mask = np.ones((batch, n), bool)
            mask[0, n // 2 :] = n == 1  # a padded list in the batch
            hmask = np.ones((batch, h), bool)
            if h:
                hmask[-1, h // 2 :] = False
            x = [
                rng.normal(0, 5, (batch, n, len(c.num_transforms))).astype(np.float32),
                random_codes(rng, c.cat_sizes, (batch, n)),
                mask,
                rng.uniform(0, 100, (batch, h, len(c.hist_num_transforms))).astype(np.float32),
                random_codes(rng, c.hist_cat_sizes, (batch, h)),
                hmask,
            ]
            with torch.no_grad():
                ref = lm.scorer.model(
                    *[torch.from_numpy(np.ascontiguousarray(v)) for v in x]
                ).numpy()  # type: ignore[attr-defined]
            out = sess.run(None, dict(zip(INPUTS, x, strict=True)))[0]
            diff = np.abs(out - ref)[mask].max()
            assert diff <= ATOL, (batch, n, h, diff)


@pytest.mark.parametrize("rows", [1, 3, 32, 500])
def test_lgbm_onnx_matches_lightgbm(exported: Path, small_lists: Path, rows: int) -> None:
    from pipelines.lists.io import read_split
    from pipelines.lists.manifest import Manifest
    from ranker.inputs import lgbm_columns, lgbm_matrix

    lm = load(exported / "lgbm")
    m = Manifest.load(small_lists)
    valid = read_split(small_lists, "valid", m)
    _, keep, _ = lgbm_columns(m)
    x = lgbm_matrix(valid.num, valid.cat, keep)[:rows]
    sess = ort.InferenceSession(str(lm.ref.path / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"features": x})[0]
    ref = lm.scorer.booster.predict(x, raw_score=True)  # type: ignore[attr-defined]
    assert np.abs(out - ref).max() <= ATOL


def test_a_transformer_with_optional_pieces_exports_within_parity(
    small_lists: Path, tmp_path: Path
) -> None:
    """Periodic numeric embeddings, set context and self-only attention in one model (each
    export costs seconds); the shared registry's Transformer exports the default pieces."""
    from ranker.export.run import PARITY_ATOL, export_model

    optional = {"numeric_embedding": 4, "set_context": True, "list_attention": False}
    settings = {"epochs": 1, "d_model": 16, "n_layers": 1, "d_ff": 32, **optional}
    ref = run_training(
        TrainRequest(
            "transformer", small_lists, tmp_path / "reg", progress=False, overrides=settings
        )
    )
    export_model(str(ref.path))
    m = json.loads((ref.path / "manifest.json").read_text())
    for key, value in optional.items():
        assert m["details"]["architecture"][key] == value
    assert m["onnx"]["parity_max_abs_diff"] <= PARITY_ATOL["fp32"]


def test_fp16_export_is_within_its_tolerance_of_fp32_and_says_so(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    reg = tmp_path / "reg"
    shutil.copytree(exported / "rerank", reg / "rerank")
    shutil.copytree(exported / "lgbm", reg / "lgbm")  # its baseline
    fp32 = ort.InferenceSession(str(resolve(reg / "rerank").path / "model.onnx"))
    assert main(["export", "--model", str(reg / "rerank"), "--precision", "fp16"]) == 0
    assert "fp16" in capsys.readouterr().out
    ref = resolve(reg / "rerank")
    m = json.loads((ref.path / "manifest.json").read_text())
    assert m["onnx"]["precision"] == "fp16" and m["onnx"]["parity_max_abs_diff"] <= 1e-2
    fp16 = ort.InferenceSession(str(ref.path / "model.onnx"))
    c = load(ref).scorer.model.spec  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    b, n, h = 4, 60, 20
    feeds = {
        "num": rng.normal(0, 3, (b, n, len(c.num_transforms))).astype(np.float32),
        "cat": random_codes(rng, c.cat_sizes, (b, n)),
        "mask": np.ones((b, n), bool),
        "hist_num": rng.uniform(0, 50, (b, h, len(c.hist_num_transforms))).astype(np.float32),
        "hist_cat": random_codes(rng, c.hist_cat_sizes, (b, h)),
        "hist_mask": np.ones((b, h), bool),
    }
    feeds["num"][..., 0] *= 1e6  # raw counts beyond float16's range stay finite (fp32 inputs)
    a, z = fp32.run(None, feeds)[0], fp16.run(None, feeds)[0]
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert np.abs(a - z).max() <= 1e-2
    assert main(["export", "--model", str(reg / "lgbm"), "--precision", "fp16"]) == 2
