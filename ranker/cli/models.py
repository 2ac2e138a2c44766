"""Model commands: ``train`` (and ``evaluate``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the LightGBM baseline or the Transformer ranker")
    p.add_argument("--model", choices=["lgbm", "transformer"], required=True)
    p.add_argument("--data", type=Path, required=True, help="a lists dataset directory")
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--name", help="model name in the registry (default: the model kind)")
    p.add_argument(
        "--bias",
        choices=["auto", "none", "ipw", "tower", "lambdarank"],
        default="auto",
        help="position-bias correction: auto = each model's own position-bias model (the "
        "Transformer's position tower, LightGBM's position-aware lambdarank); ipw = inverse "
        "propensity weights from randomised traffic (both models); none",
    )
    p.add_argument(
        "--tune", type=int, default=1, help="tuning trials on validation (same budget for both)"
    )
    p.add_argument(
        "--reranker", help="re-ranker mode: the LightGBM baseline (NAME or REGISTRY/NAME)"
    )
    p.add_argument("--resume", help="continue training this Transformer version (NAME/VERSION)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training or architecture setting, e.g. --set epochs=5",
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
    p.set_defaults(run=run_evaluate)

    p = sub.add_parser("export", help="add model.onnx (and its sha256) to a registry version")
    p.add_argument("--model", required=True, metavar="REGISTRY/NAME[/VERSION]")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16"],
        default="fp32",
        help="Transformer only: fp16 halves the file and suits GPUs (parity in the README)",
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
    from ranker.train.run import TrainRequest, run_training

    if not (args.data / "manifest.json").exists():
        raise FileNotFoundError(f"{args.data}: not a lists dataset (no manifest.json)")
    if args.tune < 1:
        raise ValueError("--tune must be >= 1")
    ref = run_training(
        TrainRequest(
            model=args.model,
            data=args.data,
            registry=args.registry,
            name=args.name,
            bias=args.bias,
            tune=args.tune,
            seed=args.seed,
            threads=args.threads,
            reranker=args.reranker,
            resume=args.resume,
            progress=not args.no_progress,
            overrides=parse_overrides(args.set),
        )
    )
    m = ref.manifest()
    print(f"published {ref} at {ref.path}")
    valid = m["metrics"]["valid"]["ndcg@10"]
    print(f"  valid ndcg@10 {valid:.4f}; bias correction: {m['bias_correction']}")
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
    )
    report = evaluate(req)
    paths = write_report(report, args.out)
    print(f"verdict ({report['primary']}): {report['verdict']['text']}")
    print(f"report: {paths['html']} (also report.md, report.json)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ranker.export.run import export_model

    ref = export_model(args.model, args.precision)
    m = ref.manifest()
    print(
        f"exported {ref}: {ref.path / 'model.onnx'} (sha256 {m['files']['model.onnx'][:12]}..., "
        f"{m['onnx']['precision']}, max |ONNX - {m['kind']}| "
        f"{m['onnx']['parity_max_abs_diff']:.1e} on a sample)"
    )
    return 0
