"""Is it the model or the clicks? Each model trained on the logged clicks and on the world's
true relevance, on worlds kept apart from evaluation.

    python benchmarks/label_signal.py --worlds 104 --requests 10000 --users 1000 --epochs 3 \
        --out runs/label_signal [--variants '{"loss": "lambdaloss"}' ...]

For each world: LightGBM (the published recipe: position-aware, examined validation, one-SE
round) on clicks and on the truth; the standalone Transformer on clicks (the defaults, then each
``--variants`` settings) and on the truth, stopping off, its test oracle NDCG@10 read at every
validation. "Truth" replaces the train and validation labels with the world's relevance rounded
to grades 0-4 (no position bias left to correct: trained with ``--bias none``). A model far
better on the truth than on clicks is held back by what it learns from clicks, not by its
capacity. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from selection_rules import rule_world  # a sibling script
from selection_transformer import Watch

from pipelines.lists.io import read_split
from ranker.data import mask_of, to_padded
from ranker.evaluate.offline import world_truth
from ranker.metrics import ndcg
from ranker.scoring import load
from ranker.train.prepare import rank_data
from ranker.train.run import TrainRequest, run_training


def truth_labelled(lists_dir: Path, world: Path, out: Path) -> Path:
    """A copy of the lists dataset whose train and validation labels are the true grades."""
    if (out / "manifest.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(lists_dir, tmp)
    for split in ("train", "valid"):
        lists = read_split(lists_dir, split)
        truth = world_truth(world, lists)
        assert truth is not None
        grades = np.clip(np.rint(truth), 0, 4).astype(np.int8)
        table = pq.read_table(lists_dir / f"{split}.parquet")
        labels = pa.ListArray.from_arrays(
            pa.array(lists.offsets.astype(np.int32)), pa.array(grades, pa.int8())
        )
        table = table.set_column(table.schema.get_field_index("labels"), "labels", labels)
        pq.write_table(table, tmp / f"{split}.parquet")
    tmp.rename(out)
    return out


def one_world(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    w = rule_world(seed, args.out / f"world{seed}", args.requests, args.users)
    m, valid, test = w.splits.manifest, w.splits.valid, w.test
    truth_dir = truth_labelled(w.out / "lists", w.out / "world", w.out / "lists_truth")
    rel = to_padded(w.truth_test, test.offsets)

    def oracle(scores: np.ndarray) -> float:
        st = to_padded(scores, test.offsets)
        return round(float(np.nanmean(ndcg(st, rel, mask=mask_of(test.offsets), k=10))), 4)

    common: dict[str, Any] = {
        "registry": w.out / "registry",
        "threads": args.threads,
        "progress": False,
        "seed": args.train_seed,
    }
    out: dict[str, Any] = {"world_seed": seed, "requests": args.requests}
    for labels, data, bias in (("clicks", w.out / "lists", "auto"), ("truth", truth_dir, "none")):
        ref = run_training(
            TrainRequest(model="lgbm", name=f"lgbm_{labels}", data=data, bias=bias, **common)
        )
        out[f"lgbm_{labels}"] = oracle(load(ref).score(test, m))
    runs = [("clicks", w.out / "lists", "auto", {}), ("truth", truth_dir, "none", {})]
    runs += [("clicks", w.out / "lists", "auto", v) for v in args.variants]
    for k, (labels, data, bias, settings) in enumerate(runs):
        watch = Watch(
            rank_data(valid, m),
            rank_data(test, m),
            valid,
            test.offsets,
            w.truth_test,
            w.gains,
            w.masks,
        )
        run_training(
            TrainRequest(
                model="transformer",
                name=f"transformer_{k}",
                data=data,
                bias=bias,
                overrides={
                    "epochs": args.epochs,
                    "patience": 10**6,
                    "eval_every_lists": args.eval_every,
                    **settings,
                },
                callbacks=(watch,),
                **common,
            )
        )
        curve = [(round(p["epoch"], 2), round(p["test_oracle"], 4)) for p in watch.points]
        out.setdefault("transformer", []).append(
            {
                "labels": labels,
                "settings": settings,
                "peak_test_oracle": max(o for _, o in curve),
                "curve": curve,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", type=int, nargs="+", default=[104])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=1_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=4096, help="lists between validations")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--variants",
        type=json.loads,
        nargs="*",
        default=[],
        help="the Transformer's settings as JSON, one object per variant trained on clicks",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    worlds = [one_world(s, args) for s in args.worlds]
    print(json.dumps({"benchmark": "label_signal", "worlds": worlds}, indent=2))


if __name__ == "__main__":
    main()
