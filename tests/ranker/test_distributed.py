"""Transformer training across processes: real ``torchrun`` launches of two gloo processes on
this machine (about 10 s each), and the batch sharding they rely on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ops.cli import main
from ops.online.server_proc import free_port
from ranker.data import shard_part
from ranker.device_data import DeviceData
from ranker.registry import versions
from ranker.train.launch import Launch
from ranker.train.prepare import load_splits, rank_data
from ranker.train.run import TrainRequest, run_training

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)  # not itself inside a launch
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(free_port()), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_shard_part_gives_each_list_of_a_batch_to_one_rank() -> None:
    for n in range(12):
        for world in (1, 2, 3, 5):
            parts = [shard_part(n, r, world) for r in range(world)]
            if n < world:  # too small to give every rank a list: skipped by all alike
                assert all(p is None for p in parts)
                continue
            got = [i for p in parts for i in range(n)[p]]  # type: ignore[index]
            assert got == list(range(n))
            sizes = [len(range(n)[p]) for p in parts]  # type: ignore[index]
            assert max(sizes) - min(sizes) <= 1


def test_launch_reads_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert Launch.detect() == Launch(0, 1, 0) and Launch.detect().leader
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    got = Launch.detect()
    assert (got.rank, got.world, got.local_rank, got.distributed, got.leader) == (3, 4, 1, 1, 0)
    assert got.device(torch.device("cuda")) == torch.device("cuda", 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="outside a world of 4"):
        Launch.detect()


@pytest.mark.parametrize("resident", [False, True])
def test_sharded_batches_split_the_single_process_batches(
    small_lists: Path, resident: bool
) -> None:
    sp, _ = load_splits(small_lists)
    data = rank_data(sp.train, sp.manifest)
    src = DeviceData(data, torch.device("cpu")) if resident else data

    def lists(shard: tuple[int, int]) -> list[list[int]]:
        rng = np.random.default_rng(5)
        return [b.lists.tolist() for b in src.batches(100, True, rng, shard=shard)]

    whole, r0, r1 = lists((0, 1)), lists((0, 2)), lists((1, 2))
    assert len(whole) == len(r0) == len(r1)  # no batch of under 2 lists in this split
    for w, a, b in zip(whole, r0, r1, strict=True):
        assert a + b == w and abs(len(a) - len(b)) <= 1


def test_two_gloo_processes_train_equal_replicas_and_a_drifting_one_stops_training(
    small_lists: Path, tmp_path: Path
) -> None:
    """check_replicas_every=1: the ranks compare parameter digests after every step. Both end
    with the same weights and the same validation history; then, in the same launch, one
    rank's weights drift after its first step and the check stops the training on both."""
    run = _torchrun([str(SCRIPT), str(small_lists), str(tmp_path)], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1
    assert [h[0] for h in r0["history"]] == [1.0, 2.0]  # epochs counted over both ranks' lists
    assert r0["history"][-1][1] > 0.3  # it learned something
    assert "replicas diverged after step 1 of epoch 1" in r0["diverged"]


def test_ranker_train_under_torchrun_publishes_one_version_of_a_streamed_training(
    small_lists: Path, tmp_path: Path
) -> None:
    """``ranker train`` under torchrun, with --set stream=true: both ranks read the same windows
    of row groups and take their halves of each batch (the replica check after every step
    would fail the run), and rank 0 alone publishes. One launch for both: each costs two
    interpreter starts."""
    reg = tmp_path / "registry"
    args = ["--data", str(small_lists), "--registry", str(reg), "--threads", "1", "--no-progress"]
    sets = ["stream=true", "stream_window_lists=500", "check_replicas_every=1", "epochs=1"]
    sets += ["d_model=32", "n_layers=1"]
    flags = [f for s in sets for f in ("--set", s)]
    run = _torchrun(["-m", "ops.cli", "train", "--model", "transformer", *args, *flags], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert versions(reg, "transformer") == ["v1"]
    assert run.stdout.count("published transformer/v1") == 1  # rank 0 speaks
    card = json.loads((reg / "transformer" / "v1" / "manifest.json").read_text())
    assert card["training"]["processes"] == 2 and card["training"]["stream"] is True
    # the Transformer's own rule: minus the held-out loss (a finite, negative value)
    assert card["validation_metric"] == "neg_heldout_loss"
    assert -100 < card["valid_ndcg"] < 0 and card["details"]["history"]


def test_a_kind_that_trains_in_one_process_refuses_a_launch(
    small_lists: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused from the launch's variables, before any process group: checked here with
    torchrun's variables set rather than with a launch."""
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    args = ["--data", str(small_lists), "--registry", str(tmp_path), "--no-progress"]
    assert main(["train", "--model", "ctr", *args]) == 2
    assert "ctr does not train across processes" in capsys.readouterr().err


def test_lightgbm_across_two_workers_matches_one_machine(small_lists: Path, tmp_path: Path) -> None:
    """LightGBM's own data-parallel network between two torchrun ranks: the workers must end
    with the same trees (checked in the run, which fails otherwise), rank 0 publishes them,
    --bias auto becomes ipw with a warning, and validation lands near one machine's."""
    reg = tmp_path / "registry"
    args = ["--data", str(small_lists), "--registry", str(reg), "--threads", "1", "--no-progress"]
    args += ["--set", "max_rounds=25"]  # enough to compare; every round is a network exchange
    run = _torchrun(["-m", "ops.cli", "train", "--model", "lgbm", "--name", "two", *args], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--bias auto means ipw" in run.stderr
    # LightGBM's own network on both workers (not gloo); the workers hold different lists,
    # so the equal trees checked in the run come from summed histograms
    assert (run.stdout + run.stderr).count("[LightGBM] [Info] Listening") == 2
    two = json.loads((reg / "two" / "v1" / "manifest.json").read_text())
    assert two["bias_correction"] == "ipw" and two["training"]["processes"] == 2
    assert "machines" not in two["details"]["params"]  # re-rankers refit with these on one host
    one = TrainRequest("lgbm", small_lists, reg, name="one", bias="ipw", threads=1, progress=False)
    run_training(replace(one, overrides={"max_rounds": 25}))  # here: one interpreter start less
    single = json.loads((reg / "one" / "v1" / "manifest.json").read_text())
    assert abs(two["valid_ndcg"] - single["valid_ndcg"]) < 0.03
    # Streamed: each worker reads only its own lists' rows from the row groups
    cmd = ["-m", "ops.cli", "train", "--model", "lgbm", "--name", "streamed", *args]
    run = _torchrun([*cmd, "--set", "stream=true"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    streamed = json.loads((reg / "streamed" / "v1" / "manifest.json").read_text())
    assert streamed["training"]["stream"] is True and streamed["training"]["processes"] == 2
    assert abs(streamed["valid_ndcg"] - single["valid_ndcg"]) < 0.03


def test_a_reranker_under_torchrun_splits_the_out_of_fold_folds_between_the_ranks(
    small_lists: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each rank fits its share of the baseline's out-of-fold models and the ranks sum their
    shares: the re-ranker's inputs (their normalisation statistics, fitted on the out-of-fold
    scores) equal a single process's to the bit, and rank 0 fitted only its own folds."""
    reg = tmp_path / "registry"
    args = ["--data", str(small_lists), "--registry", str(reg), "--threads", "1", "--no-progress"]
    base = TrainRequest(
        "lgbm", small_lists, reg, threads=1, progress=False, overrides={"max_rounds": 10}
    )
    run_training(base)  # in this process: one interpreter start less
    sets = ["epochs=1", "d_model=16", "n_heads=2", "n_layers=1", "d_ff=32", "blend=0"]
    rerank = ["-m", "ops.cli", "train", "--model", "transformer", "--reranker", "lgbm", *args]
    rerank += [f for s in sets for f in ("--set", s)]
    run = _torchrun([*rerank, "--name", "two"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    with caplog.at_level(logging.INFO, logger="ranker.train.reranker"):
        assert main([*rerank[2:], "--name", "one"]) == 0  # here: one interpreter start less
    assert caplog.text.count("out-of-fold baseline scores: fold") == 5
    # rank 0 (the one that logs) fitted folds 1, 3 and 5 only; rank 1 the other two
    assert run.stderr.count("out-of-fold baseline scores: fold") == 3
    assert "fold 2/5" not in run.stderr and "fold 5/5" in run.stderr
    specs = [
        json.loads((reg / name / "v1" / "manifest.json").read_text())["details"]["feature_spec"]
        for name in ("one", "two")
    ]
    assert specs[0]["num_mean"] == specs[1]["num_mean"]
    assert specs[0]["num_std"] == specs[1]["num_std"]
