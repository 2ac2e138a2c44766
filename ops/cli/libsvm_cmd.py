"""``import-libsvm``: standard LTR files (SVMlight/LibSVM, LightGBM .query) -> a lists dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.lists.manifest import Manifest


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-libsvm",
        help="turn SVMlight/LibSVM learning-to-rank files into a lists dataset",
        description="Queries come from qid: on the lines or, without them, from FILE.query "
        "beside each file (LightGBM group sizes). See pipelines/libsvm.py for the rules.",
    )
    p.add_argument("--train", type=Path, required=True, help="training file")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--valid", type=Path, help="validation file")
    held.add_argument(
        "--valid-fraction",
        type=float,
        default=0.2,
        help="without --valid: share of the train queries held out for validation (0.2)",
    )
    p.add_argument("--test", type=Path, required=True, help="test file")
    p.add_argument("--out", type=Path, required=True, help="output dataset directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation draw")
    p.set_defaults(run=run_import)


def format_summary(manifest: Manifest, out: Path) -> str:
    """Features, labels, queries and documents per split, and the bad lines skipped."""
    transforms = [f.transform for f in manifest.numeric]
    names = manifest.numeric_names
    lines = [
        f"wrote {out}: {len(names)} features {names[0]}..{names[-1]} "
        f"({transforms.count('slog1p')} slog1p, {transforms.count('none')} none), "
        f"labels 0-{manifest.max_label}"
    ]
    for split, info in manifest.splits.items():
        lines.append(f"  {split:<5} {info['requests']:>8,} queries {info['items']:>10,} documents")
    bad = manifest.bad_rows.get("libsvm", {})
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(bad.items()))
    lines.append(f"bad lines (skipped): {skipped or 'none'}")
    return "\n".join(lines)


def run_import(args: argparse.Namespace) -> int:
    from pipelines.libsvm import import_libsvm

    manifest = import_libsvm(
        args.train,
        args.test,
        args.out,
        valid=args.valid,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
    )
    print(format_summary(manifest, args.out))
    return 0
