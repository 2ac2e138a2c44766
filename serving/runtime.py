"""ONNX Runtime: the execution provider, the sessions, and batching across requests.

The CUDA execution provider is used when a GPU and its libraries are present
(``onnxruntime.preload_dlls()`` finds CUDA libraries installed as pip packages); otherwise the
CPU. The choice is made once per process and stated once; on a CPU-only machine nothing tries
CUDA, so there is no error spam. On a GPU, concurrent requests for the Transformer are batched
within a small time window (``MicroBatcher``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)
TRANSFORMER_INPUTS = ("num", "cat", "mask", "hist_num", "hist_cat", "hist_mask")


@dataclass(frozen=True)
class Device:
    providers: list[str]
    name: str  # "cuda" or "cpu"
    description: str


_DEVICE: Device | None = None


def gpu_present() -> bool:
    """A cheap check that does not load CUDA: an NVIDIA device node or CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia"))


def choose_device(preference: str = "auto") -> Device:
    """Pick the execution provider once per process (``auto``: CUDA if it can work, else CPU)."""
    global _DEVICE
    if _DEVICE is not None and preference == "auto":
        return _DEVICE
    device = Device(["CPUExecutionProvider"], "cpu", "CPU (no GPU found)")
    if preference == "cpu":
        device = Device(["CPUExecutionProvider"], "cpu", "CPU (as configured)")
    elif (
        preference in ("auto", "cuda")
        and gpu_present()
        and "CUDAExecutionProvider" in ort.get_available_providers()
    ):
        try:
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
            device = Device(["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda", "CUDA GPU")
        except Exception as e:  # CUDA libraries missing: say so once, use the CPU
            device = Device(["CPUExecutionProvider"], "cpu", f"CPU (CUDA unusable: {e})")
    elif preference == "cuda":
        device = Device(["CPUExecutionProvider"], "cpu", "CPU (CUDA asked for but not available)")
    log.info("ONNX Runtime %s on %s", ort.__version__, device.description)
    _DEVICE = device
    return device


def session(model: bytes | Path, device: Device, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Idle pool threads otherwise spin after each run, taking the core that featurises the next
    # request (measured: -15% per request on two cores with spinning off).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=device.providers)
    except Exception:
        if device.name == "cpu":
            raise
        log.warning("CUDA session failed; using the CPU for this model")
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class TransformerInput:
    """One request's tensors (no batch axis)."""

    num: np.ndarray  # (L, F) float32
    cat: np.ndarray  # (L, C) int64
    hist_num: np.ndarray  # (H, Hn) float32
    hist_cat: np.ndarray  # (H, Hc) int64


def pad_batch(items: list[TransformerInput]) -> dict[str, np.ndarray]:
    """Stack requests into padded (B, L, ...) and (B, H, ...) arrays with masks."""
    b = len(items)
    width = max(len(x.num) for x in items)
    hwidth = max(len(x.hist_num) for x in items)
    f, c = items[0].num.shape[1], items[0].cat.shape[1]
    hn, hc = items[0].hist_num.shape[1], items[0].hist_cat.shape[1]
    out: dict[str, np.ndarray] = {
        "num": np.zeros((b, width, f), np.float32),
        "cat": np.zeros((b, width, c), np.int64),
        "mask": np.zeros((b, width), bool),
        "hist_num": np.zeros((b, hwidth, hn), np.float32),
        "hist_cat": np.zeros((b, hwidth, hc), np.int64),
        "hist_mask": np.zeros((b, hwidth), bool),
    }
    for i, x in enumerate(items):
        n, h = len(x.num), len(x.hist_num)
        out["num"][i, :n], out["cat"][i, :n], out["mask"][i, :n] = x.num, x.cat, True
        out["hist_num"][i, :h], out["hist_cat"][i, :h], out["hist_mask"][i, :h] = (
            x.hist_num,
            x.hist_cat,
            True,
        )
    return out


class TransformerRunner:
    def __init__(self, sess: ort.InferenceSession):
        self.sess = sess

    def score_many(self, items: list[TransformerInput]) -> list[np.ndarray]:
        out = self.sess.run(None, pad_batch(items))[0]  # (B, L)
        return [out[i, : len(x.num)] for i, x in enumerate(items)]

    def score(self, item: TransformerInput) -> np.ndarray:
        return self.score_many([item])[0]


class LgbmRunner:
    def __init__(self, sess: ort.InferenceSession):
        self.sess = sess

    def score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.sess.run(None, {"features": features.astype(np.float32)})[0]
        ).reshape(-1)


@dataclass
class _Job:
    item: TransformerInput
    future: Future[np.ndarray] = field(default_factory=Future)


class MicroBatcher:
    """Collects concurrent requests for ``window_ms`` (or until ``max_batch``) and scores them
    in one session call; each caller gets its own scores back.

    A request never waits on a closed batcher: after ``close`` callers score directly, and
    jobs still queued when the loop stopped are scored by ``close`` itself (a reload once
    closed the batcher under requests in flight, and they hung).
    """

    def __init__(self, runner: TransformerRunner, window_ms: float, max_batch: int):
        self.runner = runner
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.items = 0

    def score(self, item: TransformerInput) -> np.ndarray:
        if self._closed:
            return self.runner.score(item)
        job = _Job(item)
        self._queue.put(job)
        return job.future.result()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=5)
        while True:  # jobs queued after the loop stopped
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._run([job])

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.perf_counter() + self.window
            while len(jobs) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
            self._run(jobs)
            self.batches += 1
            self.items += len(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            scores = self.runner.score_many([j.item for j in jobs])
            for j, s in zip(jobs, scores, strict=True):
                j.future.set_result(s)
        except Exception as e:  # every waiting request gets the error, none hangs
            for j in jobs:
                j.future.set_exception(e)
