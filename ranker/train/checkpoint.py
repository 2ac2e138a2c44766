"""The Transformer's checkpoint (written and read here only) and the feature spec a dataset
gives the model.

A checkpoint holds the best weights, the feature spec (fitted on the training split), the
architecture and the training settings, plus what resuming needs (``TrainResult.checkpoint``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from pipelines.lists.manifest import Manifest, NumericFeature
from ranker.ensemble import BaselineBlend, SeedEnsemble, TransformerModel
from ranker.model import FeatureSpec, Ranker, RankerConfig
from ranker.train.config import TrainConfig
from ranker.train.transformer import TrainResult


def migrate_architecture(arch: dict[str, Any]) -> RankerConfig:
    """An architecture as a checkpoint stored it, read with what it meant then. Before pair
    attention (no "null_slot" key) there was no null slot and no pair counts, and
    ``use_list_attention=false`` meant no blocks at all."""
    arch = dict(arch)
    if "null_slot" not in arch:
        arch |= {"null_slot": False, "pair_counts": False}
    if not arch.pop("use_list_attention", True):
        arch["n_layers"] = 0
    return RankerConfig(**arch)


def split_config(combined: dict[str, Any]) -> tuple[FeatureSpec, RankerConfig]:
    """A checkpoint written before the split kept both in one dict: read it as the two."""
    names = {f.name for f in fields(FeatureSpec)}
    spec = FeatureSpec(**{k: v for k, v in combined.items() if k in names})
    return spec, migrate_architecture({k: v for k, v in combined.items() if k not in names})


def save_checkpoint(
    result: TrainResult, spec: FeatureSpec, model_cfg: RankerConfig, cfg: TrainConfig, path: Path
) -> None:
    model = result.model
    # a blend keeps its Transformer's weights as they are, and the blend beside them
    blend = None
    if isinstance(model, BaselineBlend):
        blend = {"weight": model.weight, "feature_spec": model.spec.to_dict()}
        model = model.inner
    torch.save(
        {
            **result.checkpoint,
            "best_model": {k: v.cpu() for k, v in model.state_dict().items()},
            # a seed ensemble's member count (its weights are members.K.*); 1: one model
            "members": len(model.members) if isinstance(model, SeedEnsemble) else 1,
            "blend": blend,
            "feature_spec": spec.to_dict(),
            "model_config": model_cfg.to_dict(),
            "train_config": cfg.to_dict(),
        },
        path,
    )


def load_model(path: Path) -> tuple[TransformerModel, dict[str, Any]]:
    """The best model of a checkpoint (a seed ensemble when it holds several members, blended
    with the baseline when it was trained so) and the checkpoint, its architecture migrated to
    today's keys. One written before the feature spec was kept apart (no "feature_spec") is
    read by splitting its one config."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "feature_spec" in ckpt:
        spec = FeatureSpec(**ckpt["feature_spec"])
        model_cfg = migrate_architecture(ckpt["model_config"])
        ckpt = {**ckpt, "model_config": model_cfg.to_dict()}
    else:
        spec, model_cfg = split_config(ckpt["model_config"])
        ckpt = {**ckpt, "feature_spec": spec.to_dict(), "model_config": model_cfg.to_dict()}
    members = int(ckpt.get("members", 1))
    model: Ranker | SeedEnsemble = (
        Ranker(spec, model_cfg)
        if members == 1
        else SeedEnsemble([Ranker(spec, model_cfg) for _ in range(members)])
    )
    model.load_state_dict(ckpt["best_model"])
    blend = ckpt.get("blend")
    if blend is None:
        return model.eval(), ckpt
    blended = BaselineBlend(model, FeatureSpec(**blend["feature_spec"]), blend["weight"])
    return blended.eval(), ckpt


def spec_from_manifest(
    manifest: Manifest, extra: Sequence[NumericFeature] = (), residual_input: int = -1
) -> FeatureSpec:
    """The inputs of a dataset's features (plus extra numeric inputs, e.g. re-ranking)."""
    num = list(manifest.numeric) + list(extra)
    cat_names = manifest.categorical_names
    group_col = (manifest.config.get("list", {}) or {}).get("group_column")
    shared = []
    for f in manifest.history_categorical:
        target = f.name if f.name in cat_names else group_col if f.name == "group" else None
        j = cat_names.index(target) if target in cat_names else -1
        shared.append(j if j >= 0 and manifest.categorical[j].size == f.size else -1)
    pair_names = (manifest.config.get("list", {}) or {}).get("pair_columns", [])
    unknown = [c for c in pair_names if c not in cat_names]
    if unknown:
        raise ValueError(
            f"[list] pair_columns {unknown} are not categorical inputs; they are {cat_names}"
        )
    return FeatureSpec(
        num_transforms=[f.transform for f in num],
        num_mean=[f.mean for f in num],
        num_std=[f.std for f in num],
        cat_sizes=[f.size for f in manifest.categorical],
        hist_num_transforms=[f.transform for f in manifest.history_numeric],
        hist_num_mean=[f.mean for f in manifest.history_numeric],
        hist_num_std=[f.std for f in manifest.history_numeric],
        hist_cat_sizes=[f.size for f in manifest.history_categorical],
        hist_cat_shared=shared,
        residual_input=residual_input,
        pair_columns=[cat_names.index(c) for c in pair_names],
    )
