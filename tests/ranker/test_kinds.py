"""The kind registry and the model card: one home per kind, settings from the dataclasses,
cards read in one place (older formats migrated, newer ones refused)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from ranker.card import CARD_FORMAT, CardError, ModelCard
from ranker.kinds import KINDS, get_kind
from ranker.registry import resolve
from ranker.scoring import load
from ranker.train.run import TrainRequest, run_training

REPO = Path(__file__).resolve().parents[2]


def test_every_transformer_setting_is_settable_and_unknown_ones_are_named() -> None:
    names = KINDS["transformer"].setting_names()
    # Were missing from the hand-kept list, or not settable at all:
    for key in ("attn_dropout", "max_position", "loss_k", "loss_mu", "loss_alpha", "residual"):
        assert key in names
    for fitted in ("num_mean", "cat_sizes", "residual_input", "bias_tower"):
        assert fitted not in names  # fixed by the data or by training, not the user
    with pytest.raises(ValueError, match=r"unknown setting\(s\) for lgbm: \['epochs'\]; known"):
        KINDS["lgbm"].check_settings({"epochs": 3})
    with pytest.raises(ValueError, match=r"known: .*num_leaves"):
        KINDS["lgbm"].check_settings({"leaves": 3})


def test_an_unknown_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'xgb'; known"):
        get_kind("xgb")


def test_a_bias_correction_of_another_kind_is_refused(small_lists: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bias 'tower' does not apply to lgbm"):
        run_training(TrainRequest("lgbm", small_lists, tmp_path / "r", bias="tower"))


def test_a_format1_card_is_migrated_when_read(small_registry: Path, tmp_path: Path) -> None:
    """A version written before the card had a format (kind details at the top level) loads
    and scores as before; exporting it again writes the card in the current format."""
    reg = tmp_path / "reg"
    shutil.copytree(small_registry / "lgbm", reg / "lgbm")
    path = resolve(reg / "lgbm").path
    card = json.loads((path / "manifest.json").read_text())
    old = {k: v for k, v in card.items() if k not in ("format", "details", "valid_ndcg")}
    old["lgbm"] = {k: card["details"][k] for k in ("feature_names", "categorical", "params")}
    old["best_iteration"] = card["details"]["best_iteration"]
    old["metrics"] = {"valid": {"ndcg@10": card["valid_ndcg"]}}
    (path / "manifest.json").write_text(json.dumps(old))
    read = ModelCard.read(path)
    assert read.format == CARD_FORMAT and read.kind == "lgbm"
    assert read.details == card["details"] and read.valid_ndcg == card["valid_ndcg"]
    assert load(reg / "lgbm").kind == "lgbm"


@pytest.mark.parametrize("layout", ["combined", "split"])
def test_a_checkpoint_from_before_pair_attention_loads_and_scores_the_same(
    small_registry: Path, tmp_path: Path, layout: str
) -> None:
    """Checkpoints once kept the fitted statistics and the architecture in one dict
    ("combined"), then apart but before pair attention ("split": ``use_list_attention``, no
    null slot, no pair counts). Both are read with the architecture they had, and the model
    scores bit for bit as the one that wrote them."""
    import numpy as np
    import torch

    from ranker.kinds.transformer import TransformerScorer
    from ranker.model import FeatureSpec, Ranker, RankerConfig, init_weights
    from ranker.train.checkpoint import load_model

    path = resolve(small_registry / "transformer").path / "checkpoint.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    spec = FeatureSpec(**{**ckpt["feature_spec"], "pair_columns": []})
    arch = {**ckpt["model_config"], "null_slot": False, "pair_counts": False}
    written = Ranker(spec, RankerConfig(**arch))
    init_weights(written, seed=0)
    written.eval()
    stored = {k: v for k, v in arch.items() if k not in ("null_slot", "pair_counts")}
    stored["use_list_attention"] = stored.pop("list_attention")
    spec_keys = {k: v for k, v in spec.to_dict().items() if k != "pair_columns"}
    legacy = {k: v for k, v in ckpt.items() if k != "feature_spec"}
    legacy["best_model"] = written.state_dict()
    if layout == "combined":
        legacy["model_config"] = {**spec_keys, **stored}
    else:
        legacy |= {"feature_spec": spec_keys, "model_config": stored}
    torch.save(legacy, tmp_path / "old.pt")
    old, read = load_model(tmp_path / "old.pt")
    assert old.spec == spec and old.cfg == written.cfg
    assert set(read["model_config"]) == {f.name for f in dataclasses.fields(RankerConfig)}
    cases = KINDS["transformer"].parity_cases(TransformerScorer(old), np.random.default_rng(0))
    for case in cases:
        with torch.no_grad():
            want = written(*(torch.from_numpy(v) for v in case.feeds.values())).numpy()
        np.testing.assert_array_equal(case.expected, want)


def test_a_newer_card_or_a_damaged_one_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": CARD_FORMAT + 1}))
    with pytest.raises(CardError, match="newer than this ranker reads"):
        ModelCard.read(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": CARD_FORMAT, "kind": "lgbm"}))
    with pytest.raises(CardError, match="not a model card, it lacks"):
        ModelCard.read(tmp_path)


def test_no_kind_is_named_outside_its_home() -> None:
    """CLI, training, scoring, export and serving dispatch through ``ranker.kinds``: the kind
    strings appear in no comparison or branch elsewhere."""
    offenders = []
    for path in [*REPO.glob("ranker/**/*.py"), *REPO.glob("serving/**/*.py")]:
        if "kinds" in path.parts:
            continue
        text = path.read_text()
        for name in KINDS:
            for pattern in (f'kind == "{name}"', f'kind != "{name}"', f'["kind"] == "{name}"'):
                if pattern in text:
                    offenders.append(f"{path.relative_to(REPO)}: {pattern}")
    assert not offenders, offenders
