"""The Transformer's train split streamed from Parquet row groups (``--set stream=true``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from ranker.data import RankData
from ranker.model import Ranker, RankerConfig, init_weights
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.lgbm_stream import light_split
from ranker.train.prepare import rank_data
from ranker.train.run import TrainRequest, run_training
from ranker.train.scoring import evaluate_ndcg
from ranker.train.stream_data import StreamedSplit


def _streamed(small_lists: Path, window: int) -> tuple[StreamedSplit, RankData]:
    m = Manifest.load(small_lists)
    full = read_split(small_lists, "train", m)
    weights = np.linspace(0.5, 2.0, full.n_items).astype(np.float32)  # tells rows apart
    light = RankData(light_split(small_lists / "train.parquet", m), weights=weights)
    return StreamedSplit(small_lists / "train.parquet", m, light, window), RankData(
        full, weights=weights
    )


def test_windows_are_whole_row_groups_within_the_bound(small_lists: Path) -> None:
    s, _ = _streamed(small_lists, 700)
    sizes = np.diff(s.group_lists)
    assert len(sizes) > 3 and sizes.max() < 700  # windows below hold one or more groups
    for shuffle in (False, True):
        wins = list(s.windows(shuffle, np.random.default_rng(1)))
        assert sorted(g for w in wins for g in w) == list(range(len(sizes)))
        assert all(sizes[w].sum() <= 700 for w in wins) and len(wins) > 1
    one = StreamedSplit(small_lists / "train.parquet", s.manifest, s.light, 1)
    assert [len(w) for w in one.windows(False, None)] == [1] * len(sizes)  # a group at least
    with pytest.raises(ValueError, match="stream_window_lists"):
        StreamedSplit(small_lists / "train.parquet", s.manifest, s.light, 0)


def test_an_epoch_streams_every_list_once_with_its_own_features_and_weights(
    small_lists: Path,
) -> None:
    s, mem = _streamed(small_lists, 500)
    by_id = {rid: b for b, rid in enumerate(mem.lists.request_id)}
    seen: list[str] = []
    for groups in s.windows(True, np.random.default_rng(0)):
        part = s.read(groups)
        for b, rid in enumerate(part.lists.request_id):
            j = by_id[rid]
            lo, hi = part.offsets[b], part.offsets[b + 1]
            mlo, mhi = mem.offsets[j], mem.offsets[j + 1]
            assert np.array_equal(part.num[lo:hi], mem.num[mlo:mhi])
            assert np.array_equal(part.weights[lo:hi], mem.weights[mlo:mhi])
            assert np.array_equal(part.labels[lo:hi], mem.labels[mlo:mhi])
            hl, hh = part.hist_offsets[b], part.hist_offsets[b + 1]
            ml, mh = mem.hist_offsets[j], mem.hist_offsets[j + 1]
            assert np.array_equal(part.hist_num[hl:hh], mem.hist_num[ml:mh])
        seen.extend(part.lists.request_id)
    assert sorted(seen) == sorted(mem.lists.request_id)
    batches = list(s.batches(64, shuffle=True, rng=np.random.default_rng(0)))
    assert sum(len(b.lists) for b in batches) == len(mem)
    assert max(len(b.lists) for b in batches) <= 64


def test_two_ranks_take_halves_of_the_same_streamed_batches(small_lists: Path) -> None:
    s, _ = _streamed(small_lists, 500)

    def lists(shard: tuple[int, int]) -> list[list[int]]:
        """Each batch's lists, as indices into its window (every rank reads the same ones)."""
        rng = np.random.default_rng(7)  # every rank seeds alike: same windows, same batches
        return [b.lists.tolist() for b in s.batches(64, True, rng, shard)]

    whole, r0, r1 = lists((0, 1)), lists((0, 2)), lists((1, 2))
    assert len(whole) == len(r0) == len(r1) > 1
    for w, a, b in zip(whole, r0, r1, strict=True):
        assert a + b == w and abs(len(a) - len(b)) <= 1


def test_a_streamed_validation_split_scores_as_the_loaded_one(small_lists: Path) -> None:
    """Window by window, with the validation rule's labels and mask carried along: the same
    mean NDCG@10 as the split in memory."""
    m = Manifest.load(small_lists)
    full = read_split(small_lists, "valid", m)
    rng = np.random.default_rng(3)
    labels = (full.labels * rng.uniform(0.5, 2.0, full.n_items)).astype(np.float32)
    mask = rng.uniform(size=full.n_items) < 0.7
    mem = rank_data(full, m, labels=labels, eval_mask=mask)
    light = rank_data(
        light_split(small_lists / "valid.parquet", m), m, labels=labels, eval_mask=mask
    )
    streamed = StreamedSplit(small_lists / "valid.parquet", m, light, 300)
    assert len(list(streamed.windows(False, None))) > 1
    model = Ranker(spec_from_manifest(m), RankerConfig(d_model=32, n_layers=1, d_ff=64))
    init_weights(model, 0)
    cpu = torch.device("cpu")
    want = evaluate_ndcg(model, mem, 10, cpu)
    assert evaluate_ndcg(model, streamed, 10, cpu) == pytest.approx(want, abs=1e-6)
    unmasked = rank_data(full, m, labels=labels)
    assert abs(evaluate_ndcg(model, unmasked, 10, cpu) - want) > 1e-4  # the mask matters


def test_streamed_training_is_seeded_and_refuses_the_reranker(
    small_lists: Path, tmp_path: Path
) -> None:
    o = {"stream": True, "stream_window_lists": 500, "epochs": 1, "eval_every_lists": 10**6}
    o |= {"d_model": 32, "n_layers": 1, "d_ff": 64}  # what is checked does not need more
    cards = []
    for name in ("a", "b"):
        ref = run_training(
            TrainRequest(
                "transformer", small_lists, tmp_path, name=name, progress=False, overrides=o
            )
        )
        cards.append(json.loads((ref.path / "manifest.json").read_text()))
    assert cards[0]["training"]["stream"] is True
    # (the held-out loss, the Transformer's own rule: read from the streamed validation split)
    assert cards[0]["valid_ndcg"] == cards[1]["valid_ndcg"] and -100 < cards[0]["valid_ndcg"] < 0
    with pytest.raises(ValueError, match="standalone Transformer"):
        run_training(
            TrainRequest(
                "transformer", small_lists, tmp_path, progress=False, overrides=o, reranker="a"
            )
        )
