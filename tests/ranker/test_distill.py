"""Ensemble distillation (``--set distill=N``): its loss against a loop reference, the teacher's
pull on the student, the teachers and student seeds the published card names, and the settings
it refuses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ranker.data import mask_of, to_padded
from ranker.ensemble import member_seed
from ranker.kinds.transformer import starting_prior
from ranker.losses import distill_loss
from ranker.model import Ranker, RankerConfig
from ranker.scoring import load
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.config import TrainConfig
from ranker.train.prepare import load_splits, rank_data
from ranker.train.run import TrainRequest, run_training
from ranker.train.scoring import predict
from ranker.train.transformer import train_transformer

FAST = {"epochs": 1, "d_model": 32, "n_layers": 1, "d_ff": 64, "batch_lists": 128}


def within_list_correlation(a: np.ndarray, b: np.ndarray, offsets: np.ndarray) -> float:
    """Mean over lists of Pearson's r between two flat score arrays (lists of 3+ candidates)."""
    mask = mask_of(offsets)
    x, y = to_padded(a, offsets), to_padded(b, offsets)
    rs = []
    for i in range(len(x)):
        xi, yi = x[i, mask[i]], y[i, mask[i]]
        if len(xi) >= 3 and xi.std() > 0 and yi.std() > 0:
            rs.append(np.corrcoef(xi, yi)[0, 1])
    return float(np.mean(rs))


@pytest.mark.parametrize("device_data", ["on", "off"])  # batches gathered resident or on the host
def test_a_teacher_pulls_the_students_served_scores(small_lists: Path, device_data: str) -> None:
    """With all the weight on the teacher, the student's served scores follow a teacher that
    is not what the clicks say (minus a feature), list by list and candidate by candidate;
    without it, the same seed does not."""
    splits, _ = load_splits(small_lists)
    train = rank_data(splits.train, splits.manifest)
    valid = rank_data(splits.valid, splits.manifest)
    # minus a feature as the model normalises it (log1p, standardised): a teacher with spread
    # in every list (the raw price would make its softmax all on the cheapest candidate)
    logged = np.log1p(train.num[:, 0].astype(np.float64))
    teacher = -(logged - logged.mean()) / logged.std()
    spec = spec_from_manifest(splits.manifest)
    mc = RankerConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, bias_tower=True)
    # raw weights (ema=0), read at the last validation by a callback: the weights kept are
    # the best on validation's clicks, which disagree with this teacher
    cfg = TrainConfig(
        epochs=2, threads=1, distill_weight=1.0, patience=10, ema=0.0, device_data=device_data
    )
    scores = {}
    # The untaught contrast once (host batches): the device path changes how the teacher's
    # scores are gathered, not what a run without one does.
    for taught in (True, False) if device_data == "off" else (True,):

        def last(_: object, model: Ranker, taught: bool = taught) -> None:
            scores[taught] = predict(model, train)

        train_transformer(
            train,
            valid,
            spec,
            mc,
            cfg,
            progress=False,
            teacher=teacher if taught else None,
            callbacks=[last],
        )
    with_teacher = within_list_correlation(scores[True], teacher, train.offsets)
    assert with_teacher > 0.8, with_teacher
    if False in scores:
        without = within_list_correlation(scores[False], teacher, train.offsets)
        assert without < 0.5, without


