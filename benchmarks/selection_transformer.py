"""Which validation rule tracks relevance for the Transformer? The LightGBM study
(``selection_rules.py``) repeated across the Transformer's validations, standalone and as the
residual re-ranker over the published LightGBM, on worlds kept apart from evaluation.

    python benchmarks/selection_transformer.py --worlds 104 105 --requests 10000 --users 1000 \
        --epochs 8 --out runs/selection_tf

For each world: the published LightGBM (position-aware, examined validation), then each model
trained for ``--epochs`` with stopping off; at every validation (the weights validated, i.e.
the weight average) its value under each rule on the validation split and its oracle NDCG@10 on
the test split. The re-ranker's epoch 0 is its baseline, as training keeps it when no epoch
beats it. Per model and rule: the Spearman correlation with the test oracle across validations,
the validation each rule keeps (best value; early stopping with the training's patience) and
its regret against the best validation's test oracle. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from selection_rules import early_stop, rule_values, rule_world, spearman  # a sibling script

from pipelines.lists.table import Lists
from ranker.data import mask_of, to_padded
from ranker.inputs import baseline_inputs
from ranker.kinds.transformer import prior_of
from ranker.losses import PER_CANDIDATE, bound_loss
from ranker.metrics import ndcg
from ranker.model import Ranker
from ranker.scoring import load
from ranker.train.config import TrainConfig
from ranker.train.prepare import rank_data
from ranker.train.reranker import BASELINE_SCORE, EXTRA
from ranker.train.run import TrainRequest, run_training
from ranker.train.scoring import held_out_loss, predict
from ranker.train.transformer import EpochLog


@dataclass
class Watch:
    """A callback of ``train_transformer``: every validated model's rule values and oracle."""

    valid: Any  # RankData of the validation split (its logged clicks), with the re-ranker's inputs
    test: Any
    valid_lists: Lists
    test_offsets: np.ndarray
    truth_test: np.ndarray
    gains: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    loss: Callable[..., torch.Tensor]  # the training loss, which the "loss" rule reads
    per_candidate: bool  # whether that loss averages over candidates (else lists)
    points: list[dict[str, float]] = field(default_factory=list)

    def observe(self, epoch: float, valid_scores: np.ndarray, test_scores: np.ndarray) -> None:
        values = rule_values(valid_scores, self.valid_lists, self.gains, self.masks)
        st = to_padded(test_scores, self.test_offsets)
        rel = to_padded(self.truth_test, self.test_offsets)
        oracle = float(np.nanmean(ndcg(st, rel, mask=mask_of(self.test_offsets), k=10)))
        self.points.append({"epoch": epoch, "test_oracle": oracle, **values})

    def __call__(self, entry: EpochLog, model: Ranker) -> None:
        self.observe(entry.epoch, predict(model, self.valid), predict(model, self.test))
        # the "loss" rule: minus the training loss on validation's clicks
        device = next(model.parameters()).device
        self.points[-1]["valid_loss"] = -held_out_loss(
            model, self.valid, self.loss, device, per_candidate=self.per_candidate
        )


