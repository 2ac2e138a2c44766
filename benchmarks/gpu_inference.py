"""Throughput of the exported models on one device, in process (no HTTP), and of training.

    python benchmarks/gpu_inference.py --registry runs/demo/registry --device cuda --train \\
        [--out gpu.json]
    python benchmarks/gpu_inference.py --device cpu --batches 1,4 --seconds 0.3 --train \\
        --train-batches 4 --train-steps 2          # a smoke test on a CPU-only machine

Transformer: ONNX Runtime runs the exported re-ranker (``model.onnx``; the inputs named by
``ranker.kinds.transformer.INPUTS``) on random inputs of L=100 candidates and H=50 history
events, at batch sizes 1 to 4096. ``run`` passes numpy arrays in and out, so host-device copies
are included (the server calls it this way). On CUDA, ``io_binding`` copies the inputs to the
device once and leaves the output there, which measures the device alone. LightGBM: the
baseline's ONNX graph on B*100 rows. Each figure is lists per second and milliseconds per call,
measured after a warm-up. A batch size that runs out of memory is skipped and reported.
``placement`` counts the graph nodes that ran on each execution provider, from one profiled
run. On CUDA, nodes that have no CUDA kernel run on the CPU.

``--train``: the project's training entry point (``ranker.train.transformer.train_transformer``,
bf16 autocast on CUDA as in training) for a fixed number of steps, on random lists of the same
shape, at batch 256 and 1024 lists. It reports training lists per second: the optimiser steps
only, as the trainer measures it (no validation). A 2-step run at each size warms up first.

Session options are the server's (``serving.runtime.session``). On a GPU host it needs only the
registry (``runs/demo/registry``, 5 MB) and the project's environment with onnxruntime-gpu and a
CUDA build of torch. Prints JSON (and writes it to ``--out`` after every section).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ranker.card import ModelCard
from ranker.kinds.transformer import INPUTS as TRANSFORMER_INPUTS
from ranker.registry import resolve
from serving.runtime import Device, choose_device, session


def transformer_inputs(arch: dict[str, Any], b: int, length: int, h: int) -> dict[str, np.ndarray]:
    """Random (b, length) candidates and (b, h) history events, shaped and typed for the graph."""
    rng = np.random.default_rng(0)

    def codes(sizes: list[int], n: int) -> np.ndarray:
        return np.stack([rng.integers(0, s, (b, n)) for s in sizes], axis=-1).astype(np.int64)

    hn = len(arch["hist_num_transforms"])
    return {
        "num": rng.gamma(2.0, 1.0, (b, length, len(arch["num_transforms"]))).astype(np.float32),
        "cat": codes(arch["cat_sizes"], length),
        "mask": np.ones((b, length), bool),
        "hist_num": rng.gamma(2.0, 1.0, (b, h, hn)).astype(np.float32),
        "hist_cat": codes(arch["hist_cat_sizes"], h),
        "hist_mask": np.ones((b, h), bool),
    }


def lgbm_inputs(card: ModelCard, n: int) -> np.ndarray:
    """(n, F) float32 rows: positive numbers, integer codes in the categorical columns."""
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, (n, len(card.details["feature_names"]))).astype(np.float32)
    sizes = [c.size for c in card.feature_manifest.categorical if c.name != "item_id"]
    for j, size in zip(card.details["categorical"], sizes, strict=True):
        x[:, j] = rng.integers(0, size, n)
    return x


def timed(call: Callable[[], object], b: int, seconds: float) -> dict[str, Any]:
    for _ in range(3):  # warm-up: allocations, kernel choices
        call()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < end:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {
        "batch": b,
        "calls": len(times),
        "ms_per_call": round(float(np.median(ms)), 3),
        "ms_p90": round(float(np.percentile(ms, 90)), 3),
        "lists_per_s": round(b / float(np.median(ms)) * 1000, 1),
    }


def out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(
        k in text for k in ("out of memory", "failed to allocate", "bad_alloc", "cudaerrormemory")
    )


def sweep(batches: list[int], measure: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for b in batches:
        try:
            rows.append(measure(b))
        except Exception as e:
            if not out_of_memory(e):
                raise
            rows.append({"batch": b, "skipped": f"out of memory: {str(e).splitlines()[0][:200]}"})
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def placement(model: bytes, device: Device, feed: dict[str, np.ndarray]) -> dict[str, int]:
    """Graph nodes per execution provider, from one profiled run."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model, sess_options=opts, providers=device.providers)
        sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    nodes = {
        (e["name"], e["args"]["provider"])
        for e in events
        if e.get("cat") == "Node" and "provider" in e.get("args", {})
    }
    return dict(Counter(provider for _, provider in nodes))


def onnx_transformer(
    ref_path: Path, arch: dict[str, Any], args: argparse.Namespace, device: Device
) -> dict[str, Any]:
    model = (ref_path / "model.onnx").read_bytes()
    sess = session(model, device, args.threads)
    if sess.get_providers()[0] != device.providers[0]:
        raise SystemExit(f"ONNX Runtime did not start on {device.name}: {sess.get_providers()}")
    all_inputs = transformer_inputs(arch, max(args.batches), args.candidates, args.history)
    out_name = sess.get_outputs()[0].name

    def feed(b: int) -> dict[str, np.ndarray]:
        return {k: all_inputs[k][:b] for k in TRANSFORMER_INPUTS}  # contiguous views

    def plain(b: int) -> dict[str, Any]:
        x = feed(b)
        return timed(lambda: sess.run([out_name], x), b, args.seconds)

    def bound(b: int) -> dict[str, Any]:
        io = sess.io_binding()
        on_device = {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for k, v in feed(b).items()}
        for k, v in on_device.items():
            io.bind_ortvalue_input(k, v)
        io.bind_output(out_name, "cuda", 0)
        # Run synchronises the CUDA stream at its end, so the time is the device's work.
        return timed(lambda: sess.run_with_iobinding(io), b, args.seconds)

    out: dict[str, Any] = {"placement": placement(model, device, feed(1))}
    print("transformer, run:", file=sys.stderr)
    out["run"] = sweep(args.batches, plain)
    if device.name == "cuda":
        print("transformer, io_binding:", file=sys.stderr)
        out["io_binding"] = sweep(args.batches, bound)
    return out