def test_the_distilled_model_is_one_model_taught_by_its_teachers_mean(
    small_lists: Path, tmp_path: Path
) -> None:
    """distill=2 publishes one Ranker, names its two teachers (the members ensemble=2 would
    have) and is the student trained from its own seed on their mean score: the same weights
    as the teachers trained one by one and the student trained on their mean here."""
    reg = tmp_path / "reg"

    def train(name: str, seed: int, **extra: object) -> Path:
        return run_training(
            TrainRequest(
                "transformer",
                small_lists,
                reg,
                name=name,
                seed=seed,
                threads=1,
                progress=False,
                overrides={**FAST, **extra},
            )
        ).path

    published = load(train("dist", 4, distill=2))
    assert isinstance(published.scorer.model, Ranker)
    lines = published.card.details["distilled_from"]
    assert [x["seed"] for x in lines] == [4, member_seed(4, 1)]
    assert published.card.details["ensemble"] is None
    assert published.card.details["ema_decay"] == 0.99  # a small train split: the floor
    assert published.card.training["ema_epochs"] == 1.0  # the standalone's default
    teachers = [load(train(f"t{k}", member_seed(4, k))).scorer.model for k in range(2)]
    splits, _ = load_splits(small_lists, threads=1)
    data = rank_data(splits.train, splits.manifest)
    mean = np.mean([predict(t, data) for t in teachers], axis=0)
    student_model = published.scorer.model
    cfg = TrainConfig(**{**published.card.training, "seed": member_seed(4, 2)})
    again = train_transformer(
        data,
        rank_data(splits.valid, splits.manifest),
        student_model.spec,
        student_model.cfg,
        cfg,
        progress=False,
        teacher=mean,
        position_prior=starting_prior(splits.propensities, student_model.cfg, cfg),
        select_by_loss=published.card.validation_metric == "neg_heldout_loss",
    )
    for k, v in again.model.state_dict().items():
        torch.testing.assert_close(v, student_model.state_dict()[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"distill": -1}, "distill must be a whole number"),
        ({"distill": 1.5}, "distill must be a whole number"),
        ({"distill": 2, "ensemble": 2}, "distill and ensemble exclude each other"),
        ({"distill": 2, "stream": True}, "distill needs the train split in memory"),
        ({"distill": 2, "distill_weight": 1.5}, "distill_weight must be a finite number in"),
        ({"distill": 2, "distill_weight": "abc"}, "distill_weight must be a finite number"),
        ({"distill": 2, "distill_temperature": 0.0}, "distill_temperature must be a finite"),
        ({"ema_epochs": float("inf")}, "ema_epochs must be a finite number >= 0"),
    ],
)
def test_distillation_settings_are_refused_by_name(
    small_lists: Path, tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_training(
            TrainRequest(
                "transformer",
                small_lists,
                tmp_path,
                progress=False,
                overrides={**FAST, **settings},
            )
        )


# --------------------------------------------------------------------------------------------
# distillation: a student's scores against a teacher's, list by list


def ref_distill(s: list[float], t: list[float], temperature: float) -> float:
    """KL(softmax(t / T) || softmax(s / T)) * T**2 in Python floats, one list."""

    def probs(x: list[float]) -> list[float]:
        top = max(v / temperature for v in x)
        e = [math.exp(v / temperature - top) for v in x]
        return [v / sum(e) for v in e]

    p, q = probs(t), probs(s)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)) * temperature**2


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_distill_matches_a_loop_reference(temperature: float) -> None:
    g = torch.Generator().manual_seed(11)
    m = torch.rand(6, 9, generator=g).argsort(dim=1) < torch.randint(1, 10, (6, 1), generator=g)
    s = (torch.randn(6, 9, generator=g, dtype=torch.float64) * 2.0).masked_fill(~m, float("nan"))
    t = torch.randn(6, 9, generator=g, dtype=torch.float64) * 3.0
    t = t.masked_fill(~m, float("inf"))  # padding is garbage on both sides
    lists = [(s[i, m[i]].tolist(), t[i, m[i]].tolist()) for i in range(6)]
    expected = sum(ref_distill(a, b, temperature) for a, b in lists) / len(lists)
    got = distill_loss(s, t, mask=m, temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_distill_edge_cases() -> None:
    s = torch.tensor([[0.3, -1.0, 2.0], [4.0, float("nan"), float("nan")]], requires_grad=True)
    m = torch.tensor([[True, True, True], [True, False, False]])
    # a student equal to its teacher up to a shift per list loses nothing; a one-candidate list
    # adds nothing, and no gradient reaches padding or the teacher
    t = torch.tensor([[1.3, 0.0, 3.0], [-7.0, 1.0, 1.0]], requires_grad=True)
    loss = distill_loss(s, t, mask=m)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and (s.grad[1, 1:] == 0).all()
    assert t.grad is None
    # the teacher's order pulls the student's: a reversed student loses more than a flat one
    teacher = torch.tensor([[3.0, 2.0, 1.0]])
    one = torch.ones(1, 3, dtype=torch.bool)
    flat = distill_loss(torch.zeros(1, 3), teacher, mask=one)
    reversed_ = distill_loss(torch.tensor([[1.0, 2.0, 3.0]]), teacher, mask=one)
    assert 0 < flat.item() < reversed_.item()
    # nothing real: a connected zero
    none = torch.zeros(2, 3, requires_grad=True)
    z = distill_loss(none, torch.zeros(2, 3), mask=torch.zeros(2, 3, dtype=torch.bool))
    z.backward()
    assert z.item() == 0.0 and none.grad is not None and (none.grad == 0).all()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distill_loss(none, none, mask=one.expand(2, 3), temperature=0.0)
