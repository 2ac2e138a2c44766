"""Which validation rule tracks relevance? Candidate model-selection rules scored against the
simulated world's truth across LightGBM's rounds, on worlds kept apart from evaluation.

    python benchmarks/selection_rules.py --worlds 101 102 103 --requests 20000 --users 2000 \
        --out runs/selection

For each world: LightGBM (position-aware, the published recipe) trained to ``--rounds`` with
no early stopping; at every ``--step`` rounds its validation value under each rule and its
oracle NDCG@10 on the test split. Per rule: the Spearman correlation of the rule's curve with
the test oracle's, the round the rule would keep and the oracle it gets there (``regret``:
the best round's oracle minus it). Prints JSON.

Rules (all NDCG@10 on the validation split, lists without a positive excluded):
- ``ips_click``: gains divided by the logged position's propensity (today's rule)
- ``click``: the logged labels as they are
- ``random_slice``: the logged labels, randomised requests only
- ``examined_ips`` / ``examined_click``: only the candidates the user saw, taken as those at or
  above the last click or order in the logged order (a cascade reading: after the last
  positive the user left, so the candidates below are unknown, not negatives)
- ``oracle_valid``: the truth on validation (a bound: no real log has it)

Each rule is read three ways: the round with its best value, the round early stopping keeps
(``--patience``), and the one-standard-error rule on top of early stopping (the earliest round
within one standard error, over validation lists, of the kept round's value).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from pipelines.features.batch import build_features
from pipelines.features.config import load_config
from pipelines.lists.table import Lists
from pipelines.world.config import WorldConfig
from pipelines.world.simulate import simulate
from ranker.data import mask_of, to_padded
from ranker.evaluate.offline import world_truth
from ranker.kinds.lgbm import LgbmConfig
from ranker.metrics import ndcg
from ranker.train.lgbm import lgbm_features, train_lgbm
from ranker.train.prepare import Splits, examined, load_splits, rank_data, validation_labels


def rule_values(
    scores: np.ndarray, lists: Lists, gains: dict[str, np.ndarray], masks: dict[str, np.ndarray]
) -> dict[str, float]:
    s = to_padded(scores, lists.offsets)
    out = {}
    for rule, y in gains.items():
        mask = mask_of(lists.offsets)
        if rule in masks:
            mask = mask & (to_padded(masks[rule].astype(np.float64), lists.offsets) > 0)
        y_kept = np.where(mask, to_padded(y, lists.offsets), 0.0)  # the ideal DCG reads labels
        per_list = ndcg(s, y_kept, mask=mask, k=10)
        out[rule] = float(np.nanmean(per_list))
        defined = per_list[~np.isnan(per_list)]
        out[rule + ":se"] = float(defined.std(ddof=1) / np.sqrt(len(defined)))
    return out


def early_stop(curve: list[float], patience: int) -> int:
    """Index kept by early stopping: the best so far when ``patience`` checks bring nothing."""
    best, since = 0, 0
    for i in range(1, len(curve)):
        if curve[i] > curve[best]:
            best, since = i, 0
        else:
            since += 1
            if since >= patience:
                break
    return best


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class RuleWorld:
    """A simulated world's lists, ready for the rules: their gains and candidate masks on the
    validation split, and the truth on the test split."""

    out: Path
    splits: Splits
    test: Lists
    truth_test: np.ndarray
    gains: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]


def rule_world(seed: int, out: Path, requests: int, users: int) -> RuleWorld:
    if not (out / "world" / "world.json").exists():
        simulate(WorldConfig(seed=seed, n_requests=requests, n_users=users), out, progress=False)
    lists_dir = out / "lists"
    if not (lists_dir / "manifest.json").exists():
        build_features(out / "logs", lists_dir, load_config("sim"), progress=False)
    splits, test = load_splits(lists_dir, with_test=True)
    assert test is not None and splits.propensities is not None
    valid = splits.valid
    ips = validation_labels(valid, splits.propensities, "lambdarank")
    seen = examined(valid)
    truth_valid, truth_test = world_truth(out / "world", valid), world_truth(out / "world", test)
    assert ips is not None and seen is not None and valid.randomized is not None
    assert truth_valid is not None and truth_test is not None
    labels = valid.labels.astype(np.float64)
    gains = {
        "ips_click": ips,
        "click": labels,
        "random_slice": labels,
        "examined_ips": ips,
        "examined_click": labels,
        "oracle_valid": truth_valid,
    }
    randomised = np.repeat(valid.randomized, valid.list_lengths())
    masks = {"random_slice": randomised, "examined_ips": seen, "examined_click": seen}
    return RuleWorld(out, splits, test, truth_test, gains, masks)


def one_world(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    w = rule_world(seed, args.out / f"world{seed}", args.requests, args.users)
    splits, test, truth_test, gains, masks = w.splits, w.test, w.truth_test, w.gains, w.masks
    m, valid = splits.manifest, splits.valid
    cfg = LgbmConfig(
        position_aware=True,
        max_rounds=args.rounds,
        early_stopping=args.rounds,
        keep_round="best",  # every round is read here; the rules pick
        seed=args.seed,
    )
    res = train_lgbm(rank_data(splits.train, m), rank_data(valid, m), m, cfg)
    x_va = lgbm_features(rank_data(valid, m), m)[0]
    x_te = lgbm_features(rank_data(test, m), m)[0]
    booster: lgb.Booster = res.booster
    rounds = list(range(args.step, args.rounds + 1, args.step))
    curves: dict[str, list[float]] = {r: [] for r in gains}
    ses: dict[str, list[float]] = {r: [] for r in gains}
    oracle: list[float] = []
    for r in rounds:
        sv = np.asarray(booster.predict(x_va, raw_score=True, num_iteration=r))
        for rule, v in rule_values(sv, valid, gains, masks).items():
            (ses if rule.endswith(":se") else curves)[rule.removesuffix(":se")].append(v)
        st = to_padded(
            np.asarray(booster.predict(x_te, raw_score=True, num_iteration=r)), test.offsets
        )
        rel = to_padded(truth_test, test.offsets)
        oracle.append(float(np.nanmean(ndcg(st, rel, mask=mask_of(test.offsets), k=10))))
    best = max(oracle)
    rules = {}
    for rule, c in curves.items():
        pick = int(np.argmax(c))
        stop = early_stop(c, args.patience // args.step)
        rules[rule] = {
            "spearman_with_test_oracle": round(spearman(c, oracle), 3),
            "kept_round": rounds[pick],
            "test_oracle_at_kept": round(oracle[pick], 4),
            "regret": round(best - oracle[pick], 4),
            # what early stopping with --patience keeps (checked every --step rounds)
            "early_stopping_round": rounds[stop],
            "early_stopping_regret": round(best - oracle[stop], 4),
        }
        # One-standard-error rule on top of early stopping: the earliest round whose value
        # is within one standard error (over validation lists) of the kept round's.
        one_se = next(i for i in range(stop + 1) if c[i] >= c[stop] - ses[rule][stop])
        rules[rule] |= {
            "one_se_round": rounds[one_se],
            "one_se_regret": round(best - oracle[one_se], 4),
        }
    return {
        "world_seed": seed,
        "requests": args.requests,
        "rounds": rounds,
        "test_oracle": [round(v, 4) for v in oracle],
        "curves": {k: [round(v, 4) for v in c] for k, c in curves.items()},
        "rules": rules,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=600)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--patience", type=int, default=50, help="early stopping's, in rounds")
    ap.add_argument("--seed", type=int, default=0, help="LightGBM's seed")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    worlds = [one_world(s, args) for s in args.worlds]
    summary = {
        rule: {
            "mean_spearman": round(
                float(np.mean([w["rules"][rule]["spearman_with_test_oracle"] for w in worlds])), 3
            ),
            "mean_regret": round(float(np.mean([w["rules"][rule]["regret"] for w in worlds])), 4),
            "mean_one_se_regret": round(
                float(np.mean([w["rules"][rule]["one_se_regret"] for w in worlds])), 4
            ),
            "mean_early_stopping_regret": round(
                float(np.mean([w["rules"][rule]["early_stopping_regret"] for w in worlds])), 4
            ),
        }
        for rule in worlds[0]["rules"]
    }
    print(
        json.dumps({"benchmark": "selection_rules", "summary": summary, "worlds": worlds}, indent=2)
    )


if __name__ == "__main__":
    main()
