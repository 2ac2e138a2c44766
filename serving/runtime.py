"""ONNX Runtime: the execution provider and the sessions.

The CUDA execution provider is used when a GPU and its libraries are present
(``onnxruntime.preload_dlls()`` finds CUDA libraries installed as pip packages); otherwise the
CPU. The choice is made once per process and stated once; on a CPU-only machine nothing tries
CUDA, so there is no error spam. Requests reach the sessions through ``serving.inference``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


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
