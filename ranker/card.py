"""The model card: what a registry version says about its model, typed, in one place.

``manifest.json`` in a version directory is a card written by ``to_dict`` and read by
``ModelCard.read``; nothing else parses it. Every kind's own details (LightGBM's feature
names, the Transformer's architecture, the CTR ranker's priors) live under ``details``, so a
new kind adds no field here. ``format`` versions the layout: cards written before it existed
(format 1: kind details at the top level) are migrated on reading; a newer format than this
code knows is refused with a message saying so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipelines.lists.manifest import Manifest, NumericFeature

CARD_FORMAT = 2


class CardError(ValueError):
    """A manifest.json that is not a card this code can read."""


@dataclass(frozen=True)
class ModelCard:
    kind: str
    features: dict[str, Any]  # the feature manifest the model was trained on (Manifest.to_dict)
    data: dict[str, Any]  # path, fingerprint and source of the training dataset
    bias_correction: str
    seed: int
    validation_metric: str  # ndcg@10, or ips_ndcg@10 with propensities
    training: dict[str, Any]  # the settings the model was trained with
    tuning: dict[str, Any]  # budget, space, trials
    valid_ndcg: float
    details: dict[str, Any] = field(default_factory=dict)  # the kind's own
    extra_numeric: list[dict[str, Any]] = field(default_factory=list)  # re-ranker inputs
    propensities: dict[str, Any] | None = None
    reranker: dict[str, Any] | None = None  # baseline, folds, inputs
    # Set by the registry when the version is published / exported:
    name: str = ""
    version: str = ""
    created: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    onnx: dict[str, Any] | None = None
    format: int = CARD_FORMAT

    @property
    def feature_manifest(self) -> Manifest:
        return Manifest.from_dict(self.features)

    @property
    def extra(self) -> list[NumericFeature]:
        return [NumericFeature(**f) for f in self.extra_numeric]

    @property
    def baseline(self) -> str | None:
        """The registry reference of a re-ranker's baseline."""
        return None if self.reranker is None else str(self.reranker["baseline"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "card") -> ModelCard:
        d = dict(d)
        fmt = d.get("format", 1)
        if not isinstance(fmt, int) or fmt > CARD_FORMAT:
            raise CardError(
                f"{where}: card format {fmt!r} is newer than this ranker reads "
                f"(up to {CARD_FORMAT}); upgrade the ranker"
            )
        if fmt == 1:
            d = _from_format1(d)
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in d and _required(f)]
        if missing:
            raise CardError(f"{where}: not a model card, it lacks {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def read(cls, version_dir: Path) -> ModelCard:
        f = Path(version_dir) / "manifest.json"
        if not f.exists():
            raise FileNotFoundError(f"{version_dir}: no manifest.json")
        try:
            raw = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise CardError(f"{f}: not JSON ({e})") from e
        if not isinstance(raw, dict):
            raise CardError(f"{f}: not a model card")
        return cls.from_dict(raw, str(f))


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return bool(f.default is MISSING and f.default_factory is MISSING)


def _from_format1(d: dict[str, Any]) -> dict[str, Any]:
    """A card written before ``format`` existed: the same facts, kind details moved."""
    from ranker.kinds import KINDS

    out = dict(d)
    kind = KINDS.get(str(d.get("kind")))
    out["details"] = kind.format1_details(out) if kind is not None else {}
    out["valid_ndcg"] = float(out.pop("metrics", {}).get("valid", {}).get("ndcg@10", "nan"))
    out["format"] = CARD_FORMAT
    return out
