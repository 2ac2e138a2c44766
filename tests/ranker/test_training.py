"""Training both models on a small simulated dataset: determinism, resume, registry, bias."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.world.config import WorldConfig
from pipelines.world.simulate import simulate
from pipelines.world.world import World
from ranker.model import RankerConfig
from ranker.propensity import Propensities, estimate_propensities
from ranker.registry import ModelRef, resolve, versions
from ranker.scoring import load
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.config import TrainConfig
from ranker.train.prepare import load_splits, rank_data
from ranker.train.run import TrainRequest, run_training
from ranker.train.scoring import predict
from ranker.train.transformer import train_transformer

FAST = {"epochs": 2, "d_model": 32, "n_layers": 1, "d_ff": 64, "batch_lists": 128}


@pytest.fixture
def three_torch_threads() -> Iterator[int]:
    """torch at 3 intra-op threads (no training here asks for 3), put back after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def test_transformer_training_is_reproducible_and_resumable(
    small_lists: Path, tmp_path: Path, three_torch_threads: int
) -> None:
    sp, _ = load_splits(small_lists)
    m = sp.manifest
    # A third of the lists: nine epochs in all, and what is checked does not need more data
    part = sp.train.select(np.arange(len(sp.train) // 3))
    train, valid = rank_data(part, m), rank_data(sp.valid, m)
    spec, mc = spec_from_manifest(m), RankerConfig(d_model=32, n_layers=1, d_ff=64)
    cfg = TrainConfig(epochs=3, batch_lists=128, threads=1, seed=3, patience=10)
    a = train_transformer(train, valid, spec, mc, cfg, progress=False)
    b = train_transformer(train, valid, spec, mc, cfg, progress=False)
    sa, sb = predict(a.model, valid), predict(b.model, valid)
    assert np.abs(sa - sb).max() <= 1e-6
    # trained on one thread; the process's own count is back afterwards
    assert torch.get_num_threads() == three_torch_threads
    # Interrupted after the second epoch, then resumed from the checkpoint file: the same
    # model as three epochs in one go.
    ckpt = tmp_path / "last.pt"

    def crash(log: object, _: object) -> None:
        if getattr(log, "epoch", 0) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_transformer(
            train, valid, spec, mc, cfg, progress=False, callbacks=[crash], checkpoint_path=ckpt
        )
    assert torch.get_num_threads() == three_torch_threads  # back after a raise too
    state = torch.load(ckpt, weights_only=False)
    resumed = train_transformer(train, valid, spec, mc, cfg, resume=state, progress=False)
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert np.abs(predict(resumed.model, valid) - sa).max() <= 1e-6
    assert a.best_valid_ndcg > 0.3  # it learned something


def test_a_callback_returning_true_stops_training_there(small_lists: Path) -> None:
    """As lightgbm's callbacks can: the stop comes at that validation, inside an epoch too,
    every callback still sees it, and the best weights so far are kept."""
    sp, _ = load_splits(small_lists)
    m = sp.manifest
    train, valid = rank_data(sp.train, m), rank_data(sp.valid, m)
    spec, mc = spec_from_manifest(m), RankerConfig(d_model=32, n_layers=1, d_ff=64)
    cfg = TrainConfig(epochs=3, batch_lists=64, threads=1, eval_every_lists=256, patience=10)
    seen: list[float] = []
    stop_late = lambda log, _: log.epoch >= 1.2  # noqa: E731
    watch = lambda log, _: seen.append(log.epoch)  # noqa: E731
    res = train_transformer(
        train, valid, spec, mc, cfg, progress=False, callbacks=[stop_late, watch]
    )
    epochs = [h.epoch for h in res.history]
    assert epochs == seen and 1.2 <= epochs[-1] < 2 and len(epochs) > 2
    assert res.best_valid_ndcg == max(h.valid_ndcg for h in res.history)


def test_long_epochs_are_validated_inside_the_epoch(small_lists: Path) -> None:
    """On a large dataset the best weights can come before the first epoch ends: with
    ``eval_every_lists`` below the train size, validation (and early stopping) runs inside it."""
    sp, _ = load_splits(small_lists)
    m = sp.manifest
    # Half the lists: small batches make many steps, and what is checked counts validations
    part = sp.train.select(np.arange(len(sp.train) // 2))
    train, valid = rank_data(part, m), rank_data(sp.valid, m)
    spec, mc = spec_from_manifest(m), RankerConfig(d_model=32, n_layers=1, d_ff=64)
    third = len(train) // 3
    cfg = TrainConfig(epochs=1, batch_lists=32, threads=1, eval_every_lists=third, patience=10)
    res = train_transformer(train, valid, spec, mc, cfg, progress=False)
    epochs = [h.epoch for h in res.history]
    assert len(epochs) >= 3 and epochs[-1] == 1.0 and 0 < epochs[0] < 0.5
    assert epochs == sorted(epochs) and res.best_epoch in epochs
    # Patience counts validations: with patience 1 it stops at the first one that does not
    # improve, possibly inside the epoch.
    cfg1 = TrainConfig(epochs=3, batch_lists=32, threads=1, eval_every_lists=third, patience=1)
    short = train_transformer(train, valid, spec, mc, cfg1, progress=False)
    scores = [h.valid_ndcg for h in short.history]
    assert all(b > a for a, b in itertools.pairwise(scores[:-1]))  # improving until...
    # ...the one that stopped it (or the last epoch ended first)
    assert short.history[-1].epoch == 3.0 or scores[-1] <= max(scores[:-1])


def test_train_publish_and_score_both_models(
    small_lists: Path, tmp_path: Path, three_torch_threads: int
) -> None:
    reg = tmp_path / "registry"
    lg = run_training(
        TrainRequest(
            "lgbm", small_lists, reg, bias="none", progress=False, overrides={"max_rounds": 60}
        )
    )
    tr = run_training(
        TrainRequest("transformer", small_lists, reg, bias="tower", progress=False, overrides=FAST)
    )
    tr2 = run_training(
        TrainRequest(
            "transformer", small_lists, reg, bias="none", threads=1, progress=False, overrides=FAST
        )
    )
    assert torch.get_num_threads() == three_torch_threads  # each run's own count, then put back
    assert (str(lg), str(tr), str(tr2)) == ("lgbm/v1", "transformer/v1", "transformer/v2")
    assert versions(reg, "transformer") == ["v1", "v2"]
    assert resolve(reg / "transformer").version == "v2"  # NAME alone: the latest
    card = tr.card()
    # --validation auto: the Transformer with its position prior selects on the held-out
    # loss, without the tower (no prior) and LightGBM on the examined candidates
    assert card.bias_correction == "tower" and card.validation_metric == "neg_heldout_loss"
    assert tr2.card().validation_metric == "examined_ndcg@10"
    assert lg.card().validation_metric == "examined_ndcg@10"
    assert set(card.files) == {"checkpoint.pt"} and card.features["format"] == "ranker-lists/1"
    assert card.tuning["budget"] == 1 and card.data["fingerprint"]
    assert lg.card().details["feature_names"][0] == card.feature_manifest.numeric_names[0]
    sp, _ = load_splits(small_lists)
    for ref in (lg, tr):
        s = load(ref).score(sp.valid, sp.manifest)
        assert s.shape == (sp.valid.n_items,) and np.isfinite(s).all()


def test_reranker_mode_uses_out_of_fold_baseline_scores(
    small_registry: Path, small_lists: Path
) -> None:
    rr = resolve(small_registry / "rerank")  # trained by the shared fixture over lgbm/v1
    card = rr.card()
    assert card.baseline == "lgbm/v1"
    assert [f.name for f in card.extra] == ["baseline_score", "baseline_rank"]
    # Residual by default: the baseline score (the first extra input) is added to the output.
    assert card.details["feature_spec"]["residual_input"] == len(card.feature_manifest.numeric)
    sp, _ = load_splits(small_lists)
    s = load(rr).score(sp.valid, sp.manifest)
    assert np.isfinite(s).all()


def test_a_reranker_that_learns_nothing_ranks_as_its_baseline(
    small_lists: Path, tmp_path: Path
) -> None:
    """With no step taken (learning rate 0) the residual re-ranker is its baseline, and the
    checkpoint kept is that starting point (epoch 0), never a worse one."""
    reg = tmp_path / "registry"
    base = run_training(
        TrainRequest(
            "lgbm", small_lists, reg, bias="none", progress=False, overrides={"max_rounds": 40}
        )
    )
    rr = run_training(
        TrainRequest(
            "transformer",
            small_lists,
            reg,
            name="rerank",
            bias="tower",
            reranker="lgbm",
            progress=False,
            overrides={**FAST, "lr": 0.0, "blend": 0},  # the residual re-ranker
        )
    )
    assert rr.card().details["best_epoch"] == 0
    sp, test = load_splits(small_lists, with_test=True)
    assert test is not None
    s_base = load(base).score(test, sp.manifest)
    s_rr = load(rr).score(test, sp.manifest)
    np.testing.assert_allclose(s_rr, s_base, rtol=0, atol=1e-5)


def test_bad_requests_are_refused(small_lists: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tower"):
        run_training(TrainRequest("lgbm", small_lists, tmp_path, bias="tower"))
    with pytest.raises(ValueError, match="loss"):
        run_training(
            TrainRequest(
                "transformer",
                small_lists,
                tmp_path,
                bias="none",
                overrides={"loss": "nope", "epochs": 1},
            )
        )
    with pytest.raises(ValueError, match="residual must be true or false"):
        run_training(
            TrainRequest(
                "transformer", small_lists, tmp_path, reranker="lgbm", overrides={"residual": "no"}
            )
        )
    with pytest.raises(FileNotFoundError):
        resolve(tmp_path / "missing")


def test_propensities_from_swaps_match_the_worlds_examination(tmp_path: Path) -> None:
    """Estimated from randomised swaps in the logs; compared with the world's effective
    examination curve (position bias including users who stopped earlier)."""
    cfg = WorldConfig(seed=11, n_requests=6000, n_users=600, n_items=900, days=4, random_share=1.0)
    simulate(cfg, tmp_path, progress=False)
    imp = pd.read_parquet(tmp_path / "logs/impressions.parquet")
    p = estimate_propensities(
        imp["position"].to_numpy(),
        imp["policy_position"].to_numpy(),
        imp["clicked"].to_numpy(),
        np.ones(len(imp), bool),
    )
    world = World.load(tmp_path / "world")
    truth = world.effective_examination(
        world.sample_searches(800, np.random.default_rng(0)), np.random.default_rng(1), 10
    )
    err = np.abs(np.log(p.values[:10]) - np.log(truth))
    assert err.max() < 0.3, (np.round(p.values[:10], 3), np.round(truth, 3))
    # The pure examination curve (before stopping) is flatter than what clicks reveal.
    assert (world.examination_curve(10)[1:] > truth[1:]).all()
    torch.set_num_threads(2)


def tiny_reranker(small_lists: Path, reg: Path, propensities: str = "auto") -> ModelRef:
    """A one-epoch re-ranker named rr over the registry's ``lgbm``."""
    small = {"epochs": 1, "d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32}
    return run_training(
        TrainRequest(
            "transformer",
            small_lists,
            reg,
            name="rr",
            reranker="lgbm",
            propensities=propensities,
            progress=False,
            overrides={**small, "blend": 0},  # the residual re-ranker: its out-of-fold fits
        )
    )


def test_the_out_of_fold_baseline_follows_the_published_recipe(
    small_lists: Path, tmp_path: Path
) -> None:
    """A position-aware baseline (lambdarank, the default) gets position-aware out-of-fold
    models: the re-ranker learns to correct the baseline it meets at test, recorded in its card."""
    from ranker.train.reranker import BaselineRecipe, out_of_fold_scores

    reg = tmp_path / "reg"
    run_training(
        TrainRequest("lgbm", small_lists, reg, progress=False, overrides={"max_rounds": 20})
    )
    base = resolve(reg / "lgbm").card()
    assert base.training["position_aware"] and base.bias_correction == "lambdarank"
    card = resolve(tiny_reranker(small_lists, reg).path).card()
    assert card.reranker is not None
    assert card.training["ema_epochs"] == 0.0  # a re-ranker's average: the per-step decay
    assert card.reranker["out_of_fold"] == {
        "rounds": base.details["best_iteration"],
        "position_aware": True,
        "bias_correction": "lambdarank",
    }
    # The recipe's position model is really used: without it the scores differ.
    sp, _ = load_splits(small_lists)
    data = rank_data(sp.train, sp.manifest)
    aware = BaselineRecipe(base.details["params"], 10, position_aware=True)
    plain = BaselineRecipe(base.details["params"], 10, position_aware=False)
    # (three folds: what is checked below does not need the default five)
    a = out_of_fold_scores(aware, data, sp.manifest, folds=3)
    b = out_of_fold_scores(plain, data, sp.manifest, folds=3)
    assert np.isfinite(a).all() and not np.allclose(a, b)
    # Shared between processes (torchrun ranks): each part fits its folds, the sum is the whole.
    parts = [out_of_fold_scores(aware, data, sp.manifest, 3, share=(p, 2)) for p in (0, 1)]
    np.testing.assert_array_equal(parts[0] + parts[1], a)
    assert (parts[0] != 0).any() and (parts[1] != 0).any()
    with pytest.raises(ValueError, match="the part must be in"):
        out_of_fold_scores(aware, data, sp.manifest, share=(2, 2))


def test_a_reranker_weighs_its_out_of_fold_baselines_as_the_baseline_was_weighed(
    small_lists: Path, tmp_path: Path
) -> None:
    """An ipw baseline trained on the reconciled propensities, a re-ranker on the randomised
    ones: the out-of-fold models repeat the baseline's weights (rebuilt from its card), not
    the re-ranker's."""

    reg = tmp_path / "reg"
    overrides = {"max_rounds": 5}
    run_training(
        TrainRequest("lgbm", small_lists, reg, bias="ipw", progress=False, overrides=overrides)
    )
    base = resolve(reg / "lgbm").card().propensities
    assert base is not None
    card = resolve(tiny_reranker(small_lists, reg, propensities="randomised").path).card()
    assert card.propensities is not None and card.reranker is not None
    assert card.propensities["eta"] != base["eta"]  # the two requests really differ here
    recipe = card.reranker["out_of_fold"]
    assert recipe["propensities"] == {"eta": base["eta"], "source": base["source"]}
    rebuilt = Propensities.from_record(base)
    np.testing.assert_array_equal(rebuilt.values[:20], base["values"])


def test_the_examined_validation_rule_reads_only_what_the_user_saw() -> None:
    """Candidates below a list's last positive (logged order) leave the metric: neither gain
    nor rank; lists without logged positions keep every candidate; "ips" is the rule before."""
    from pipelines.lists.table import Lists
    from ranker.data import RankData
    from ranker.metrics import ndcg
    from ranker.train.prepare import examined, validation_set

    lists = Lists(
        request_id=np.array(["a", "b"], dtype=object),
        offsets=np.array([0, 4, 7]),
        item_ids=np.array(list("pqrsxyz"), dtype=object),
        labels=np.array([0, 1, 0, 0, 0, 0, 0], np.int8),
        num=np.zeros((7, 1), np.float32),
        cat=np.zeros((7, 0), np.int32),
        positions=np.array([3, 2, 1, 4, 1, 2, 3], np.int16),
    )
    seen = examined(lists)
    assert seen is not None
    assert seen.tolist() == [False, True, True, False, False, False, False]
    v = validation_set(lists, None, "none")
    assert v.metric == "examined_ndcg@10" and v.labels is None
    data = RankData(lists, max_history=0, eval_mask=v.mask)
    # The unseen candidate "p" scored first costs nothing; the seen "r" above "q" does.
    s, y, m = data.padded_scores(np.array([9.0, 1.0, 0.0, 5.0, 0, 0, 0]))
    assert ndcg(s, y, mask=m, k=10)[0] == 1.0 and np.isnan(ndcg(s, y, mask=m, k=10)[1])
    s, y, m = data.padded_scores(np.array([0.0, 1.0, 2.0, 0.0, 0, 0, 0]))
    assert ndcg(s, y, mask=m, k=10)[0] < 1.0
    assert validation_set(lists, None, "none", "ips").mask is None
    with pytest.raises(ValueError, match="validation rule must be one of"):
        validation_set(lists, None, "none", "oracle")
    judged = Lists(**{**lists.__dict__, "positions": None})
    assert validation_set(judged, None, "none").metric == "ndcg@10"


def test_lightgbm_keeps_the_earliest_round_within_one_standard_error(
    small_lists: Path,
) -> None:
    """The one-SE rule: the earliest round whose validation value is within one standard error
    of the best round's; "best" keeps the best. The kept round is what the booster predicts."""
    from ranker.kinds.lgbm import LgbmConfig
    from ranker.train.lgbm import lgbm_features, one_se_round, predict_lgbm, train_lgbm

    curve, se = [0.50, 0.60, 0.64, 0.66, 0.65], [0.02, 0.02, 0.02, 0.03, 0.03]
    assert one_se_round(curve, se, best=4) == 3  # 0.64 >= 0.66 - 0.03; 0.60 is not
    assert one_se_round(curve, [0.0] * 5, best=4) == 4
    assert one_se_round([0.7, 0.5], [0.1, 0.1], best=1) == 1
    splits, _ = load_splits(small_lists)
    m = splits.manifest
    tr, va = rank_data(splits.train, m), rank_data(splits.valid, m)
    fixed = {"max_rounds": 60, "early_stopping": 60, "num_leaves": 7}
    best = train_lgbm(tr, va, m, LgbmConfig(keep_round="best", **fixed))
    one_se = train_lgbm(tr, va, m, LgbmConfig(**fixed))
    assert best.history == one_se.history
    b = best.best_iteration
    assert one_se.best_iteration == one_se_round(one_se.history, one_se.history_se, b) <= b
    assert one_se.best_valid_ndcg >= best.best_valid_ndcg - one_se.history_se[b - 1]
    x_va = lgbm_features(va, m)[0]
    kept = one_se.booster.predict(x_va, raw_score=True, num_iteration=one_se.best_iteration)
    np.testing.assert_allclose(predict_lgbm(one_se.booster, va, m), kept, rtol=1e-6)
    with pytest.raises(ValueError, match="keep_round must be one of"):
        train_lgbm(tr, va, m, LgbmConfig(keep_round="last", **fixed))