class ResidualStart(torch.nn.Module):
    """The residual re-ranker before training, as the loss rule reads it: its head's last
    layer is zero, so its scores are the baseline's plus the position tower at the prior."""

    def __init__(self, residual_input: int, splits: Any, max_position: int = 128):
        super().__init__()
        self.residual_input = residual_input
        prior = prior_of(splits.propensities, max_position)
        assert prior is not None
        self.position_bias = torch.nn.Embedding.from_pretrained(
            torch.from_numpy(prior.astype(np.float32))[:, None]
        )
        self.max_position = max_position

    def forward(self, num: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        positions = rest[-1].clamp(0, self.max_position)  # (B, L)
        return num[..., self.residual_input] + self.position_bias(positions).squeeze(-1)


def summarise(points: list[dict[str, float]], rules: list[str], patience: int) -> dict[str, Any]:
    best = max(p["test_oracle"] for p in points)
    out: dict[str, Any] = {}
    for rule in rules:
        have = [p for p in points if rule in p]
        c, oracle = [p[rule] for p in have], [p["test_oracle"] for p in have]
        pick, stop = int(np.argmax(c)), early_stop(c, patience)
        out[rule] = {
            "spearman_with_test_oracle": round(spearman(c, oracle), 3),
            "kept_epoch": have[pick]["epoch"],
            "regret": round(best - oracle[pick], 4),
            "early_stopping_epoch": have[stop]["epoch"],
            "early_stopping_regret": round(best - oracle[stop], 4),
        }
    return out


def one_world(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    w = rule_world(seed, args.out / f"world{seed}", args.requests, args.users)
    m, valid, test = w.splits.manifest, w.splits.valid, w.test
    common = {
        "data": w.out / "lists",
        "registry": w.out / "registry",
        "threads": args.threads,
        "progress": False,
    }
    lgbm = run_training(TrainRequest(model="lgbm", name="lgbm", **common))
    baseline = load(lgbm)
    rules = [*w.gains, "valid_loss"]
    cfg = TrainConfig(**{k: v for k, v in args.set.items() if k.startswith("loss")})
    loss = bound_loss(cfg.loss, k=cfg.loss_k, mu=cfg.loss_mu, alpha=cfg.loss_alpha)
    per_candidate = cfg.loss in PER_CANDIDATE
    va_base, te_base = baseline.score(valid, m), baseline.score(test, m)
    models: dict[str, Any] = {}
    for name, rerank in (("transformer_rerank", True), ("transformer", False)):
        extra_va = baseline_inputs(va_base, valid.offsets) if rerank else None
        extra_te = baseline_inputs(te_base, test.offsets) if rerank else None
        watch = Watch(
            rank_data(valid, m, extra_num=extra_va),
            rank_data(test, m, extra_num=extra_te),
            valid,
            test.offsets,
            w.truth_test,
            w.gains,
            w.masks,
            loss,
            per_candidate,
        )
        if rerank:  # epoch 0: the baseline itself, where the residual re-ranker starts
            watch.observe(0.0, va_base, te_base)
            start = ResidualStart(len(m.numeric) + EXTRA.index(BASELINE_SCORE), w.splits)
            watch.points[-1]["valid_loss"] = -held_out_loss(
                start, watch.valid, loss, torch.device("cpu"), per_candidate=per_candidate
            )
        run_training(
            TrainRequest(
                model="transformer",
                name=name,
                reranker=str(lgbm.path) if rerank else None,
                overrides={
                    "epochs": args.epochs,
                    "patience": args.epochs * 100,
                    **({"blend": 0} if rerank else {}),  # the residual re-ranker's epochs
                    **args.set,
                },
                callbacks=(watch,),
                **common,
            )
        )
        models[name] = {
            "points": [{k: round(v, 4) for k, v in p.items()} for p in watch.points],
            "rules": summarise(watch.points, rules, args.patience),
        }
    return {"world_seed": seed, "requests": args.requests, "settings": args.set, "models": models}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", type=int, nargs="+", default=[104, 105])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=1_000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patience", type=int, default=4, help="validations, as training's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--set",
        type=json.loads,
        default={},
        help='the Transformer\'s settings as JSON, e.g. \'{"loss_candidates": "examined"}\'',
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    worlds = [one_world(s, args) for s in args.worlds]
    summary = {
        model: {
            rule: {
                key: round(
                    float(np.mean([w["models"][model]["rules"][rule][key] for w in worlds])), 4
                )
                for key in ("spearman_with_test_oracle", "regret", "early_stopping_regret")
            }
            for rule in worlds[0]["models"][model]["rules"]
        }
        for model in worlds[0]["models"]
    }
    print(
        json.dumps(
            {"benchmark": "selection_transformer", "summary": summary, "worlds": worlds}, indent=2
        )
    )


if __name__ == "__main__":
    main()