def onnx_lgbm(ref_path: Path, args: argparse.Namespace, device: Device) -> dict[str, Any]:
    model = (ref_path / "model.onnx").read_bytes()
    card = ModelCard.read(ref_path)
    sess = session(model, device, args.threads)
    rows = lgbm_inputs(card, max(args.batches) * args.candidates)

    def plain(b: int) -> dict[str, Any]:
        x = {"features": rows[: b * args.candidates]}
        return {**timed(lambda: sess.run(None, x), b, args.seconds), "rows": b * args.candidates}

    out: dict[str, Any] = {"placement": placement(model, device, {"features": rows[:10]})}
    print("lgbm, run:", file=sys.stderr)
    out["run"] = sweep(args.batches, plain)
    return out


def synthetic_data(arch: dict[str, Any], n: int, length: int, h: int) -> Any:
    """``RankData`` of n random lists (length candidates, h history events), one click each."""
    from pipelines.lists.table import Lists
    from ranker.data import RankData

    x = transformer_inputs(arch, n, length, h)
    labels = np.zeros((n, length), np.int8)
    labels[np.arange(n), np.random.default_rng(1).integers(0, length, n)] = 1
    lists = Lists(
        request_id=np.array([f"r{i}" for i in range(n)], dtype=object),
        offsets=np.arange(n + 1, dtype=np.int64) * length,
        item_ids=np.full(n * length, "i", dtype=object),
        labels=labels.reshape(-1),
        num=x["num"].reshape(n * length, -1),
        cat=x["cat"].reshape(n * length, -1).astype(np.int32),
        positions=np.tile(np.arange(1, length + 1, dtype=np.int16), n),
        hist_offsets=np.arange(n + 1, dtype=np.int64) * h,
        hist_item_ids=np.full(n * h, "i", dtype=object),
        hist_num=x["hist_num"].reshape(n * h, -1),
        hist_cat=x["hist_cat"].reshape(n * h, -1).astype(np.int32),
    )
    return RankData(lists, max_history=h)


def training(ref_path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from ranker.train.checkpoint import load_model
    from ranker.train.config import TrainConfig
    from ranker.train.transformer import train_transformer

    model = load_model(ref_path / "checkpoint.pt")[0]
    spec, cfg, arch = model.spec, model.cfg, model.spec.to_dict()
    valid = synthetic_data(arch, 64, args.candidates, args.history)
    rows: list[dict[str, Any]] = []
    print("training:", file=sys.stderr)
    for b in args.train_batches:
        try:
            res = {}
            for steps in (2, args.train_steps):  # the first run warms up
                tc = TrainConfig(
                    epochs=1,
                    batch_lists=b,
                    device=args.device,
                    threads=args.threads or None,
                    eval_every_lists=10**12,
                )
                train = synthetic_data(arch, b * steps, args.candidates, args.history)
                res[steps] = train_transformer(train, valid, spec, cfg, tc, progress=False).history[
                    -1
                ]
            log = res[args.train_steps]
            rows.append(
                {
                    "batch": b,
                    "steps": args.train_steps,
                    "seconds": round(log.seconds, 3),
                    "lists_per_s": round(log.lists_per_s, 1),
                }
            )
        except (RuntimeError, MemoryError) as e:
            if not out_of_memory(e) and not isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            rows.append({"batch": b, "skipped": f"out of memory: {str(e).splitlines()[0][:200]}"})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--registry", type=Path, default=Path("runs/demo/registry"))
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--batches", default="1,4,16,64,256,1024,4096")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed calls per batch size")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: ONNX Runtime's)")
    ap.add_argument("--train", action="store_true", help="also training lists/s")
    ap.add_argument("--train-batches", default="256,1024")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--out", type=Path, help="also write the JSON here, after every section")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.train_batches = [int(b) for b in args.train_batches.split(",")]
    device = choose_device(args.device)
    if device.name != args.device:
        raise SystemExit(f"asked for {args.device}, have {device.description}")
    ref = resolve(args.registry / "transformer")
    card = ref.card()
    # the inputs' shapes and vocabularies (cards before the feature spec kept them here)
    arch = card.details.get("feature_spec") or card.details["architecture"]
    result: dict[str, Any] = {
        "benchmark": "gpu_inference",
        "device": device.description,
        "providers": device.providers,
        "onnxruntime": ort.__version__,
        "model": str(ref),
        "baseline": card.baseline,
        "candidates": args.candidates,
        "history": args.history,
        "seconds_per_size": args.seconds,
    }

    def emit() -> None:
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))

    result["transformer"] = onnx_transformer(ref.path, arch, args, device)
    emit()
    assert card.baseline is not None
    base = resolve(card.baseline, registry=ref.registry)
    result["lgbm"] = onnx_lgbm(base.path, args, device)
    emit()
    if args.train:
        import torch

        result["torch"] = torch.__version__
        if args.device == "cuda":
            result["gpu"] = torch.cuda.get_device_name(0)
        result["train"] = training(ref.path, args)
        emit()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
