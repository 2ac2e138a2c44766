"""Peak memory of Transformer training with the splits loaded whole against streamed from
their Parquet row groups (``--set stream=true``), on datasets of different sizes, in one run.

    python benchmarks/train_memory.py --data runs/a/lists runs/b/lists
        [--windows 0 4096 65536 --lists 16384 --threads 2]

Each run is ``ranker train``'s own path (``run_training``) in a fresh process, stopped by a
callback at its first validation, after ``--lists`` training lists: the in-memory path (window
0) has loaded both splits whole by then, a streamed one has read a window of each, which is
the most it holds (later windows replace them). Prints JSON: per dataset its train lists and
candidates, and per mode the peak RSS and wall seconds (goal: the streamed peak follows the
window, not the dataset).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _util import emit, run_measured

from pipelines.lists.manifest import Manifest


def _child(data: Path, window: int, lists: int, threads: int) -> None:
    """One training run, stopped at its first validation (``window`` 0: in memory)."""
    from ranker.train.run import TrainRequest, run_training

    sets: dict[str, object] = {"epochs": 1, "eval_every_lists": lists, "device": "cpu"}
    if window:
        sets |= {"stream": True, "stream_window_lists": window}
    with tempfile.TemporaryDirectory() as reg:
        run_training(
            TrainRequest(
                "transformer",
                data,
                Path(reg),
                threads=threads,
                progress=False,
                overrides=sets,
                callbacks=(lambda _log, _model: True,),
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, nargs="+", default=[])
    ap.add_argument("--windows", type=int, nargs="+", default=[0, 4096, 65536], help="0: in memory")
    ap.add_argument("--lists", type=int, default=16384, help="training lists before stopping")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("DATA", "WINDOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(Path(args.child[0]), int(args.child[1]), args.lists, args.threads)
        return
    if not args.data:
        ap.error("--data: at least one lists dataset")
    rows = []
    for data in args.data:
        m = Manifest.load(data)
        train = m.splits["train"]
        row: dict[str, object] = {
            "data": str(data),
            "train_lists": train["requests"],
            "train_candidates": train["items"],
        }
        for window in args.windows:
            cmd = [sys.executable, __file__, "--child", str(data), str(window)]
            cmd += ["--lists", str(args.lists), "--threads", str(args.threads)]
            r = run_measured(cmd)
            r.pop("stderr")
            row["in_memory" if window == 0 else f"stream_{window}"] = r
        rows.append(row)
    emit({"benchmark": "train_memory", "lists_before_stop": args.lists, "runs": rows})


if __name__ == "__main__":
    main()
