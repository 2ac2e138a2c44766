"""``ranker train``: load a dataset, correct position bias, tune within a stated budget, train,
and publish the model to the registry with its manifest."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.lists.manifest import Manifest
from ranker.data import RankData
from ranker.inputs import baseline_inputs
from ranker.registry import ModelRef, publish, resolve_in
from ranker.train.lgbm import LgbmConfig, train_lgbm
from ranker.train.prepare import Splits, ipw_weights, load_splits, rank_data, validation_labels
from ranker.train.reranker import BASELINE_SCORE, EXTRA, extra_statistics, out_of_fold_scores
from ranker.train.transformer import (
    TrainConfig,
    config_from_manifest,
    save_checkpoint,
    train_transformer,
)

log = logging.getLogger(__name__)

# The tuning budget is the same for both models: ``--tune N`` trials, the first with the
# defaults, the others drawn (seeded) from these small, stated spaces; validation data only.
LGBM_SPACE: dict[str, list[Any]] = {
    "num_leaves": [15, 31, 63, 127],
    "learning_rate": [0.02, 0.05, 0.1],
    "min_data_in_leaf": [20, 50, 100],
    "feature_fraction": [0.6, 0.8, 1.0],
}
TRANSFORMER_SPACE: dict[str, list[Any]] = {
    "lr": [5e-4, 1e-3, 2e-3],
    "dropout": [0.1, 0.2, 0.3],
    "d_model": [48, 64, 96],
    "loss": ["softmax", "lambdaloss"],
}
ARCH_KEYS = (
    "d_model",
    "n_heads",
    "n_layers",
    "d_ff",
    "cat_dim",
    "dropout",
    "input_noise",
    "cat_dropout",
    "use_history",
    "use_list_attention",
    "residual",  # re-ranker only: score = baseline score + correction (default on)
)


@dataclass
class TrainRequest:
    model: str  # lgbm | transformer
    data: Path
    registry: Path
    name: str | None = None
    bias: str = "auto"  # auto | none | ipw | tower (transformer) | lambdarank (lgbm)
    tune: int = 1
    seed: int = 0
    threads: int = 2
    reranker: str | None = None  # registry reference of the baseline (transformer only)
    resume: str | None = None  # registry reference of a transformer version to continue
    progress: bool = True
    overrides: dict[str, Any] | None = None  # config fields (e.g. epochs, loss, num_leaves)


def trial_configs(space: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    trials: list[dict[str, Any]] = [{}]
    while len(trials) < n:
        trials.append({k: v[int(rng.integers(len(v)))] for k, v in space.items()})
    return trials


def run_training(req: TrainRequest) -> ModelRef:
    if req.model not in ("lgbm", "transformer"):
        raise ValueError("--model must be lgbm or transformer")
    if req.bias == "auto":  # each model's own position-bias model: the like-for-like correction
        req = replace(req, bias="tower" if req.model == "transformer" else "lambdarank")
    if req.bias == "tower" and req.model != "transformer":
        raise ValueError("bias 'tower' is the Transformer's; LightGBM's own is 'lambdarank'")
    if req.bias == "lambdarank" and req.model != "lgbm":
        raise ValueError("bias 'lambdarank' is LightGBM's; the Transformer's own is 'tower'")
    _check_overrides(req)
    torch.set_num_threads(req.threads)
    splits, _ = load_splits(req.data)
    m = splits.manifest
    weights = ipw_weights(splits.train, splits.propensities, req.bias)
    valid_labels = validation_labels(splits.valid, splits.propensities, req.bias)
    train = rank_data(splits.train, m, weights)
    valid = rank_data(splits.valid, m, labels=valid_labels)
    base: dict[str, Any] = {
        "kind": req.model,
        "features": m.to_dict(),
        "data": {
            "path": str(Path(req.data).resolve()),
            "fingerprint": m.fingerprint,
            "source": m.source,
        },
        "bias_correction": req.bias,
        "propensities": None
        if splits.propensities is None
        else {
            "eta": splits.propensities.eta,
            "clicks_used": splits.propensities.clicks_used,
            "values": splits.propensities.to_list()[:20],
        },
        "seed": req.seed,
        "validation_metric": "ndcg@10" if valid_labels is None else "ips_ndcg@10",
    }
    with tempfile.TemporaryDirectory(
        prefix=".build-",
        dir=Path(req.registry).parent if Path(req.registry).parent.exists() else None,
    ) as tmp:
        build = Path(tmp)
        if req.model == "lgbm":
            extra = _train_lgbm(req, train, valid, m, build, base)
        else:
            extra = _train_transformer(req, splits, train, valid, m, build, base)
        base["extra_numeric"] = [asdict(f) for f in extra]
        return publish(req.registry, req.name or req.model, build, base)


def _train_lgbm(
    req: TrainRequest,
    train: RankData,
    valid: RankData,
    m: Manifest,
    build: Path,
    base: dict[str, Any],
) -> list:
    cfg0 = replace(
        LgbmConfig(seed=req.seed, threads=req.threads, position_aware=req.bias == "lambdarank"),
        **(req.overrides or {}),
    )
    trials = []
    best = None
    for k, t in enumerate(trial_configs(LGBM_SPACE, req.tune, req.seed)):
        res = train_lgbm(train, valid, m, replace(cfg0, **t))
        trials.append(
            {"params": t, "valid_ndcg@10": res.best_valid_ndcg, "rounds": res.best_iteration}
        )
        log.info(
            "lightgbm trial %d/%d %s: valid ndcg@10 %.4f", k + 1, req.tune, t, res.best_valid_ndcg
        )
        if best is None or res.best_valid_ndcg > best[1].best_valid_ndcg:
            best = (replace(cfg0, **t), res)
    assert best is not None
    cfg, res = best
    res.booster.save_model(str(build / "model.txt"), num_iteration=res.best_iteration)
    base.update(
        {
            "training": cfg.to_dict(),
            "tuning": {"budget": req.tune, "space": LGBM_SPACE, "trials": trials},
            "metrics": {"valid": {"ndcg@10": res.best_valid_ndcg}},
            "best_iteration": res.best_iteration,
            "lgbm": {
                "feature_names": res.feature_names,
                "categorical": res.categorical,
                "params": res.params,
            },
        }
    )
    return []


def _train_transformer(
    req: TrainRequest,
    splits: Splits,
    train: RankData,
    valid: RankData,
    m: Manifest,
    build: Path,
    base: dict[str, Any],
) -> list:
    extra = []
    if req.reranker:
        from ranker.scoring import load

        baseline = load(resolve_in(req.reranker, req.registry))
        if baseline.kind != "lgbm":
            raise ValueError("the re-ranker's baseline must be a LightGBM model")
        bm = baseline.manifest
        oof = out_of_fold_scores(
            bm["lgbm"]["params"], int(bm["best_iteration"]), train, m, seed=req.seed
        )
        tr_extra = baseline_inputs(oof, train.offsets)
        va_extra = baseline_inputs(baseline.score(splits.valid, m), valid.offsets)
        extra = extra_statistics(tr_extra)
        train = RankData(
            splits.train, extra_num=tr_extra, weights=train.weights, max_history=train.max_history
        )
        valid = RankData(
            splits.valid, extra_num=va_extra, max_history=valid.max_history, labels=valid.labels
        )
        base["reranker"] = {
            "baseline": str(baseline.ref),
            "folds": 5,
            "inputs": [f.name for f in EXTRA],
        }
    overrides = dict(req.overrides or {})
    resume_state = None
    if req.resume:
        from ranker.train.transformer import load_model

        _, ckpt = load_model(resolve_in(req.resume, req.registry).path / "checkpoint.pt")
        resume_state = ckpt
        overrides = {**ckpt["train_config"], **overrides}
    trials, best = [], None
    for k, t in enumerate(
        trial_configs(TRANSFORMER_SPACE, req.tune if not req.resume else 1, req.seed)
    ):
        opts = {**overrides, **t}
        arch = {a: opts.pop(a) for a in list(opts) if a in ARCH_KEYS}
        # The re-ranker adds the baseline's score (an extra input, after the dataset's) to its own.
        residual = arch.pop("residual", True) and bool(extra)  # a bool: _check_overrides
        mc = config_from_manifest(
            m,
            extra,
            bias_tower=req.bias == "tower",
            residual_input=len(m.numeric) + EXTRA.index(BASELINE_SCORE) if residual else -1,
            **arch,
        )
        cfg = TrainConfig(**{**{"seed": req.seed, "threads": req.threads}, **opts})
        res = train_transformer(train, valid, mc, cfg, resume=resume_state, progress=req.progress)
        trials.append(
            {"params": t, "valid_ndcg@10": res.best_valid_ndcg, "epochs": len(res.history)}
        )
        log.info(
            "transformer trial %d/%d %s: valid ndcg@10 %.4f",
            k + 1,
            req.tune,
            t,
            res.best_valid_ndcg,
        )
        if best is None or res.best_valid_ndcg > best[2].best_valid_ndcg:
            best = (mc, cfg, res)
    assert best is not None
    mc, cfg, res = best
    save_checkpoint(res, mc, cfg, build / "checkpoint.pt")
    base.update(
        {
            "training": cfg.to_dict(),
            "architecture": mc.to_dict() | {"num_mean": None, "num_std": None},
            "tuning": {"budget": req.tune, "space": TRANSFORMER_SPACE, "trials": trials},
            "metrics": {"valid": {"ndcg@10": res.best_valid_ndcg}},
            "best_epoch": res.best_epoch,
            "history": [asdict(h) for h in res.history],
            "parameters": res.model.n_parameters(),
        }
    )
    return extra


def _check_overrides(req: TrainRequest) -> None:
    from dataclasses import fields

    if req.model == "lgbm":
        allowed = {f.name for f in fields(LgbmConfig)}
    else:
        allowed = {f.name for f in fields(TrainConfig)} | set(ARCH_KEYS)
    residual = (req.overrides or {}).get("residual", True)
    if not isinstance(residual, bool):
        raise ValueError(f"residual must be true or false, got {residual!r}")
    unknown = sorted(set(req.overrides or {}) - allowed)
    if unknown:
        raise ValueError(f"unknown setting(s) for {req.model}: {unknown}; known: {sorted(allowed)}")
