"""The Transformer ranker: list-context equivariance, padding, history, the position tower."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from ranker.layers import pair_matrix
from ranker.model import FeatureSpec, Ranker, RankerConfig, init_weights
from ranker.train.checkpoint import split_config


def _model(**kw: object) -> Ranker:
    """A small model; ``kw`` overrides feature-spec and architecture fields alike."""
    base: dict[str, object] = dict(
        num_transforms=["none", "log1p", "slog1p"],
        num_mean=[0.0, 1.0, 0.0],
        num_std=[1.0, 2.0, 1.0],
        cat_sizes=[11, 5],
        hist_num_transforms=["log1p"],
        hist_num_mean=[1.0],
        hist_num_std=[1.0],
        hist_cat_sizes=[11, 7],
        hist_cat_shared=[0, -1],
        pair_columns=[1],
        d_model=32,
        n_heads=4,
        n_layers=2,
        d_ff=64,
        dropout=0.0,
    )
    base.update(kw)
    spec_names = {f.name for f in fields(FeatureSpec)}
    spec = FeatureSpec(**{k: v for k, v in base.items() if k in spec_names})  # type: ignore[arg-type]
    return Ranker(spec, RankerConfig(**{k: v for k, v in base.items() if k not in spec_names}))  # type: ignore[arg-type]


def _inputs(b: int, n: int, h: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "num": torch.randn(b, n, 3, generator=g) * 3,
        "cat": torch.randint(0, 5, (b, n, 2), generator=g),
        "mask": torch.ones(b, n, dtype=torch.bool),
        "hist_num": torch.rand(b, h, 1, generator=g) * 100,
        "hist_cat": torch.randint(0, 5, (b, h, 2), generator=g),
        "hist_mask": torch.ones(b, h, dtype=torch.bool),
    }


@pytest.fixture
def model() -> Ranker:
    torch.manual_seed(0)
    m = _model()
    init_weights(m, seed=0)
    with torch.no_grad():  # as if trained: pair biases and null slots that act
        for block in m.blocks:
            assert block.pair_bias is not None and block.null is not None
            block.pair_bias.normal_(0, 2.0)
            block.null.normal_()
    return m.eval()


def test_permuting_candidates_permutes_scores(model: Ranker) -> None:
    x = _inputs(3, 9, 4)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    y = dict(x, num=x["num"][:, perm], cat=x["cat"][:, perm], mask=x["mask"][:, perm])
    with torch.no_grad():
        torch.testing.assert_close(model(**x)[:, perm], model(**y), rtol=0, atol=1e-5)


def test_list_context_matters_but_padding_does_not(model: Ranker) -> None:
    x = _inputs(2, 6, 3)
    with torch.no_grad():
        base = model(**x)
        # Garbage in padded slots (masked) changes nothing for the real candidates.
        padded = {k: v.clone() for k, v in x.items()}
        padded["num"] = torch.cat([x["num"], torch.full((2, 4, 3), 1e6)], dim=1)
        padded["cat"] = torch.cat([x["cat"], torch.full((2, 4, 2), 3)], dim=1)
        padded["mask"] = torch.cat([x["mask"], torch.zeros(2, 4, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(model(**padded)[:, :6], base, rtol=0, atol=1e-5)
        # But changing another real candidate does change a candidate's score (list context).
        other = dict(x, num=x["num"].clone())
        other["num"][:, 5] += 10
        assert not torch.allclose(model(**other)[:, 0], base[:, 0])


def test_empty_and_short_histories_are_handled(model: Ranker) -> None:
    x = _inputs(2, 5, 3)
    x["hist_mask"][0] = False  # no history at all
    x["hist_mask"][1, 1:] = False  # one event
    with torch.no_grad():
        s = model(**x)
        assert torch.isfinite(s).all()
        # A masked history event's content is ignored.
        y = dict(x, hist_num=x["hist_num"].clone())
        y["hist_num"][0] = 1e5
        y["hist_num"][1, 2] = -7.0
        torch.testing.assert_close(model(**y), s, rtol=0, atol=1e-5)
        # The user's history does reach the scores.
        z = dict(x, hist_cat=x["hist_cat"].clone())
        z["hist_cat"][1, 0, 0] = 9
        assert not torch.allclose(model(**z)[1], s[1])


def test_position_tower_acts_only_when_positions_are_given() -> None:
    m = _model(bias_tower=True)
    init_weights(m, 0)
    torch.nn.init.normal_(m.position_bias.weight)  # type: ignore[union-attr]
    m.eval()
    x = _inputs(2, 5, 2)
    pos = torch.arange(1, 6).repeat(2, 1)
    with torch.no_grad():
        plain = m(**x)
        assert not torch.allclose(m(**x, positions=pos), plain)
        torch.testing.assert_close(m(**x, positions=None), plain)


def test_position_tower_starts_at_the_log_propensities() -> None:
    from ranker.kinds.transformer import prior_of
    from ranker.propensity import Propensities

    props = Propensities(values=np.array([1.0, 0.5, 0.25]), clicks_used=10, eta=1.0)
    prior = prior_of(props, max_position=6)
    assert prior is not None and prior_of(None, 6) is None
    # position 0 (padding) reads as position 1; beyond the table, its last value
    np.testing.assert_allclose(prior, np.log([1, 1, 0.5, 0.25, 0.25, 0.25, 0.25]))
    m = _model(bias_tower=True, max_position=6)
    init_weights(m, 0)
    m.start_position_bias(prior)
    m.eval()
    x = _inputs(1, 5, 2)
    with torch.no_grad():
        plain = m(**x)
        shifted = m(**x, positions=torch.tensor([[1, 2, 3, 9, 0]]))
    # the tower adds log p(position) to each candidate's score (9: clamped to max_position)
    expected = torch.log(torch.tensor([1.0, 0.5, 0.25, 0.25, 1.0]))
    torch.testing.assert_close(shifted - plain, expected.unsqueeze(0))


def test_numeric_normalisation_is_inside_the_model(model: Ranker) -> None:
    norm = model.candidates.norm
    x = torch.tensor([[2.0, np.e - 1, -(np.e - 1)]])
    torch.testing.assert_close(norm(x), torch.tensor([[2.0, (1.0 - 1.0) / 2.0, -1.0]]))


def test_residual_reranker_starts_as_its_baseline_and_can_move_away() -> None:
    m = _model(residual_input=0)
    init_weights(m, 0)
    m.eval()
    x = _inputs(2, 6, 3)
    with torch.no_grad():
        # Untrained: exactly the raw baseline score (input 0, before normalisation).
        torch.testing.assert_close(m(**x), x["num"][..., 0], rtol=0, atol=1e-6)
    m.train()
    loss = (m(**x) * torch.randn(2, 6, generator=torch.Generator().manual_seed(2))).sum()
    loss.backward()
    # The zero last layer still gets a gradient, so training can learn a correction.
    assert m.head.fc2.weight.grad is not None and m.head.fc2.weight.grad.abs().sum() > 0
    assert m.residual_scale is not None and m.residual_scale.grad is not None


def test_category_dropout_blanks_categories_in_training_only() -> None:
    m = _model(cat_dropout=1.0, input_noise=0.0)
    init_weights(m, 0)
    x = _inputs(2, 5, 3)
    blank = dict(x, cat=torch.zeros_like(x["cat"]), hist_cat=torch.zeros_like(x["hist_cat"]))
    with torch.no_grad():
        m.train()  # every categorical value (item ids included) becomes "unknown"
        torch.testing.assert_close(m(**x), m(**blank))
        m.eval()  # scoring sees the real values
        assert not torch.allclose(m(**x), m(**blank))


def test_pair_matrix_against_a_loop() -> None:
    cat = torch.tensor([[[1, 2], [1, 0], [3, 2], [1, 2], [1, 2]]])  # (1, 5, 2)
    mask = torch.tensor([[True, True, True, True, False]])  # the last is padding
    got = pair_matrix(cat, mask, [0, 1])
    want = torch.zeros(1, 2, 5, 5, dtype=torch.bool)
    for p in range(2):
        for i in range(5):
            for j in range(5):
                a, b = int(cat[0, i, p]), int(cat[0, j, p])
                want[0, p, i, j] = i != j and bool(mask[0, i] and mask[0, j]) and a == b > 0
    assert torch.equal(got, want)
    assert got[0, 1, 1].sum() == 0  # code 0 (unknown, none) pairs with nothing


def test_the_self_only_ablation_keeps_depth_and_drops_list_context(model: Ranker) -> None:
    ablated = _model(list_attention=False)
    init_weights(ablated, 0)
    ablated.eval()
    assert len(ablated.blocks) == len(model.blocks)
    n_pair = sum(p.numel() for n, p in model.named_parameters() if "pair" in n)
    assert ablated.n_parameters() == model.n_parameters() - n_pair
    x = _inputs(2, 6, 3)
    other = dict(x, num=x["num"].clone(), cat=x["cat"].clone())
    other["num"][:, 5] += 10
    other["cat"][:, 5] = 4
    with torch.no_grad():  # another candidate's change reaches no one else
        torch.testing.assert_close(ablated(**other)[:, :5], ablated(**x)[:, :5], rtol=0, atol=1e-6)


def test_set_context_lets_self_only_blocks_read_the_list_as_a_whole() -> None:
    """set_context adds the list's mean token: another candidate's change now reaches every
    candidate, but which slot holds which other candidate does not matter, and padding adds
    nothing to the mean. Off by default: the same parameters as before."""
    assert _model().n_parameters() == _model(set_context=False).n_parameters()
    m = _model(list_attention=False, set_context=True)
    init_weights(m, 0)
    m.eval()
    x = _inputs(2, 6, 3)
    other = dict(x, num=x["num"].clone())
    other["num"][:, 5] += 10
    perm = torch.tensor([0, 3, 1, 5, 2, 4])  # candidate 0 stays, the others swap slots
    moved = dict(x, num=x["num"][:, perm], cat=x["cat"][:, perm])
    padded = dict(
        x,
        num=torch.cat([x["num"], torch.full((2, 3, 3), 1e6)], dim=1),
        cat=torch.cat([x["cat"], torch.full((2, 3, 2), 3)], dim=1),
        mask=torch.cat([x["mask"], torch.zeros(2, 3, dtype=torch.bool)], dim=1),
    )
    with torch.no_grad():
        base = m(**x)
        assert (m(**other)[:, :5] - base[:, :5]).abs().min() > 1e-4
        torch.testing.assert_close(m(**moved)[:, 0], base[:, 0], rtol=0, atol=1e-5)
        torch.testing.assert_close(m(**padded)[:, :6], base, rtol=0, atol=1e-5)


def test_a_checkpoint_config_from_before_the_split_keeps_its_architecture() -> None:
    spec, cfg = split_config(
        {
            "num_transforms": ["none"],
            "num_mean": [0.0],
            "num_std": [1.0],
            "cat_sizes": [3],
            "d_model": 16,
            "use_list_attention": False,
        }
    )
    assert spec.pair_columns == [] and cfg.d_model == 16
    assert cfg.n_layers == 0 and not cfg.null_slot  # no blocks, as it was built


def test_periodic_numeric_embeddings_are_off_by_default_and_shape_the_input() -> None:
    """numeric_embedding=k adds per feature k learned frequencies (sin, cos) and a small
    layer; 0 (default) builds the model as before, parameter for parameter."""
    plain, periodic = _model(), _model(numeric_embedding=4)
    assert plain.candidates.periodic is None
    names = {n for n, _ in periodic.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert names == {
        "candidates.periodic.freq",
        "candidates.periodic.weight",
        "candidates.periodic.bias",
    }
    init_weights(periodic, seed=0)
    assert not periodic.candidates.periodic.bias.any()  # type: ignore[union-attr]
    x = _inputs(2, 9, 4)
    scores = periodic.eval()(*x.values())
    assert scores.shape == (2, 9) and torch.isfinite(scores).all()
    # the embedding reads the numerics: changing one feature moves the scores
    x["num"][..., 1] += 1.0
    assert not torch.allclose(periodic(*x.values()), scores)
