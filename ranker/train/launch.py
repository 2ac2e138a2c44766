"""Which process of a ``torchrun`` launch this is (torch-free: the kinds' job carries it, and
the server imports the kinds without torch). See ``ranker.train.distributed``."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    import torch

# What torchrun sets in each process it starts (torch.distributed.run).
ENV_RANK, ENV_WORLD, ENV_LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        """The rank that validates, logs, writes checkpoints and publishes."""
        return self.rank == 0

    @classmethod
    def detect(cls) -> Launch:
        """This process's place in a torchrun launch; a single process without one."""
        if ENV_WORLD not in os.environ:
            return cls()
        try:
            launch = cls(
                rank=int(os.environ[ENV_RANK]),
                world=int(os.environ[ENV_WORLD]),
                local_rank=int(os.environ.get(ENV_LOCAL_RANK, "0")),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"torchrun's {ENV_RANK}/{ENV_WORLD} are not integers: {e}") from e
        if not 0 <= launch.rank < launch.world:
            raise ValueError(f"rank {launch.rank} is outside a world of {launch.world}")
        return launch

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (by local rank) on CUDA."""
        import torch

        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device


SINGLE = Launch()

_P = ParamSpec("_P")
_R = TypeVar("_R")


def restores_torch_threads(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` may set torch's intra-op thread count for itself (a training run asks for its
    own); the count is put back when it returns or raises, so a process that trains more than
    once (the Python API, the tests, a benchmark) does not keep the last run's count for
    whatever comes next."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        import torch

        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper
