"""Load a registry model and score lists with the framework's own runtime (torch, LightGBM).

Evaluation and the ONNX parity checks score through here. A model scores a dataset only when
the dataset feeds it the features it was trained on (same names, kinds, transforms and
vocabulary sizes); otherwise a clear error names the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists
from ranker.card import ModelCard
from ranker.data import RankData
from ranker.inputs import baseline_inputs
from ranker.kinds import get_kind
from ranker.kinds.base import Kind, Scorer
from ranker.registry import ModelRef, resolve


@dataclass
class LoadedModel:
    ref: ModelRef
    card: ModelCard
    kind_impl: Kind
    scorer: Scorer  # the model in its own framework
    baseline: LoadedModel | None = None  # re-ranker mode

    @property
    def kind(self) -> str:
        return self.card.kind

    @property
    def features(self) -> Manifest:
        """The feature manifest the model was trained with."""
        return self.card.feature_manifest

    def score(self, lists: Lists, dataset: Manifest) -> np.ndarray:
        """(N,) scores for every candidate of ``lists`` (a split of a compatible dataset)."""
        features = self.features
        check_compatible(features, dataset, str(self.ref))
        extra = None
        if self.baseline is not None:
            extra = baseline_inputs(self.baseline.score(lists, dataset), lists.offsets)
        data = RankData(lists, extra_num=extra, max_history=features.history_max_len or 50)
        return self.scorer.score(data)


def load(spec: str | Path | ModelRef) -> LoadedModel:
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    card = ref.card()
    kind = get_kind(card.kind)
    baseline = None
    if card.baseline is not None:
        baseline = load(resolve(card.baseline, registry=ref.registry))
    return LoadedModel(ref, card, kind, kind.load(ref, card), baseline)


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
