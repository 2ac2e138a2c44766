"""Run by ``torchrun`` in tests/ranker/test_distributed.py: train the small Transformer across
the launch's ranks and write what each rank ended with (``OUT/rank<R>.json``).

    torchrun --nproc-per-node 2 ddp_train.py LISTS OUT

Then, in the same launch (each costs two interpreter starts), a second training in which rank 1
nudges one weight after each optimizer step: the replica check must stop it on every rank,
with the same message (recorded as ``diverged``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ranker.model import RankerConfig
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.config import TrainConfig
from ranker.train.distributed import parameter_digest, process_group
from ranker.train.launch import Launch
from ranker.train.prepare import load_splits, rank_data
from ranker.train.transformer import train_transformer


def main() -> None:
    lists, out = Path(sys.argv[1]), Path(sys.argv[2])
    launch = Launch.detect()
    sp, _ = load_splits(lists, threads=1)  # one core per rank, as --threads 1
    m = sp.manifest
    train, valid = rank_data(sp.train, m), rank_data(sp.valid, m)
    spec, mc = spec_from_manifest(m), RankerConfig(d_model=32, n_layers=1, d_ff=64)
    cfg = TrainConfig(
        epochs=2, batch_lists=128, threads=1, seed=3, patience=10, check_replicas_every=1
    )
    with process_group(launch, torch.device("cpu")):
        res = train_transformer(train, valid, spec, mc, cfg, progress=False, launch=launch)
        if launch.rank == 1:
            step = torch.optim.AdamW.step

            def nudged_step(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
                out = step(self, *args, **kwargs)
                with torch.no_grad():  # one rank's weights drift after its optimizer step
                    self.param_groups[0]["params"][0].add_(1e-3)
                return out

            torch.optim.AdamW.step = nudged_step  # type: ignore[method-assign,assignment]
        try:
            train_transformer(train, valid, spec, mc, cfg, progress=False, launch=launch)
            diverged = None
        except RuntimeError as e:  # raised on every rank after the same collective
            diverged = str(e)
    (out / f"rank{launch.rank}.json").write_text(
        json.dumps(
            {
                "digest": parameter_digest(res.model),
                "history": [[h.epoch, h.valid_ndcg, h.train_loss] for h in res.history],
                "best_epoch": res.best_epoch,
                "diverged": diverged,
            }
        )
    )


if __name__ == "__main__":
    main()
