"""The seed ensemble: its standardisation against numpy, its training against members trained
one by one, its checkpoint, export and the settings it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ranker.data import mask_of, to_padded
from ranker.ensemble import SeedEnsemble, member_seed, standardise_within_list
from ranker.export.run import export_model
from ranker.model import Ranker, RankerConfig, init_weights
from ranker.scoring import load
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.prepare import load_splits
from ranker.train.run import TrainRequest, run_training

FAST = {"epochs": 1, "d_model": 32, "n_layers": 1, "d_ff": 64, "batch_lists": 128}


def numpy_z(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An independent reference: per row, (s - mean) / std over the real entries (std 0 -> 1)."""
    out = np.zeros_like(scores, dtype=np.float64)
    for i in range(len(scores)):
        s = scores[i, mask[i]].astype(np.float64)
        if len(s):
            sd = s.std()
            out[i, mask[i]] = (s - s.mean()) / (sd if sd > 0 else 1.0)
    return out


def test_standardise_within_list_matches_numpy_with_padding_and_constant_lists() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(3, 5, (5, 6)).astype(np.float32)
    mask = np.ones((5, 6), bool)
    mask[1, 4:] = False  # padding
    mask[2, 1:] = False  # one candidate
    scores[3] = 7.0  # a constant list
    mask[4] = False  # no candidate at all
    scores[1, 4:] = 1e6  # padding's values must not leak into the statistics
    got = standardise_within_list(torch.from_numpy(scores), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, numpy_z(scores, mask), atol=1e-5)
    assert np.all(got[~mask] == 0) and np.all(got[2:5] == 0)


def small_rankers(small_lists: Path, n: int) -> list[Ranker]:
    spec = spec_from_manifest(load_splits(small_lists)[0].manifest)
    members = []
    for seed in range(n):
        m = Ranker(spec, RankerConfig(d_model=16, n_layers=1, d_ff=32))
        init_weights(m, seed)
        with torch.no_grad():  # a head that is not all zeros, so the members differ
            for p in m.head.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        members.append(m.eval())
    return members


def test_the_ensemble_averages_its_members_standardised_scores(small_lists: Path) -> None:
    members = small_rankers(small_lists, 3)
    spec = members[0].spec
    rng = np.random.default_rng(1)
    b, n, h = 3, 9, 4
    xs = (
        torch.from_numpy(rng.normal(0, 2, (b, n, len(spec.num_transforms))).astype(np.float32)),
        torch.from_numpy(rng.integers(0, 3, (b, n, len(spec.cat_sizes)))),
        torch.from_numpy(np.arange(n)[None, :] < np.array([[9], [5], [1]])),
        torch.from_numpy(rng.uniform(0, 9, (b, h, len(spec.hist_num_transforms))).astype("f4")),
        torch.from_numpy(rng.integers(0, 3, (b, h, len(spec.hist_cat_sizes)))),
        torch.ones(b, h, dtype=torch.bool),
    )
    with torch.no_grad():
        got = SeedEnsemble(members)(*xs).numpy()
        each = [m(*xs).numpy() for m in members]
    mask = xs[2].numpy()
    want = np.mean([numpy_z(s, mask) for s in each], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(each[0] - each[1])[mask].max() > 1e-3  # the members did differ
    with pytest.raises(ValueError, match="at least two"):
        SeedEnsemble(members[:1])
    other = Ranker(spec, RankerConfig(d_model=32, n_layers=1, d_ff=32))
    with pytest.raises(ValueError, match="share"):
        SeedEnsemble([members[0], other])


def test_an_ensemble_trains_publishes_and_exports_as_its_members_trained_one_by_one(
    small_lists: Path, tmp_path: Path
) -> None:
    reg = tmp_path / "reg"

    def train(name: str, seed: int, **extra: object) -> Path:
        return run_training(
            TrainRequest(
                "transformer",
                small_lists,
                reg,
                name=name,
                bias="none",
                seed=seed,
                progress=False,
                overrides={**FAST, **extra},
            )
        ).path

    ens = load(train("ens", 4, ensemble=2))
    assert isinstance(ens.scorer.model, SeedEnsemble)
    lines = ens.card.details["ensemble"]
    assert [x["seed"] for x in lines] == [4, member_seed(4, 1)]
    assert member_seed(4, 1) not in (4, 5, 6)  # apart from the seeds of --seeds N
    # The same two models trained one by one, combined by the numpy reference: the same scores.
    singles = [load(train(f"one{k}", member_seed(4, k))) for k in range(2)]
    splits, test = load_splits(small_lists, with_test=True)
    assert test is not None
    m, offsets = splits.manifest, test.offsets
    mask = mask_of(offsets)
    want = np.mean([numpy_z(to_padded(s.score(test, m), offsets), mask) for s in singles], axis=0)
    got = to_padded(ens.score(test, m), offsets)
    np.testing.assert_allclose(np.where(mask, got, 0), want, atol=1e-4)
    exported = export_model(str(reg / "ens"))  # refused if ONNX and torch disagree
    assert (exported.path / "model.onnx").exists()
    with pytest.raises(ValueError, match="cannot be resumed"):
        run_training(
            TrainRequest(
                "transformer",
                small_lists,
                reg,
                resume=str(reg / "ens"),
                progress=False,
                overrides=FAST,
            )
        )


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_a_bad_ensemble_size_is_refused_by_name(
    small_lists: Path, tmp_path: Path, bad: object
) -> None:
    with pytest.raises(ValueError, match="ensemble must be"):
        run_training(
            TrainRequest(
                "transformer",
                small_lists,
                tmp_path,
                progress=False,
                overrides={**FAST, "ensemble": bad},
            )
        )
