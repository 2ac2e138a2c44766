"""The blended re-ranker (``--set blend=W``): a Transformer trained on the dataset alone, served
as ``(1 - W)`` times its baseline's within-list z-score plus ``W`` times its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _shared_models import SMALL_TRANSFORMER

from pipelines.features.live import LiveFeaturizer
from pipelines.features.state import FeatureState
from ranker.data import mask_of, to_padded
from ranker.ensemble import BaselineBlend, SeedEnsemble
from ranker.export.run import export_model
from ranker.model import FeatureSpec, Ranker, RankerConfig
from ranker.scoring import load
from ranker.train.checkpoint import load_model, save_checkpoint
from ranker.train.config import TrainConfig
from ranker.train.prepare import load_splits
from ranker.train.run import TrainRequest, run_training
from ranker.train.transformer import TrainResult
from serving.models import LoadOptions, load_model_set
from serving.runtime import choose_device


def z_reference(scores: np.ndarray) -> np.ndarray:
    """One list's z-scores (population standard deviation; a constant list gives zeros)."""
    sd = scores.std()
    return (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)


def test_a_blend_is_the_weighted_mean_of_the_two_within_list_z_scores() -> None:
    torch.manual_seed(0)
    inner_spec = FeatureSpec(["none"] * 3, [0.0] * 3, [1.0] * 3, [5])
    inner = Ranker(
        inner_spec, RankerConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, use_history=False)
    )
    outer = FeatureSpec(["none"] * 5, [0.0] * 5, [1.0] * 5, [5])
    blend = BaselineBlend(inner, outer, 0.3).eval()
    b, n = 3, 6
    num = torch.randn(b, n, 5)
    cat = torch.randint(0, 5, (b, n, 1))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    hist = (torch.zeros(b, 1, 0), torch.zeros(b, 1, 0, dtype=torch.long), torch.zeros(b, 1) > 0)
    with torch.no_grad():
        got = blend(num, cat, mask, *hist).numpy()
        own = inner(num[..., :3], cat, mask, *hist).numpy()
    for i in range(b):
        k = int(mask[i].sum())
        expected = 0.7 * z_reference(num[i, :k, 3].numpy().astype(np.float64))
        expected += 0.3 * z_reference(own[i, :k].astype(np.float64))
        np.testing.assert_allclose(got[i, :k], expected, atol=1e-5)
        assert (got[i, k:] == 0).all()  # padding
    assert (got[2, :1] == 0).all()  # one candidate: nothing to standardise against
    with torch.no_grad():  # the ends: one model's ranking alone
        for w, alone in ((0.0, num[..., 3]), (1.0, torch.from_numpy(own))):
            ends = BaselineBlend(inner, outer, w).eval()(num, cat, mask, *hist).numpy()
            for i in range(b):
                k = int(mask[i].sum())
                want = z_reference(alone[i, :k].numpy().astype(np.float64))
                np.testing.assert_allclose(ends[i, :k], want, atol=1e-5)
    with pytest.raises(ValueError, match="weight"):
        BaselineBlend(inner, outer, 1.01)
    with pytest.raises(ValueError, match="plus the baseline's two"):
        BaselineBlend(inner, inner_spec, 0.5)


