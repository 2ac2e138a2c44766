"""The fairness matrix on the simulated world: both models, with and without their position-bias
correction, the Transformer also as a re-ranker over the baseline; one offline report.

    python benchmarks/compare_models.py --requests 20000 --users 2000 --out runs/cmp-demo \
        --train-seeds 0 1
    python benchmarks/compare_models.py --requests 100000 --users 10000 --out runs/cmp-5x
    python benchmarks/compare_models.py --requests 20000 --users 2000 --list-effect 0 \
        --out runs/cmp-control
    python benchmarks/compare_models.py --requests 10000 --users 1000 --seed 31 \
        --train-seeds 0 1 2 --variants lgbm transformer --ensemble --out runs/ens

Prints JSON: each model's oracle and click NDCG@10 with 95% CIs, paired differences against
the baseline (LightGBM with its correction) of the same training seed, the seed check (does
each variant's CI clear zero under every seed), training seconds, and the report's path; with
``--ensemble``, each variant's seed ensemble against its single seeds and against the first
variant's ensemble.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from reference_feature import with_reference_feature

from pipelines.features.batch import build_features
from pipelines.features.config import load_config
from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from pipelines.world.config import WorldConfig
from pipelines.world.simulate import simulate
from ranker.data import mask_of, to_padded
from ranker.ensemble import standardise_within_list
from ranker.evaluate.offline import EvalRequest, comparison_of, evaluate, world_truth
from ranker.evaluate.report import write_report
from ranker.evaluate.stats import Clusters, paired_difference
from ranker.metrics import ndcg
from ranker.propensity import PROPENSITY_SOURCES
from ranker.registry import versions
from ranker.scoring import load
from ranker.train.run import TrainRequest, run_training

# name -> (model, bias correction, extra options)
VARIANTS: dict[str, tuple[str, str, dict[str, object]]] = {
    "lgbm": ("lgbm", "lambdarank", {}),
    "lgbm_nocorr": ("lgbm", "none", {}),
    "transformer_rerank": ("transformer", "tower", {"reranker": "lgbm"}),
    "transformer_rerank_nocorr": ("transformer", "none", {"reranker": "lgbm_nocorr"}),
    "transformer": ("transformer", "tower", {}),
    "transformer_nocorr": ("transformer", "none", {}),
    # Ablation: the same re-ranker with attention restricted to each candidate itself
    # (blocks, depth and parameters kept): what list context adds.
    "rerank_selfonly": ("transformer", "tower", {"reranker": "lgbm", "list_attention": False}),
    # The position tower started at zero rather than at the log propensities (as before
    # position_prior; --validation auto then selects these on the examined rule).
    "rerank_noprior": ("transformer", "tower", {"reranker": "lgbm", "position_prior": False}),
    "transformer_noprior": ("transformer", "tower", {"position_prior": False}),
    # The standalone Transformer with periodic numeric embeddings (8 frequencies per feature).
    "transformer_periodic": ("transformer", "tower", {"numeric_embedding": 8}),
    # Four times the lists per batch, the learning rate scaled by the square root (what a GPU
    # wants): is validation and test quality kept?
    "transformer_b256": ("transformer", "tower", {"batch_lists": 256}),
    # The weight average (TrainConfig.ema, ema_epochs): the previous default (decay 0.99 a
    # step whatever the data: a fifth of an epoch at 50,000 requests), fixed slower decays, and
    # the default that spans an epoch, named explicitly (registries trained before it hold
    # "transformer" models of the previous default).
    "transformer_ema_steps": ("transformer", "tower", {"ema_epochs": 0.0}),
    "transformer_ema995": ("transformer", "tower", {"ema": 0.995, "ema_epochs": 0.0}),
    "transformer_ema998": ("transformer", "tower", {"ema": 0.998, "ema_epochs": 0.0}),
    "transformer_ema999": ("transformer", "tower", {"ema": 0.999, "ema_epochs": 0.0}),
    "transformer_ema1ep": ("transformer", "tower", {"ema_epochs": 1.0}),
    "rerank_ema1ep": ("transformer", "tower", {"reranker": "lgbm", "ema_epochs": 1.0}),
    # One standalone Transformer taught by three (the members of transformer_ens3 for the same
    # seed): an ensemble's gain at one model's inference?
    "transformer_distill3": ("transformer", "tower", {"distill": 3}),
    # the standalone Transformer's blocks attending to each candidate itself only (depth kept):
    # what list attention adds to the standalone model, and so to its blend with LightGBM
    "transformer_selfonly": ("transformer", "tower", {"list_attention": False}),
    # the re-ranker as a blend: LightGBM's and a standalone Transformer's within-list z-scores,
    # half each (its Transformer is `transformer` of the same seed, bit for bit)
    "rerank_blend": ("transformer", "tower", {"reranker": "lgbm", "blend": 0.5}),
    # the default re-ranker: the blend's weight chosen on validation (ranker.train.blend_weight)
    "rerank_auto": ("transformer", "tower", {"reranker": "lgbm", "blend": "auto"}),
    # its ablation: the Transformer inside with self-only blocks (depth kept), the weight
    # chosen alike; rerank_auto minus this is what list attention adds to the default
    "rerank_auto_selfonly": (
        "transformer",
        "tower",
        {"reranker": "lgbm", "blend": "auto", "list_attention": False},
    ),
    # The standalone Transformer as a seed ensemble of three (ranker.ensemble), as it ships
    # with --set ensemble=3: one model, three times the inference.
    "transformer_ens3": ("transformer", "tower", {"ensemble": 3}),
    # the pointwise click likelihood (logistic, position tower added to the logit) instead of
    # the listwise softmax
    "transformer_bce": ("transformer", "tower", {"loss": "bce"}),
    "rerank_bce": ("transformer", "tower", {"reranker": "lgbm", "loss": "bce"}),
    "rerank_selfonly_bce": (
        "transformer",
        "tower",
        {"reranker": "lgbm", "list_attention": False, "loss": "bce"},
    ),
    # the re-ranker and its ablation selected by the held-out loss (a variant's own rule, over
    # --validation): under IPS, their default, both mostly keep the baseline, which says nothing
    # about the list blocks
    "rerank_loss": ("transformer", "tower", {"reranker": "lgbm", "validation": "loss"}),
    "rerank_selfonly_loss": (
        "transformer",
        "tower",
        {"reranker": "lgbm", "list_attention": False, "validation": "loss"},
    ),
    # self-only blocks given the list's mean token (set_context): what the list as a whole
    # tells each candidate, without attention to any other candidate; the list re-ranker minus
    # this is what singling out candidates (pairs) adds
    "rerank_selfset_loss": (
        "transformer",
        "tower",
        {"reranker": "lgbm", "list_attention": False, "set_context": True, "validation": "loss"},
    ),
    # list attention with the list's mean token too: does the set context still add to it
    "rerank_set_loss": (
        "transformer",
        "tower",
        {"reranker": "lgbm", "set_context": True, "validation": "loss"},
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--list-effect", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0, help="the world's seed")
    ap.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="repeat every training with each seed (models of seed s > first: NAME_sS), to "
        "check that a verdict is not one seed's luck",
    )
    ap.add_argument("--tune", type=int, default=1, help="tuning trials per model (same budget)")
    ap.add_argument("--validation", default="auto", help="the model-selection rule")
    ap.add_argument(
        "--propensities",
        choices=PROPENSITY_SOURCES,
        default="auto",
        help="the propensity estimate every model trains with (ranker train --propensities)",
    )
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument(
        "--reference",
        action="store_true",
        help="also LightGBM with the hand-made nearer-same-brand count (a reference row only)",
    )
    ap.add_argument(
        "--ensemble",
        action="store_true",
        help="also each variant's seed ensemble (the mean of its seeds' scores, z-scored per "
        "list), against its single seeds and against LightGBM's own ensemble",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep models already in OUT/registry (resume an interrupted matrix)",
    )
    args = ap.parse_args()
    out: Path = args.out
    if not (out / "world" / "world.json").exists():
        cfg = WorldConfig(
            seed=args.seed,
            n_requests=args.requests,
            n_users=args.users,
            list_effect=args.list_effect,
        )
        simulate(cfg, out, progress=False)
    lists, registry = out / "lists", out / "registry"
    if not (lists / "manifest.json").exists():
        build_features(out / "logs", lists, load_config("sim"), progress=False)
    seconds: dict[str, float] = {}
    refs = []
    first = args.train_seeds[0]
    for seed in args.train_seeds:
        for variant in args.variants:
            name = seeded(variant, seed, first)
            model, bias, extra = VARIANTS[variant]
            done = versions(registry, name) if args.reuse else []
            if done:
                refs.append(str(registry / name / done[-1]))
                continue
            t0 = time.perf_counter()
            overrides: dict[str, object] = {"epochs": args.epochs} if model == "transformer" else {}
            overrides.update(
                {k: v for k, v in extra.items() if k not in ("reranker", "validation")}
            )
            baseline = extra.get("reranker")
            if baseline is not None and "blend" not in extra:
                # the residual re-ranker, as these variants were measured (the product's
                # default is blend=auto since: the variant rerank_auto)
                overrides["blend"] = 0
            ref = run_training(
                TrainRequest(
                    model,
                    lists,
                    registry,
                    name=name,
                    bias=bias,
                    tune=args.tune,
                    seed=seed,
                    progress=False,
                    overrides=overrides,
                    validation=str(extra.get("validation", args.validation)),
                    propensities=args.propensities,
                    # each seed's re-ranker sits on the same seed's baseline
                    reranker=None if baseline is None else seeded(str(baseline), seed, first),
                )
            )
            seconds[name] = round(time.perf_counter() - t0, 1)
            refs.append(str(ref.path))
    reference = None
    if args.reference:  # LightGBM + the hand-made count, each seed against its own LightGBM
        ref_lists = out / "lists_ref"
        if not (ref_lists / "manifest.json").exists():
            with_reference_feature(lists, ref_lists)
        reference = {}
        for seed in args.train_seeds:
            name = seeded("lgbm_ref", seed, first)
            have = versions(registry, name) if args.reuse else []
            if not have:
                run_training(
                    TrainRequest(
                        "lgbm",
                        ref_lists,
                        registry,
                        name=name,
                        seed=seed,
                        progress=False,
                        validation=args.validation,
                        propensities=args.propensities,
                    )
                )
            reference[name] = reference_row(
                registry / seeded("lgbm", seed, first), registry / name, lists, ref_lists
            )
    report = evaluate(EvalRequest(lists, refs))
    paths = write_report(report, out / "report")
    m = report["metrics"]
    primary = report["primary"]
    diffs = {}
    for seed in args.train_seeds:  # each variant against the baseline of its own seed
        base = seeded(args.variants[0], seed, first)
        for v in args.variants[1:]:
            d = comparison_of(report, primary, seeded(v, seed, first), base)
            d.pop("test")
            diffs[seeded(v, seed, first)] = d
    # The seed check: a verdict holds only if it holds for every training seed.
    seed_check = {
        v: {
            "diffs": [diffs[seeded(v, s, first)]["diff"] for s in args.train_seeds],
            "ci_above_zero_for_every_seed": all(
                diffs[seeded(v, s, first)]["ci95"][0] > 0 for s in args.train_seeds
            ),
        }
        for v in args.variants[1:]
    }
    print(
        json.dumps(
            {
                "world": {
                    "requests": args.requests,
                    "users": args.users,
                    "list_effect": args.list_effect,
                    "seed": args.seed,
                },
                "train_seeds": args.train_seeds,
                "tuning_budget": args.tune,
                "validation": args.validation,
                "propensities": args.propensities,
                "primary": primary,
                "verdict": report["verdict"]["text"],
                "models": {
                    n: {
                        "oracle_ndcg@10": m[n].get("oracle_ndcg@10"),
                        "ndcg@10": m[n].get("ndcg@10"),
                        "train_s": seconds.get(n),
                    }
                    for n in [*m]
                },
                f"diff_vs_{args.variants[0]}": diffs,
                "seed_check": seed_check,
                "reference_lgbm_plus_nearer_same_brand": reference,
                "seed_ensembles": (
                    ensembles(registry, lists, args.variants, args.train_seeds)
                    if args.ensemble and len(args.train_seeds) > 1
                    else None
                ),
                "gap_closed": report.get("gap_closed"),
                "report": str(paths["html"]),
            },
            indent=2,
        )
    )


def reference_row(base: Path, ref: Path, lists: Path, ref_lists: Path) -> dict[str, object]:
    """Oracle NDCG@10 of LightGBM with the reference feature minus LightGBM without it, paired
    over the same test requests (the two datasets differ by that one column)."""
    m, m_ref = Manifest.load(lists), Manifest.load(ref_lists)
    test, test_ref = read_split(lists, "test", m), read_split(ref_lists, "test", m_ref)
    truth = world_truth(Path(m.source["world"]), test)
    assert truth is not None
    rel, mask = to_padded(truth, test.offsets), mask_of(test.offsets)
    per = {
        name: ndcg(to_padded(load(path).score(data, man), test.offsets), rel, mask=mask, k=10)
        for name, path, data, man in (("base", base, test, m), ("ref", ref, test_ref, m_ref))
    }
    users = test.user_id if test.user_id is not None else test.request_id
    d = paired_difference(per["ref"], per["base"], Clusters.of(users)).to_dict()
    return {"oracle_ndcg@10": float(np.nanmean(per["ref"])), "diff_vs_lgbm": d}


def ensembles(
    registry: Path, lists: Path, variants: list[str], seeds: list[int], first: int | None = None
) -> dict[str, object]:
    """Each variant's seed ensemble on the test split: per list, every seed's scores z-scored
    (their scales differ from seed to seed), then averaged. Oracle NDCG@10 of the ensemble,
    its paired difference with each single seed, with the first variant's ensemble (the
    baseline gets the same number of models) and with each of the first variant's seeds.
    ``first``: the matrix's first training seed (its models carry no suffix); default seeds[0]."""
    first = seeds[0] if first is None else first
    m = Manifest.load(lists)
    test = read_split(lists, "test", m)
    truth = world_truth(Path(m.source["world"]), test)
    assert truth is not None
    rel, mask = to_padded(truth, test.offsets), mask_of(test.offsets)
    cl = Clusters.of(test.user_id if test.user_id is not None else test.request_id)
    per_list: dict[str, np.ndarray] = {}
    singles: dict[str, list[np.ndarray]] = {}
    for v in variants:
        zs = []
        for s in seeds:
            scores = to_padded(load(registry / seeded(v, s, first)).score(test, m), test.offsets)
            singles.setdefault(v, []).append(ndcg(scores, rel, mask=mask, k=10))
            # the served ensemble's own standardisation (ranker.ensemble), in float64
            zs.append(
                standardise_within_list(torch.from_numpy(scores), torch.from_numpy(mask)).numpy()
            )
        per_list[v] = ndcg(np.mean(zs, axis=0), rel, mask=mask, k=10)
    base = variants[0]
    out: dict[str, object] = {}
    for v in variants:
        out[v] = {
            "oracle_ndcg@10": float(np.nanmean(per_list[v])),
            "single_seeds": [float(np.nanmean(x)) for x in singles[v]],
            "minus_each_single_seed": [
                paired_difference(per_list[v], x, cl).to_dict() for x in singles[v]
            ],
            f"minus_{base}_ensemble": (
                None if v == base else paired_difference(per_list[v], per_list[base], cl).to_dict()
            ),
            # what shipping the ensemble (--set ensemble=N) buys against one baseline model
            f"minus_each_single_{base}": (
                None
                if v == base
                else [paired_difference(per_list[v], x, cl).to_dict() for x in singles[base]]
            ),
        }
    return out


def seeded(name: str, seed: int, first: int) -> str:
    """The registry name of a variant trained with a seed (the first seed keeps the name)."""
    return name if seed == first else f"{name}_s{seed}"


if __name__ == "__main__":
    main()
