"""The CTR ranker: the query-item click-through rate, shrunk towards the item's own rate.

    score = (qi_imps * qi_ctr + prior * item_ctr) / (qi_imps + prior)

Both rates come from the feature pipeline's counters (already smoothed towards the global rate,
see ``pipelines.features.transforms``), so a query-item pair with few impressions leans on the
item's rate and one with many on its own. Nothing is trained: the counter window and the prior
strength are picked on validation NDCG@10 from a small stated grid. Ranking teams expect this
baseline beside every learned model; on sparse click logs it is often as good.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ranker.kinds.base import FlatOutput, Kind, ParityCase, Trained, TrainJob

if TYPE_CHECKING:
    from pipelines.features.transforms import Features
    from pipelines.lists.manifest import Manifest
    from ranker.card import ModelCard
    from ranker.data import RankData
    from ranker.registry import ModelRef

log = logging.getLogger(__name__)
INPUT, OUTPUT = "features", "scores"  # (N, F) float32 numeric features -> (N,) float32
FILE = "ctr.json"


@dataclass(frozen=True)
class CtrSettings:
    """The grid the prior is picked from (every field a ``--set`` key)."""

    priors: tuple[float, ...] = (1.0, 5.0, 20.0, 100.0, 500.0, 2000.0, 10000.0)  # impressions
    window: str | None = None  # a counter window (e.g. "7d"); None: pick on validation
    eval_k: int = 10


@dataclass(frozen=True)
class CtrParams:
    """The fitted model: three feature columns and one number."""

    window: str
    prior: float
    columns: tuple[int, int, int]  # indices of qi_imps, qi_ctr, item_ctr in the numeric features

    def score(self, num: np.ndarray) -> np.ndarray:
        """(N,) float32 scores from (N, F) numeric features, in the graph's float32 order."""
        x = num.astype(np.float32, copy=False)
        qi_imps, qi_ctr, item_ctr = (x[:, j] for j in self.columns)
        prior = np.float32(self.prior)
        return (qi_imps * qi_ctr + prior * item_ctr) / (qi_imps + prior)


def _columns(manifest: Manifest, window: str) -> tuple[int, int, int]:
    names = manifest.numeric_names
    wanted = [f"qi_imps_{window}", f"qi_ctr_{window}", f"item_ctr_{window}"]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"the ctr kind needs the counter features {missing} in the dataset")
    a, b, c = (names.index(n) for n in wanted)
    return a, b, c


def _windows(manifest: Manifest) -> list[str]:
    return [n.removeprefix("qi_ctr_") for n in manifest.numeric_names if n.startswith("qi_ctr_")]


@dataclass(frozen=True)
class CtrScorer:
    params: CtrParams

    def score(self, data: RankData) -> np.ndarray:
        return self.params.score(data.num)


class CtrFeeder(FlatOutput):
    def feeds(
        self, batch: Sequence[Features], num: np.ndarray, lens: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {INPUT: num.astype(np.float32, copy=False)}


class CtrKind(Kind):
    name = "ctr"
    help = "query-item CTR shrunk towards the item CTR, from the counters (no training)"
    own_bias = "none"
    biases = ("none",)

    def settings_dataclasses(self) -> tuple[type, ...]:
        return (CtrSettings,)

    def train(self, job: TrainJob) -> Trained:
        from ranker.metrics import ndcg

        given: dict[str, Any] = dict(job.settings)
        if "priors" in given:
            given["priors"] = tuple(float(x) for x in given["priors"])
        s = CtrSettings(**given)
        windows = [s.window] if s.window else _windows(job.manifest)
        if not windows:
            raise ValueError("the ctr kind needs query-item counters (qi_ctr_*) in the dataset")
        trials, best = [], None
        for w in windows:
            for prior in s.priors:
                p = CtrParams(w, float(prior), _columns(job.manifest, w))
                sc, y, m = job.valid.padded_scores(p.score(job.valid.num))
                value = float(np.nanmean(ndcg(sc, y, mask=m, k=s.eval_k)))
                trials.append({"params": {"window": w, "prior": prior}, "valid_ndcg@10": value})
                if best is None or value > best[1]:
                    best = (p, value)
        assert best is not None
        params, value = best
        log.info("ctr: window %s, prior %g: valid ndcg@10 %.4f", params.window, params.prior, value)
        (job.build / FILE).write_text(json.dumps(asdict(params), indent=1, sort_keys=True))
        return Trained(
            training=asdict(s),
            tuning={
                "budget": len(trials),
                "space": {"window": windows, "prior": list(s.priors)},
                "trials": trials,
            },
            valid_ndcg=value,
            details={"params": asdict(params)},
        )

    def load(self, ref: ModelRef, card: ModelCard) -> CtrScorer:
        d = json.loads((ref.path / FILE).read_text())
        return CtrScorer(CtrParams(d["window"], float(d["prior"]), tuple(d["columns"])))

    def to_onnx(self, scorer: Any, card: ModelCard, precision: str) -> bytes:
        from onnx import TensorProto, helper, numpy_helper

        p: CtrParams = scorer.params

        def const(name: str, value: Any, dtype: Any) -> Any:
            return numpy_helper.from_array(np.asarray(value, dtype), name)

        nodes = [
            helper.make_node("Gather", [INPUT, f"col_{i}"], [v], axis=1)
            for i, v in enumerate(("qi_imps", "qi_ctr", "item_ctr"))
        ]
        nodes += [
            helper.make_node("Mul", ["qi_imps", "qi_ctr"], ["qi_clicks"]),
            helper.make_node("Mul", ["prior", "item_ctr"], ["prior_clicks"]),
            helper.make_node("Add", ["qi_clicks", "prior_clicks"], ["clicks"]),
            helper.make_node("Add", ["qi_imps", "prior"], ["imps"]),
            helper.make_node("Div", ["clicks", "imps"], [OUTPUT]),
        ]
        inits = [const(f"col_{i}", j, np.int64) for i, j in enumerate(p.columns)]
        inits.append(const("prior", p.prior, np.float32))
        graph = helper.make_graph(
            nodes,
            "ctr",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", "F"])],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N"])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        return bytes(model.SerializeToString())

    def onnx_inputs(self) -> dict[str, str]:
        return {INPUT: "(N, F) float32: the numeric features"}

    def parity_cases(self, scorer: Any, rng: np.random.Generator) -> Iterator[ParityCase]:
        width = max(scorer.params.columns) + 1
        x = np.abs(rng.normal(0, 3, (64, width))).astype(np.float32)
        yield ParityCase({INPUT: x}, scorer.params.score(x))

    def feeder(self, card: ModelCard) -> CtrFeeder:
        return CtrFeeder()
