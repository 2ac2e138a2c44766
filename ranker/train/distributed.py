"""Training under ``torchrun``: who this process is, and the few collective steps training needs.

``torchrun --nproc-per-node N -m ops.cli train --model transformer ...`` starts N copies of
``ranker train``; each finds its rank here (``Launch.detect``: the variables torchrun sets) and
joins one process group: gloo on the CPU, NCCL on CUDA (one GPU per local rank). Every rank
draws the same seeded batch order and trains on its contiguous share of each batch
(``ranker.data.shard_part``); DistributedDataParallel averages the gradients, so the replicas stay equal
step by step (checked by digest at every validation, and every step with
``check_replicas_every=1``). Rank 0 validates and broadcasts the score, so every rank takes the
same stopping decision even where GPU kernels are not bit-reproducible; rank 0 alone writes
the checkpoint and the registry version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ranker.train.launch import Launch


@contextmanager
def process_group(launch: Launch, device: torch.device) -> Iterator[None]:
    """Join the launch's process group for the duration (nothing for a single process)."""
    if not launch.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(launch.local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        # Every rank past its last collective before any closes its connections: a rank
        # that tore the group down while its peer's gloo thread was still finishing the last
        # broadcast aborted that peer ("terminate called without an active exception"), 2
        # runs in 6 of the launch test on a loaded machine. Not on error: the peer may be gone.
        dist.barrier()
        # The barrier alone moves the race to its own last message (once in a CI run on a
        # loaded machine; gloo issue 155, "barrier followed by context destruction"): wait,
        # through the rendezvous store rather than gloo, until every rank has left it.
        store = dist.distributed_c10d._get_default_store()
        store.set(f"left_barrier/{launch.rank}", "1")
        store.wait([f"left_barrier/{r}" for r in range(launch.world)])
    finally:
        dist.destroy_process_group()


def _collective(value: float, dtype: torch.dtype, device: torch.device, summed: bool) -> float:
    """One number through the group: summed over the ranks, or rank 0's."""
    t = torch.tensor([value], dtype=dtype, device=device)
    if summed:
        dist.all_reduce(t)
    else:
        dist.broadcast(t, src=0)
    return t.item()


def broadcast_float(value: float, launch: Launch, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (float64, exact)."""
    if not launch.distributed:
        return value
    return float(_collective(value, torch.float64, device, summed=False))


def sum_int(value: int, launch: Launch, device: torch.device) -> int:
    """The sum of ``value`` over the ranks."""
    if not launch.distributed:
        return value
    return int(_collective(value, torch.int64, device, summed=True))


def mean_float(value: float, launch: Launch, device: torch.device) -> float:
    """The mean of ``value`` over the ranks."""
    if not launch.distributed:
        return value
    return float(_collective(value, torch.float64, device, summed=True)) / launch.world


# How long a rank waits in a host-side sum for the others: ranks reach it apart by their own
# shares of work (out-of-fold LightGBM fits), which on large data can outlast NCCL's watchdog
# (10 minutes by default), so host arrays go through a gloo group of their own.
HOST_WAIT = timedelta(hours=6)


def host_group(launch: Launch) -> dist.ProcessGroup | None:
    """A gloo group over every rank for host arrays (``sum_over_ranks``); every rank calls
    this, while they are in step (before the work they finish apart)."""
    if not launch.distributed:
        return None
    return dist.new_group(backend="gloo", timeout=HOST_WAIT)


def sum_over_ranks(values: np.ndarray, group: dist.ProcessGroup | None) -> np.ndarray:
    """The element-wise sum of ``values`` over ``group``'s ranks, on every rank (float32; exact
    where one rank holds each nonzero, as for out-of-fold scores split by fold)."""
    if group is None:
        return values
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    dist.all_reduce(t, group=group)
    return t.numpy()


def parameter_digest(model: torch.nn.Module) -> str:
    """A digest of every parameter's bytes, in order: equal exactly when the weights are."""
    h = hashlib.blake2b(digest_size=16)
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.detach().float().cpu().numpy()).tobytes())
    return h.hexdigest()


def check_replicas(model: torch.nn.Module, launch: Launch, when: str) -> None:
    """Raise unless every rank holds the same weights (a replica that drifted would make the
    published model depend on which rank wrote it)."""
    if not launch.distributed:
        return
    digests: list[str | None] = [None] * launch.world
    dist.all_gather_object(digests, parameter_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"replicas diverged {when}: parameter digests by rank {digests}")


def broadcast_object(obj: object, launch: Launch) -> object:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not launch.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
