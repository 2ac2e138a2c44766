"""The LightGBM LambdaMART baseline as a kind: tuned, trained, scored, exported, served."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ranker.inputs import lgbm_columns, lgbm_matrix
from ranker.kinds.base import FlatOutput, Kind, ParityCase, Trained, TrainJob, trial_configs

if TYPE_CHECKING:
    import lightgbm as lgb

    from pipelines.features.transforms import Features
    from ranker.card import ModelCard
    from ranker.data import RankData
    from ranker.registry import ModelRef

log = logging.getLogger(__name__)
INPUT = "features"  # the graph's one input: (N, F) float32
SPACE: dict[str, list[Any]] = {
    "num_leaves": [15, 31, 63, 127],
    "learning_rate": [0.02, 0.05, 0.1],
    "min_data_in_leaf": [20, 50, 100],
    "feature_fraction": [0.6, 0.8, 1.0],
}


@dataclass(frozen=True)
class LgbmConfig:
    """The user's LightGBM settings (every field a ``--set`` key)."""

    num_leaves: int = 63
    learning_rate: float = 0.05
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 1.0
    lambda_l2: float = 1.0
    max_rounds: int = 1000
    early_stopping: int = 50
    # Which round is kept once early stopping ends training: "best" (the best validation
    # value) or "one_se" (the earliest round within one standard error, over validation lists,
    # of the best). The selection study (benchmarks/selection_rules.py, worlds 101-103) found
    # the examined-click curve still creeping up after the test oracle peaks: keeping the best
    # round cost 0.012 oracle NDCG@10, the one-SE round 0.005.
    keep_round: str = "one_se"
    truncation_level: int = 20
    position_aware: bool = False  # LightGBM's own position-bias model (lambdarank + position)
    # Read the train features from the split's row groups while LightGBM bins them, instead of
    # loading them (ranker.train.lgbm_stream): memory follows the binned dataset, same model.
    # The validation split's too (binned with the train split's bins).
    stream: bool = False
    # Rows of the train split LightGBM cuts its bins from (its bin_construct_sample_cnt),
    # drawn once from the whole split (ranker.train.lgbm.bin_sample) for every path.
    bin_sample_rows: int = 200_000
    seed: int = 0
    threads: int = 2
    eval_k: int = 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LgbmScorer:
    booster: lgb.Booster
    card: ModelCard

    def score(self, data: RankData) -> np.ndarray:
        from ranker.train.lgbm import predict_lgbm

        names = [f.name for f in self.card.extra]
        return predict_lgbm(self.booster, data, self.card.feature_manifest, names)


@dataclass(frozen=True)
class LgbmFeeder(FlatOutput):
    keep_cat: list[int]

    def feeds(
        self, batch: Sequence[Features], num: np.ndarray, lens: np.ndarray
    ) -> dict[str, np.ndarray]:
        cat = batch[0].cat if len(batch) == 1 else np.concatenate([f.cat for f in batch])
        return {INPUT: lgbm_matrix(num, cat, self.keep_cat)}


