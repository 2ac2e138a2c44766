"""Both models on real learning-to-rank features: the Yahoo and MSLR-WEB10K samples.

    python benchmarks/compare_real.py --yahoo DIR --mslr DIR [--out runs/cmp-real] [--tune 1]
        [--variants lgbm transformer_auto]

DIR holds the sample files (yahoo: rank.train, rank.test and their .query files; mslr:
msn1.fold1.train.5k.txt and msn1.fold1.test.5k.txt). Each is imported with
``ranker import-libsvm`` (validation: 20% of train queries); LightGBM, the standalone
Transformer and the Transformer re-ranking that LightGBM are trained without position-bias
correction (these labels are graded judgements, not clicks) and compared on the
test queries with 95% bootstrap CIs over queries. Prints JSON with the CI widths: the samples
are small.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipelines.libsvm import import_libsvm
from ranker.evaluate.offline import EvalRequest, comparison_of, evaluate
from ranker.evaluate.report import write_report
from ranker.train.run import TrainRequest, run_training

SETS = {
    "yahoo": ("rank.train", "rank.test"),
    "mslr": ("msn1.fold1.train.5k.txt", "msn1.fold1.test.5k.txt"),
}

# name -> (model, baseline for re-ranking, settings beside the training's)
MODELS: dict[str, tuple[str, str | None, dict[str, object]]] = {
    "lgbm": ("lgbm", None, {}),
    "transformer": ("transformer", None, {}),
    # the residual re-ranker over that LightGBM
    "transformer_rerank": ("transformer", "lgbm", {"blend": 0}),
    # that LightGBM blended with the standalone Transformer above (the same model inside)
    "transformer_blend": ("transformer", "lgbm", {"blend": 0.5}),
    # the default re-ranker: the same blend, its weight chosen on validation
    "transformer_auto": ("transformer", "lgbm", {}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--yahoo", type=Path)
    ap.add_argument("--mslr", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/cmp-real"))
    ap.add_argument("--tune", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        help="which of the models to train (lgbm first: the others are compared with it)",
    )
    args = ap.parse_args()
    if args.variants[0] != "lgbm":
        ap.error("--variants: lgbm comes first (the others re-rank it or are compared with it)")
    models = {k: MODELS[k] for k in args.variants}
    results = {}
    for name, src in (("yahoo", args.yahoo), ("mslr", args.mslr)):
        if src is None:
            continue
        train, test = (src / f for f in SETS[name])
        out = args.out / name
        import_libsvm(train, test, out / "lists", valid_fraction=0.2, seed=args.seed)
        refs, secs, weights = [], {}, {}
        for model_name, (model, baseline, settings) in models.items():
            t0 = time.perf_counter()
            overrides = (
                {"epochs": args.epochs, "patience": 8, "batch_lists": 16}
                if model == "transformer"
                else {}
            ) | settings
            ref = run_training(
                TrainRequest(
                    model,
                    out / "lists",
                    out / "registry",
                    name=model_name,
                    bias="none",
                    tune=args.tune,
                    seed=args.seed,
                    progress=False,
                    overrides=overrides,
                    reranker=baseline,
                )
            )
            secs[model_name] = round(time.perf_counter() - t0, 1)
            refs.append(str(ref.path))
            blend = ref.card().details.get("blend")
            if blend:  # a blend's weight and the signal that chose it
                weights[model_name] = {k: blend[k] for k in ("weight", "chosen_by") if k in blend}
        report = evaluate(EvalRequest(out / "lists", refs, seed=args.seed))
        write_report(report, out / "report")
        m = report["metrics"]
        diffs = {}
        for k in list(models)[1:]:
            d = comparison_of(report, "ndcg@10", k, "lgbm")
            d.pop("vs")
            diffs[k] = d
        results[name] = {
            "test_queries": report["requests"],
            "ndcg@10": {k: m[k]["ndcg@10"] for k in models},
            "ci_width": {
                k: round(m[k]["ndcg@10"]["ci95"][1] - m[k]["ndcg@10"]["ci95"][0], 4) for k in models
            },
            "minus_lgbm": diffs,
            "train_s": secs,
            "blend_weights": weights,
            "verdict": report["verdict"]["text"],
        }
    print(
        json.dumps(
            {"benchmark": "compare_real", "tuning_budget": args.tune, "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
