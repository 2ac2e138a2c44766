"""Which validation signal picks the blend's weight? For a world made by compare_models.py
(``lists/`` and ``registry/`` with ``lgbm``, ``lgbm_s1``... and the standalone Transformer
``transformer``, ``transformer_s1``...), per training seed: the two models' within-list
z-scores blended at each of ``ranker.train.blend_weight.WEIGHTS`` (the Transformer's share,
0 to 1) on the valid and test splits, and each candidate validation signal read beside the
test oracle NDCG@10.

    python benchmarks/blend_weight.py --world runs/w97 --seeds 0 1 2 --out runs/blendw-w97.json
    python benchmarks/blend_weight.py --world runs/w48 --seeds 0 1 2 \
        --transformer transformer_selfonly --out runs/blendw-w48-selfonly.json

Signals on validation: plain click NDCG@10, IPS-weighted click NDCG@10, "examined" NDCG@10
(clicks over the candidates at or above each list's last click), click NDCG@10 on the
randomised requests only (when the world has them), and the held-out click likelihood
(``ranker.train.blend_weight.click_likelihood``, what ``--set blend=auto`` uses). For each
signal: the weight it picks (ties to the smaller weight) and its regret, the oracle at the pick
minus the oracle's best; the oracle at 0.5 and at 0; over seeds, each signal's mean and max
regret and how often it picked the oracle's best. Writes JSON to ``--out`` and prints it. The
README section "Choosing the blend's weight" reports its figures.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from compare_models import seeded  # a sibling script

from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists
from ranker.data import mask_of, to_padded
from ranker.evaluate.offline import world_truth
from ranker.evaluate.stats import Clusters, paired_difference
from ranker.metrics import ndcg
from ranker.scoring import load
from ranker.train.blend_weight import WEIGHTS, click_likelihood, z_scores
from ranker.train.prepare import examined, propensities_from, validation_labels


@dataclass(frozen=True)
class Validation:
    """The validation split's labels, all (B, L) padded; ``randomised`` (B,) or None."""

    mask: np.ndarray
    clicks: np.ndarray
    ips: np.ndarray
    seen: np.ndarray
    log_propensity: np.ndarray
    randomised: np.ndarray | None


def validation(valid: Lists, train: Lists) -> Validation:
    props = propensities_from(train)
    if props is None or valid.positions is None:
        raise SystemExit("the world's lists carry no logged positions or clicks")

    def pad(a: np.ndarray | None) -> np.ndarray:
        return to_padded(np.asarray(a, np.float64), valid.offsets)

    rnd = None if valid.randomized is None else np.asarray(valid.randomized, bool)
    return Validation(
        mask=mask_of(valid.offsets),
        clicks=pad(valid.labels),
        ips=pad(validation_labels(valid, props, "ipw")),
        seen=pad(examined(valid)) > 0,
        log_propensity=pad(np.log(props.at(valid.positions))),
        randomised=rnd if rnd is not None and rnd.any() else None,
    )


def signals(blend: np.ndarray, v: Validation) -> dict[str, float]:
    """Each validation signal of a (B, L) blend, higher is better."""
    out = {
        "click": float(np.nanmean(ndcg(blend, v.clicks, mask=v.mask, k=10))),
        "ips": float(np.nanmean(ndcg(blend, v.ips, mask=v.mask, k=10))),
        "examined": float(np.nanmean(ndcg(blend, v.clicks, mask=v.mask & v.seen, k=10))),
    }
    if v.randomised is not None:
        r = v.randomised
        out["random"] = float(np.nanmean(ndcg(blend[r], v.clicks[r], mask=v.mask[r], k=10)))
    out["likelihood"] = click_likelihood(
        blend, v.clicks, mask=v.mask, log_propensity=v.log_propensity
    )
    return out


def z_of(model: Path, split: Lists, manifest: Manifest) -> np.ndarray:
    """(B, L) within-list z-scores of a registered model's scores on a split."""
    scores = to_padded(load(model).score(split, manifest), split.offsets)
    return z_scores(scores, mask_of(split.offsets))


