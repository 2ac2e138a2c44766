"""The feature manifest that travels with a lists dataset and with every model trained on it.

A dataset directory holds ``manifest.json``, ``train.parquet``, ``valid.parquet`` and
``test.parquet`` (one row per request) and, for vocabularies, ``vocabs/<name>.json``.

Columns of a split (optional ones may be absent; DESIGN.md, "Lists dataset"):

================  =========================================  =====================================
column            type                                       meaning
================  =========================================  =====================================
request_id        string
ts                timestamp[us, UTC]   (optional)            request time
user_id           string               (optional)
query             string               (optional)
randomized        bool                 (optional)            shown with randomised swaps
item_ids          list<string>                               candidates
labels            list<int8>                                 0 none, 1 click, 2 order (configurable)
positions         list<int16>          (optional)            logged position, training-only
policy_positions  list<int16>          (optional)            the logger's own position before a
                                                             randomised swap, training-only
num               list<fixed_size_list<float32>[F]>          raw numeric features, manifest order
cat               list<fixed_size_list<int32>[C]>  (if C>0)  categorical indices, 0 = unknown
hist_item_ids     list<string>         (optional)            behaviour sequence, oldest first
hist_num          list<fixed_size_list<float32>[Hn]>         e.g. age of each history event
hist_cat          list<fixed_size_list<int32>[Hc]>           e.g. item index, category index
================  =========================================  =====================================

Numeric values are stored raw; each feature names a ``transform`` (``none``, ``log1p`` or
``slog1p`` = sign(x) * log1p(|x|)) and the mean and standard deviation of the transformed value
on the train split, which models apply (the Transformer inside its graph).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "ranker-lists/1"
SPLITS = ("train", "valid", "test")
TRANSFORMS = ("none", "log1p", "slog1p")


@dataclass
class NumericFeature:
    name: str
    group: str  # item, context, text, counter, list, history, libsvm, reranker
    transform: str = "none"
    default: float = 0.0  # value when the source has none (an unknown item, no history...)
    mean: float = 0.0  # of the transformed value, fitted on train
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"feature {self.name}: transform must be one of {TRANSFORMS}")


@dataclass
class CategoricalFeature:
    name: str
    group: str
    size: int  # embedding rows, index 0 = unknown / out of vocabulary
    vocab: str | None = None  # vocabulary name (vocabs/<vocab>.json), None when hashed
    hashed: bool = False


@dataclass
class Manifest:
    numeric: list[NumericFeature]
    categorical: list[CategoricalFeature] = field(default_factory=list)
    history_numeric: list[NumericFeature] = field(default_factory=list)
    history_categorical: list[CategoricalFeature] = field(default_factory=list)
    history_max_len: int = 0
    labels: dict[str, Any] = field(default_factory=lambda: {"click": 1, "order": 2})
    max_label: int = 2
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)  # optional columns present in the splits
    bad_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # sha256 over the dataset's split files
    created: str = ""
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        d = dict(d)
        if d.get("format") != FORMAT:
            raise ValueError(f"manifest format {d.get('format')!r}, expected {FORMAT!r}")
        for key, kind in (
            ("numeric", NumericFeature),
            ("history_numeric", NumericFeature),
            ("categorical", CategoricalFeature),
            ("history_categorical", CategoricalFeature),
        ):
            d[key] = [kind(**f) for f in d.get(key, [])]
        return cls(**d)

    @classmethod
    def load(cls, dataset: Path) -> Manifest:
        path = Path(dataset) / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(f"{dataset}: no manifest.json (not a lists dataset)")
        return cls.from_dict(json.loads(path.read_text()))

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.numeric]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]

    def schema_key(self) -> dict[str, Any]:
        """What a model depends on: feature names, kinds, transforms and vocabulary sizes.

        Two datasets (or a dataset and a serving state) with equal keys feed a model the same
        tensors; statistics may differ.
        """
        return {
            "numeric": [(f.name, f.transform) for f in self.numeric],
            "categorical": [(f.name, f.size, f.hashed) for f in self.categorical],
            "history_numeric": [(f.name, f.transform) for f in self.history_numeric],
            "history_categorical": [(f.name, f.size, f.hashed) for f in self.history_categorical],
            "history_max_len": self.history_max_len,
        }


def apply_transform(x: np.ndarray, kind: str) -> np.ndarray:
    """The manifest's named transforms, in float32 as models see them."""
    x = np.asarray(x, dtype=np.float32)
    if kind == "log1p":
        return np.log1p(np.maximum(x, 0.0))
    if kind == "slog1p":
        return np.sign(x) * np.log1p(np.abs(x))
    return x


def load_vocab(dataset: Path, name: str) -> list[str]:
    """Vocabulary values; value ``v`` at list index ``i`` has categorical index ``i + 1``."""
    return list(json.loads((Path(dataset) / "vocabs" / f"{name}.json").read_text()))
