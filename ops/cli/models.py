"""Model commands: ``train`` (and ``evaluate``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ranker.kinds import KINDS
    from ranker.propensity import PROPENSITY_SOURCES
    from ranker.train.prepare import VALIDATION_RULES

    kinds = "; ".join(f"{name}: {k.help}" for name, k in KINDS.items())
    p = sub.add_parser("train", help="train a model of one kind: " + ", ".join(KINDS))
    p.add_argument("--model", choices=list(KINDS), required=True, help=kinds)
    p.add_argument("--data", type=Path, required=True, help="a lists dataset directory")
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--name", help="model name in the registry (default: the model kind)")
    biases = sorted({b for k in KINDS.values() for b in k.biases})
    own = ", ".join(f"{name}: {k.own_bias}" for name, k in KINDS.items())
    p.add_argument(
        "--bias",
        choices=["auto", *biases],
        default="auto",
        help=f"position-bias correction: auto = each kind's own ({own}); ipw = inverse "
        "propensity weights (see --propensities); none",
    )
    p.add_argument(
        "--propensities",
        choices=PROPENSITY_SOURCES,
        default="auto",
        help="examination propensities (for ipw, IPS validation and the position tower's "
        "start) from: observational = a click model on all logged traffic; randomised = the "
        "randomised swaps alone; auto (default) = observational unless the randomised swaps "
        "show it too steep. The card records which, and every estimate it computed",
    )
    p.add_argument(
        "--tune", type=int, default=1, help="tuning trials on validation (same budget for both)"
    )
    p.add_argument(
        "--reranker", help="re-ranker mode: the LightGBM baseline (NAME or REGISTRY/NAME)"
    )
    p.add_argument("--resume", help="continue training this Transformer version (NAME/VERSION)")
    p.add_argument(
        "--validation",
        default="auto",
        choices=["auto", *VALIDATION_RULES],
        help="model selection reads, on the validation split: examined = NDCG@10 over the "
        "candidates at or above each list's last click or order; ips = NDCG@10 over all, "
        "propensity-weighted; loss = the training loss on its clicks, the position tower on "
        "(the Transformer only); auto (default) = the kind's own (LightGBM: examined; the "
        "Transformer with its position prior: loss, as a re-ranker: ips)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train N times, seeds SEED..SEED+N-1, one version each (evaluate --seeds N then "
        "reports the spread)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the kind, e.g. --set epochs=5 (unknown keys are refused with the "
        "list of known ones)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_train)

    p = sub.add_parser("evaluate", help="compare models on held-out lists; JSON, Markdown, HTML")
    p.add_argument("--data", type=Path, required=True, help="a lists dataset directory")
    p.add_argument("--models", nargs="+", required=True, metavar="REGISTRY/NAME[/VERSION]")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--world", type=Path, help="the simulated world (default: from the dataset)")
    p.add_argument(
        "--empty-lists",
        choices=["exclude", "zero", "one"],
        default="exclude",
        help="lists with no positive label: excluded (counted), or scored 0 or 1",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="each model name stands for its latest N versions (train --seeds N): the report "
        "shows the training-seed spread and the verdict says when a difference is within it",
    )
    p.set_defaults(run=run_evaluate)

    p = sub.add_parser("export", help="add model.onnx (and its sha256) to a registry version")
    p.add_argument("--model", required=True, metavar="REGISTRY/NAME[/VERSION]")
    precisions = sorted({x for k in KINDS.values() for x in k.precisions})
    p.add_argument(
        "--precision",
        choices=precisions,
        default="fp32",
        help="fp16 (kinds that offer it: "
        + ", ".join(n for n, k in KINDS.items() if "fp16" in k.precisions)
        + ") halves the file and suits GPUs (parity in the README)",
    )
    p.set_defaults(run=run_export)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_train(args: argparse.Namespace) -> int:
    from ranker.train.launch import Launch
    from ranker.train.run import TrainRequest, run_training

    if not (args.data / "manifest.json").exists():
        raise FileNotFoundError(f"{args.data}: not a lists dataset (no manifest.json)")
    if args.tune < 1:
        raise ValueError("--tune must be >= 1")
    if args.seeds < 1 or (args.seeds > 1 and args.resume):
        raise ValueError("--seeds must be >= 1, and 1 with --resume")
    overrides = parse_overrides(args.set)
    leader = Launch.detect().leader  # under torchrun rank 0 speaks for the launch
    if not leader:
        logging.getLogger().setLevel(logging.WARNING)
    for seed in range(args.seed, args.seed + args.seeds):
        ref = run_training(
            TrainRequest(
                model=args.model,
                data=args.data,
                registry=args.registry,
                name=args.name,
                bias=args.bias,
                tune=args.tune,
                seed=seed,
                threads=args.threads,
                reranker=args.reranker,
                resume=args.resume,
                validation=args.validation,
                propensities=args.propensities,
                progress=not args.no_progress,
                overrides=overrides,
            )
        )
        if not leader:
            continue
        card = ref.card()
        print(f"published {ref} at {ref.path} (seed {seed})")
        print(f"  valid ndcg@10 {card.valid_ndcg:.4f}; bias correction: {card.bias_correction}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ranker.evaluate.offline import EvalRequest, evaluate
    from ranker.evaluate.report import write_report

    if not (args.data / "manifest.json").exists():
        raise FileNotFoundError(f"{args.data}: not a lists dataset (no manifest.json)")
    req = EvalRequest(
        data=args.data,
        models=args.models,
        world=args.world,
        empty_lists=args.empty_lists,
        n_boot=args.bootstrap,
        seed=args.seed,
        seeds=args.seeds,
    )
    report = evaluate(req)
    paths = write_report(report, args.out)
    print(f"verdict ({report['primary']}): {report['verdict']['text']}")
    print(f"report: {paths['html']} (also report.md, report.json)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ranker.export.run import export_model

    ref = export_model(args.model, args.precision)
    card = ref.card()
    onnx = card.onnx or {}
    print(
        f"exported {ref}: {ref.path / 'model.onnx'} (sha256 {card.files['model.onnx'][:12]}..., "
        f"{onnx.get('precision')}, max |ONNX - {card.kind}| "
        f"{onnx.get('parity_max_abs_diff', float('nan')):.1e} on a sample)"
    )
    return 0
