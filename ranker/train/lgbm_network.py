"""LightGBM across the ranks of a ``torchrun`` launch: its own socket network, data-parallel.

``torchrun ... -m ops.cli train --model lgbm`` starts one LightGBM worker per rank. The ranks
meet in torch's gloo process group only to tell each other where LightGBM listens (each rank's
address as seen on the route to the launch's master, and a free port); LightGBM then builds
trees data-parallel over its own sockets (``tree_learner=data``): every worker holds whole
lists (every ``world``-th list of the train split), every worker cuts its bins from the same
sample of the whole split (``ranker.train.lgbm.bin_sample``; LightGBM alone would cut each
feature's bins from one worker's rows), histograms are summed across workers, and every
worker grows the same trees. Each worker scores the same whole validation split,
so all stop at the same round.

Position-aware lambdarank is not data-parallel upstream: LightGBM's
``LambdarankNDCG::UpdatePositionBiasFactors`` sums the gradients of the worker's own rows with
no network reduction, so each worker learns its own position factors from its share of the
data (checked in LightGBM's rank_objective.hpp). ``--bias auto`` therefore means ``ipw`` in a
launch, with a warning; an explicit ``--bias lambdarank`` trains with per-worker factors.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from typing import TYPE_CHECKING, Any

import numpy as np

from ranker.train.launch import Launch

if TYPE_CHECKING:
    import lightgbm as lgb


def local_address() -> str:
    """This machine's address on the route to the launch's master (no packet is sent)."""
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((master, int(os.environ.get("MASTER_PORT", "29500"))))
        return str(s.getsockname()[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def network_params(launch: Launch, timeout_min: int = 10) -> dict[str, Any]:
    """LightGBM's network settings for this rank; every rank must call it (a collective)."""
    import torch.distributed as dist

    mine = f"{local_address()}:{_free_port()}"
    everyone: list[str | None] = [None] * launch.world
    dist.all_gather_object(everyone, mine)
    return {
        "num_machines": launch.world,
        "machines": ",".join(str(m) for m in everyone),
        "local_listen_port": int(mine.rsplit(":", 1)[1]),
        "tree_learner": "data",
        "pre_partition": True,  # each worker was given its own lists
        "time_out": timeout_min,
    }


def worker_lists(n_lists: int, launch: Launch) -> np.ndarray:
    """The train lists this rank's worker holds: every ``world``-th, from its rank."""
    return np.arange(launch.rank, n_lists, launch.world)


def check_same_trees(booster: lgb.Booster, launch: Launch) -> None:
    """Raise unless every worker ended with the same trees (a collective): rank 0 publishes
    its own, which must be everyone's."""
    import torch.distributed as dist

    trees = json.dumps(booster.dump_model()["tree_info"], sort_keys=True).encode()
    digests: list[str | None] = [None] * launch.world
    dist.all_gather_object(digests, hashlib.blake2b(trees, digest_size=16).hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"LightGBM workers ended with different trees: digests {digests}")