class LgbmKind(Kind):
    name = "lgbm"
    help = "LightGBM LambdaMART over the flat features (the baseline)"
    own_bias = "lambdarank"
    biases = ("none", "ipw", "lambdarank")
    distributed = True  # LightGBM's own data-parallel network (ranker.train.lgbm_network)

    def streams_train(self, settings: dict[str, Any]) -> bool:
        return bool(settings.get("stream", LgbmConfig.stream))

    def streams_valid(self, settings: dict[str, Any]) -> bool:
        return self.streams_train(settings)

    def distributed_bias(self, bias: str, explicit: bool) -> str:
        if bias != "lambdarank":
            return bias
        if explicit:
            log.warning(
                "--bias lambdarank across processes: each worker learns its own position "
                "factors from its share of the lists (LightGBM does not reduce them)"
            )
            return bias
        log.warning(
            "across processes --bias auto means ipw: LightGBM's position-aware lambdarank "
            "learns its position factors per worker (see ranker.train.lgbm_network)"
        )
        return "ipw"

    def settings_dataclasses(self) -> tuple[type, ...]:
        return (LgbmConfig,)

    def format1_details(self, card: dict[str, Any]) -> dict[str, Any]:
        return {"best_iteration": card.pop("best_iteration", 0), **card.pop("lgbm", {})}

    def train(self, job: TrainJob) -> Trained:
        from ranker.train.lgbm import bin_sample, train_lgbm

        cfg0 = replace(
            LgbmConfig(seed=job.seed, threads=job.threads, position_aware=job.bias == "lambdarank"),
            **job.settings,
        )
        train, launch, rows, valid_rows = job.train, job.launch, None, None
        keep = lgbm_columns(job.manifest)[1]
        # The bins come from one sample of the whole split, whoever trains (see bin_sample).
        sample = bin_sample(len(train.labels), cfg0.bin_sample_rows, cfg0.seed)
        mine = None  # under torchrun: this worker's lists
        if launch.distributed:
            from ranker.train.lgbm_network import worker_lists

            mine = worker_lists(len(train), launch)
        if cfg0.stream:
            from ranker.data import candidate_rows
            from ranker.train.lgbm_stream import ParquetRows

            bin_rows = ParquetRows(job.data / "train.parquet", keep)[sample.tolist()]
            own = None if mine is None else candidate_rows(train.offsets, mine)
            rows = ParquetRows(job.data / "train.parquet", keep, own)
            valid_rows = ParquetRows(job.data / "valid.parquet", keep)
        else:
            bin_rows = lgbm_matrix(train.num[sample], train.cat[sample], keep)
        if mine is not None:
            train = train.subset(mine)
        trials, best = [], None
        for k, t in enumerate(trial_configs(SPACE, job.tune, job.seed)):
            network = None
            if launch.distributed:  # a fresh network per trial: each booster holds its own
                from ranker.train.lgbm_network import network_params

                network = network_params(launch)
            res = train_lgbm(
                train,
                job.valid,
                job.manifest,
                replace(cfg0, **t),
                callbacks=job.callbacks,
                network=network,
                train_rows=rows,
                valid_rows=valid_rows,
                bin_rows=bin_rows,
            )
            trials.append(
                {"params": t, "valid_ndcg@10": res.best_valid_ndcg, "rounds": res.best_iteration}
            )
            log.info(
                "lightgbm trial %d/%d %s: valid ndcg@10 %.4f",
                k + 1,
                job.tune,
                t,
                res.best_valid_ndcg,
            )
            if best is None or res.best_valid_ndcg > best[1].best_valid_ndcg:
                best = (replace(cfg0, **t), res)
        assert best is not None
        cfg, res = best
        if launch.distributed:
            from ranker.train.lgbm_network import check_same_trees

            check_same_trees(res.booster, launch)
        if launch.leader:
            res.booster.save_model(str(job.build / "model.txt"), num_iteration=res.best_iteration)
        return Trained(
            training=cfg.to_dict(),
            tuning={"budget": job.tune, "space": SPACE, "trials": trials},
            valid_ndcg=res.best_valid_ndcg,
            details={
                "best_iteration": res.best_iteration,
                "feature_names": res.feature_names,
                "categorical": res.categorical,
                "params": res.params,
            },
        )

    def load(self, ref: ModelRef, card: ModelCard) -> LgbmScorer:
        import lightgbm as lgb

        return LgbmScorer(lgb.Booster(model_file=str(ref.path / "model.txt")), card)

    def to_onnx(self, scorer: Any, card: ModelCard, precision: str) -> bytes:
        from ranker.export.lgbm_onnx import booster_to_onnx

        return booster_to_onnx(scorer.booster).SerializeToString()

    def onnx_inputs(self) -> dict[str, str]:
        return {INPUT: "(N, F) float32: numeric features, then categorical codes (no item_id)"}

    def parity_cases(self, scorer: Any, rng: np.random.Generator) -> Iterator[ParityCase]:
        x = rng.normal(0, 3, (64, scorer.booster.num_feature())).astype(np.float32)
        yield ParityCase({INPUT: x}, scorer.booster.predict(x, raw_score=True))

    def feeder(self, card: ModelCard) -> LgbmFeeder:
        _, keep, _ = lgbm_columns(card.feature_manifest, [f.name for f in card.extra])
        return LgbmFeeder(keep)
