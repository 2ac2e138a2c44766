"""How far batched scores may be from one-at-a-time scores of the same lists, per device.

CPU 1e-5: padding other lists beside a list changes only the order of float32 sums in ONNX
Runtime's kernels. CUDA 1e-3: its matmul kernels differ by batch shape and may use TF32; up to
5e-4 was seen between CUDA and CPU scores of the same lists on an H200, and a 1e-4 tolerance
failed there.
"""

from serving.runtime import choose_device

TOLERANCE = {"cpu": 1e-5, "cuda": 1e-3}


def batched_tolerance() -> float:
    return TOLERANCE[choose_device("auto").name]