@pytest.fixture(scope="module")
def blend_registry(
    small_registry: Path, small_lists: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The shared registry's LightGBM and standalone Transformer, and a blend of the two kinds
    trained as that Transformer was (same settings and seed), all exported."""
    reg = tmp_path_factory.mktemp("blend") / "registry"
    reg.mkdir()
    for name in ("lgbm", "transformer"):  # the shared registry stays as it is
        shutil.copytree(small_registry / name, reg / name)
    run_training(
        TrainRequest(
            "transformer",
            small_lists,
            reg,
            name="blend",
            bias="tower",
            reranker="lgbm",
            progress=False,
            overrides={**SMALL_TRANSFORMER, "blend": 0.3},
        )
    )
    export_model(str(reg / "blend"))
    return reg


def test_a_blended_reranker_is_the_standalone_transformer_blended_with_its_baseline(
    blend_registry: Path, small_lists: Path
) -> None:
    blend, alone = load(blend_registry / "blend"), load(blend_registry / "transformer")
    card = blend.card
    assert card.baseline == "lgbm/v1" and card.reranker is not None
    assert card.reranker["blend"] == 0.3 and "out_of_fold" not in card.reranker
    assert card.details["feature_spec"]["residual_input"] == -1
    assert card.details["blend"]["weight"] == 0.3
    # the Transformer inside selects as the standalone one does, on the same validation
    assert card.validation_metric == alone.card.validation_metric
    assert card.valid_ndcg == alone.card.valid_ndcg
    on_valid = card.details["blend"]["valid_ndcg@10"]
    assert set(on_valid) == {"blend", "transformer", "baseline"}
    assert all(0 < v <= 1 for v in on_valid.values())
    sp, test = load_splits(small_lists, with_test=True)
    assert test is not None
    got = to_padded(blend.score(test, sp.manifest), test.offsets)
    base = to_padded(load(blend_registry / "lgbm").score(test, sp.manifest), test.offsets)
    own = to_padded(alone.score(test, sp.manifest), test.offsets)
    mask = mask_of(test.offsets)
    for i in range(len(got)):
        k = int(mask[i].sum())
        expected = 0.7 * z_reference(base[i, :k].astype(np.float64))
        expected += 0.3 * z_reference(own[i, :k].astype(np.float64))
        np.testing.assert_allclose(got[i, :k], expected, atol=1e-4)


def test_the_served_blend_is_the_blend_of_the_served_models(
    blend_registry: Path, small_lists: Path
) -> None:
    """ONNX Runtime through the serving path: the blend's graph fed the served baseline's
    scores gives the blend of the served LightGBM's and standalone Transformer's scores."""
    st = FeatureState.load(small_lists / "state")
    live = LiveFeaturizer(st)
    schema = live.schema_key()
    models = load_model_set(blend_registry, LoadOptions(schema, choose_device("cpu"), 1))
    try:
        users = [*st.history.users_with_at_least(1)[:3], "nobody"]
        batch = [
            live.featurize(
                user_id=u,
                query=["hotpot", "coffee"][k % 2],
                t_us=int(st.clock_us or 0),
                item_ids=[str(i) for i in st.items.ids[k * 5 : k * 5 + 4 + 3 * k]],
            )
            for k, u in enumerate(users)
        ]
        served = {n: models.models[n].score_many(batch) for n in ("blend", "lgbm", "transformer")}
    finally:
        models.close()
    for got, base, own in zip(*served.values(), strict=True):
        expected = 0.7 * z_reference(np.asarray(base, np.float64))
        expected += 0.3 * z_reference(np.asarray(own, np.float64))
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("settings", "reranker", "message"),
    [
        ({"blend": 0.5}, None, "blend applies to a re-ranker"),
        ({"blend": 1.5}, "lgbm", r"blend must be a number in \[0, 1\] or auto"),
        ({"blend": "half"}, "lgbm", "blend must be a number"),
        ({"blend": 0.5, "residual": True}, "lgbm", r"residual re-ranker's \(blend=0\)"),
        ({"residual": False}, "lgbm", r"residual re-ranker's \(blend=0\)"),  # blend=auto
    ],
)
def test_blend_settings_are_refused_by_name(
    blend_registry: Path,
    small_lists: Path,
    settings: dict[str, object],
    reranker: str | None,
    message: str,
) -> None:
    before = sorted(p.name for p in blend_registry.iterdir())
    with pytest.raises(ValueError, match=message):
        run_training(
            TrainRequest(
                "transformer",
                small_lists,
                blend_registry,
                name="refused",
                reranker=reranker,
                progress=False,
                overrides={**SMALL_TRANSFORMER, **settings},
            )
        )
    assert sorted(p.name for p in blend_registry.iterdir()) == before


def test_a_blend_exports_in_float16_within_its_tolerance(
    blend_registry: Path, tmp_path: Path
) -> None:
    from ranker.export.run import PARITY_ATOL

    for name in ("blend", "lgbm"):
        shutil.copytree(blend_registry / name, tmp_path / name)
    ref = export_model(str(tmp_path / "blend"), precision="fp16")
    onnx = ref.card().onnx
    assert onnx is not None and onnx["precision"] == "fp16"
    assert onnx["parity_max_abs_diff"] <= PARITY_ATOL["fp16"]


def test_a_blend_is_not_resumed(blend_registry: Path, small_lists: Path, tmp_path: Path) -> None:
    """Neither a blend's checkpoint, nor another checkpoint into a blend (its inputs differ)."""
    for reranker, resume in ((None, "blend"), ("lgbm", "transformer")):
        with pytest.raises(ValueError, match="a blend cannot be resumed"):
            run_training(
                TrainRequest(
                    "transformer",
                    small_lists,
                    blend_registry,
                    name="refused",
                    reranker=reranker,
                    resume=str(blend_registry / resume),
                    progress=False,
                    overrides={**SMALL_TRANSFORMER, **({"blend": 0.5} if reranker else {})},
                )
            )
    assert not (blend_registry / "refused").exists()


def test_a_blend_over_a_seed_ensemble_is_saved_and_loaded_as_it_was(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = FeatureSpec(["none"] * 2, [0.0] * 2, [1.0] * 2, [5])
    mc = RankerConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, use_history=False)
    outer = FeatureSpec(["none"] * 4, [0.0] * 4, [1.0] * 4, [5])
    blend = BaselineBlend(SeedEnsemble([Ranker(spec, mc), Ranker(spec, mc)]), outer, 0.5).eval()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(TrainResult(blend, 1.0, 0.5), spec, mc, TrainConfig(), path)
    loaded, ckpt = load_model(path)
    assert isinstance(loaded, BaselineBlend) and isinstance(loaded.inner, SeedEnsemble)
    assert ckpt["members"] == 2 and ckpt["blend"]["weight"] == 0.5
    xs = (
        torch.randn(2, 5, 4),
        torch.randint(0, 5, (2, 5, 1)),
        torch.ones(2, 5, dtype=torch.bool),
        torch.zeros(2, 1, 0),
        torch.zeros(2, 1, 0, dtype=torch.long),
        torch.zeros(2, 1, dtype=torch.bool),
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded(*xs), blend(*xs), rtol=0, atol=0)