def seed_result(rows: dict[float, dict[str, float]]) -> dict[str, Any]:
    """The oracle's best weight, each signal's pick and regret, and the curves (rounded)."""
    best = max(WEIGHTS, key=lambda w: rows[w]["oracle"])  # max keeps the first of equals
    top = rows[best]["oracle"]
    picks = {}
    for sig in (s for s in rows[WEIGHTS[0]] if s != "oracle"):
        w = max(WEIGHTS, key=lambda w, sig=sig: rows[w][sig])
        picks[sig] = {"weight": w, "regret": round(rows[w]["oracle"] - top, 4)}
    return {
        "oracle_best": {"weight": best, "oracle": round(top, 4)},
        "oracle_at_0.5": round(rows[0.5]["oracle"], 4),
        "oracle_at_0": round(rows[0.0]["oracle"], 4),
        "picks": picks,
        "curve": {str(w): {k: round(x, 5) for k, x in r.items()} for w, r in rows.items()},
    }


def summary(per_seed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per signal over seeds: mean and max regret, and how often it picked the oracle's best."""
    out: dict[str, dict[str, Any]] = {}
    for sig in next(iter(per_seed.values()))["picks"]:
        regrets = [r["picks"][sig]["regret"] for r in per_seed.values()]
        hits = sum(
            r["picks"][sig]["weight"] == r["oracle_best"]["weight"] for r in per_seed.values()
        )
        out[sig] = {
            "mean_regret": round(float(np.mean(regrets)), 4),
            "max_regret": round(float(min(regrets)), 4),  # regrets are <= 0: the largest loss
            "picked_best": int(hits),
            "seeds": len(regrets),
        }
    return out


def run(world: Path, seeds: list[int], transformer: str, first: int) -> dict[str, Any]:
    lists, registry = world / "lists", world / "registry"
    manifest = Manifest.load(lists)
    test, valid, train = (read_split(lists, s, manifest) for s in ("test", "valid", "train"))
    v = validation(valid, train)
    truth = world_truth(Path(manifest.source["world"]), test)
    rel, tmask = to_padded(truth, test.offsets), mask_of(test.offsets)
    clusters = Clusters.of(test.user_id if test.user_id is not None else test.request_id)
    per_seed: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        lgbm, tf = (
            registry / seeded("lgbm", seed, first),
            registry / seeded(transformer, seed, first),
        )
        vl, vt = z_of(lgbm, valid, manifest), z_of(tf, valid, manifest)
        tl, tt = z_of(lgbm, test, manifest), z_of(tf, test, manifest)
        rows: dict[float, dict[str, float]] = {}
        per_list: dict[float, np.ndarray] = {}  # test NDCG@10 of each list, by weight
        for w in WEIGHTS:
            rows[w] = signals((1 - w) * vl + w * vt, v)
            per_list[w] = ndcg((1 - w) * tl + w * tt, rel, mask=tmask, k=10)
            rows[w]["oracle"] = float(np.nanmean(per_list[w]))
        result = seed_result(rows)
        # what the product ships (blend=auto: the likelihood's pick) and the fixed equal blend,
        # each against LightGBM alone (weight 0), paired over users
        auto = result["picks"]["likelihood"]["weight"]
        for name, w in (("auto", auto), ("half", 0.5)):
            d = paired_difference(per_list[w], per_list[0.0], clusters).to_dict()
            result[f"{name}_minus_lgbm"] = {
                "weight": w,
                "diff": round(d["diff"], 4),
                "ci95": [round(x, 4) for x in d["ci95"]],
            }
        per_seed[f"s{seed}"] = result
    return {
        "world": str(world),
        "transformer": transformer,
        "seeds": per_seed,
        "summary": summary(per_seed),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, required=True, help="a compare_models.py --out folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="compare_models.py's first --train-seeds (its models keep the bare name)",
    )
    p.add_argument("--transformer", default="transformer", help="the registry variant name")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = p.parse_args()
    result = run(args.world, args.seeds, args.transformer, args.first_seed)
    text = json.dumps(result, indent=1)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(args.out)  # os.replace: atomic
    print(text)


if __name__ == "__main__":
    main()
