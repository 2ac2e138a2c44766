"""Load a registry model and score lists with the framework's own runtime (torch, LightGBM).

Evaluation and the ONNX parity checks score through here. A model scores a dataset only when
the dataset feeds it the features it was trained on (same names, kinds, transforms and
vocabulary sizes); otherwise a clear error names the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from pipelines.lists.manifest import Manifest, NumericFeature
from pipelines.lists.table import Lists
from ranker.data import RankData
from ranker.inputs import baseline_inputs
from ranker.model import Ranker
from ranker.registry import ModelRef, resolve
from ranker.train.lgbm import predict_lgbm
from ranker.train.transformer import load_model, predict


@dataclass
class LoadedModel:
    ref: ModelRef
    manifest: dict[str, Any]
    features: Manifest  # the feature manifest the model was trained with
    booster: lgb.Booster | None = None
    ranker: Ranker | None = None
    baseline: LoadedModel | None = None  # re-ranker mode

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def extra(self) -> list[NumericFeature]:
        return [NumericFeature(**f) for f in self.manifest.get("extra_numeric", [])]

    def score(self, lists: Lists, dataset: Manifest) -> np.ndarray:
        """(N,) scores for every candidate of ``lists`` (a split of a compatible dataset)."""
        check_compatible(self.features, dataset, str(self.ref))
        extra = None
        if self.baseline is not None:
            extra = baseline_inputs(self.baseline.score(lists, dataset), lists.offsets)
        data = RankData(lists, extra_num=extra, max_history=self.features.history_max_len or 50)
        if self.booster is not None:
            return predict_lgbm(self.booster, data, self.features, [f.name for f in self.extra])
        assert self.ranker is not None
        return predict(self.ranker, data)


def load(spec: str | Path | ModelRef) -> LoadedModel:
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    m = ref.manifest()
    features = Manifest.from_dict(m["features"])
    baseline = None
    if m.get("reranker"):
        baseline = load(resolve(m["reranker"]["baseline"], registry=ref.registry))
    if m["kind"] == "lgbm":
        booster = lgb.Booster(model_file=str(ref.path / "model.txt"))
        return LoadedModel(ref, m, features, booster=booster, baseline=baseline)
    if m["kind"] == "transformer":
        model, _ = load_model(ref.path / "checkpoint.pt")
        return LoadedModel(ref, m, features, ranker=model, baseline=baseline)
    raise ValueError(f"{ref}: unknown model kind {m['kind']!r}")


def check_compatible(model: Manifest, data: Manifest, name: str) -> None:
    a, b = model.schema_key(), data.schema_key()
    if a == b:
        return
    problems = [k for k in a if a[k] != b.get(k)]
    detail = []
    for k in problems:
        left, right = a[k], b.get(k)
        if isinstance(left, list) and isinstance(right, list):
            diff = [x for x in left if x not in right][:3] + [x for x in right if x not in left][:3]
            detail.append(f"{k} (e.g. {diff})")
        else:
            detail.append(k)
    raise ValueError(
        f"{name} was trained on other features than this dataset has: {', '.join(detail)}"
    )
