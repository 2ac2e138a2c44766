"""What a model kind is: the one place that knows how to train, load, score, export and serve
one family of models. ``ranker.kinds.KINDS`` names them; nothing else branches on a kind.

A kind module imports torch or LightGBM only inside the methods that need them: the server
imports every kind (for its ``Feeder``) and loads neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pipelines.lists.manifest import Manifest, NumericFeature
from ranker.train.launch import SINGLE, Launch

if TYPE_CHECKING:
    from pipelines.features.transforms import Features
    from ranker.card import ModelCard
    from ranker.data import RankData
    from ranker.registry import ModelRef
    from ranker.train.prepare import Splits

Precision = str  # "fp32" | "fp16"


@dataclass(frozen=True)
class TrainJob:
    """Everything a kind's ``train`` gets: the prepared splits and the user's choices."""

    data: Path
    registry: Path
    splits: Splits
    train: RankData
    valid: RankData
    manifest: Manifest
    bias: str
    tune: int
    seed: int
    threads: int
    settings: dict[str, Any]  # --set values, checked against the kind's ``setting_names``
    build: Path  # the kind writes its files here; the registry publishes them
    reranker: str | None = None
    resume: str | None = None
    progress: bool = True
    callbacks: tuple[Callable[..., None], ...] = ()  # passed to the kind's training loop
    launch: Launch = SINGLE  # this process's rank under torchrun (kinds with ``distributed``)
    validation_rule: str = "examined"  # the model-selection rule (its labels are in valid)


@dataclass(frozen=True)
class Trained:
    """What a kind's training reports for the model card."""

    training: dict[str, Any]  # the settings it trained with
    tuning: dict[str, Any]  # budget, space, trials
    valid_ndcg: float
    details: dict[str, Any]  # the kind's own card details
    extra: list[NumericFeature] = field(default_factory=list)  # re-ranker inputs
    reranker: dict[str, Any] | None = None


class Scorer(Protocol):
    """A loaded model in its own framework (torch, LightGBM, NumPy)."""

    def score(self, data: RankData) -> np.ndarray:
        """(N,) float32 scores of every candidate of a split."""
        ...


class Feeder(Protocol):
    """Serving: the ONNX feeds of a batch of requests, and the per-request scores back."""

    def feeds(
        self, batch: Sequence[Features], num: np.ndarray, lens: np.ndarray
    ) -> dict[str, np.ndarray]: ...

    def split(self, out: np.ndarray, lens: np.ndarray) -> list[np.ndarray]: ...


class FlatOutput:
    """Output (N,) over every candidate of the batch, split back per request."""

    def split(self, out: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
        return np.split(out.reshape(-1), np.cumsum(lens)[:-1])


@dataclass(frozen=True)
class ParityCase:
    """One sample for the ONNX parity check: the feeds and the framework's scores."""

    feeds: dict[str, np.ndarray]
    expected: np.ndarray


def trial_configs(space: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """The tuning trials: the defaults first, then ``n - 1`` drawn (seeded) from ``space``.
    Every kind gets the same budget, ``--tune N``, on validation data only."""
    rng = np.random.default_rng(seed)
    trials: list[dict[str, Any]] = [{}]
    while len(trials) < n:
        trials.append({k: v[int(rng.integers(len(v)))] for k, v in space.items()})
    return trials


class Kind(ABC):
    name: ClassVar[str]
    help: ClassVar[str]  # one line for ``ranker train --help``
    own_bias: ClassVar[str]  # what ``--bias auto`` means for this kind
    biases: ClassVar[tuple[str, ...]]  # the position-bias corrections it accepts
    reranks: ClassVar[bool] = False  # can train over a baseline (``--reranker``)
    distributed: ClassVar[bool] = False  # trains across the ranks of a torchrun launch
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def streams_train(self, settings: dict[str, Any]) -> bool:
        """Whether training reads the train split's features itself, as it goes: the job's
        ``train`` then holds no features (``ranker.train.lgbm_stream.light_split``)."""
        return False

    def streams_valid(self, settings: dict[str, Any]) -> bool:
        """The same for the validation split."""
        return False

    def distributed_bias(self, bias: str, explicit: bool) -> str:
        """The bias correction this kind uses across the processes of a launch, for ``bias``
        (``explicit``: the user's ``--bias``, else the kind's own)."""
        return bias

    # The rules of ranker.train.prepare.VALIDATION_RULES this kind can select by.
    validation_rules: tuple[str, ...] = ("examined", "ips")

    def own_validation(self, settings: dict[str, Any], bias: str, reranks: bool = False) -> str:
        """What ``--validation auto`` means for this kind under these settings (a rule of
        ``ranker.train.prepare.VALIDATION_RULES``); ``reranks``: trained over a baseline."""
        return "examined"

    def settings_dataclasses(self) -> tuple[type, ...]:
        """The dataclasses of the user's settings: their fields are the ``--set`` keys."""
        return ()

    def setting_names(self) -> list[str]:
        """Every ``--set`` key: the fields of the kind's settings dataclasses."""
        names: set[str] = set()
        for t in self.settings_dataclasses():
            assert is_dataclass(t)
            names |= {f.name for f in fields(t)}
        return sorted(names)

    def check_settings(self, settings: dict[str, Any]) -> None:
        unknown = sorted(set(settings) - set(self.setting_names()))
        if unknown:
            raise ValueError(
                f"unknown setting(s) for {self.name}: {unknown}; known: {self.setting_names()}"
            )

    def format1_details(self, card: dict[str, Any]) -> dict[str, Any]:
        """A format-1 card kept the kind's details at its top level: take them out of
        ``card`` (changed in place) in the current ``details`` layout."""
        return {}

    @abstractmethod
    def train(self, job: TrainJob) -> Trained: ...

    @abstractmethod
    def load(self, ref: ModelRef, card: ModelCard) -> Scorer: ...

    @abstractmethod
    def to_onnx(self, scorer: Scorer, card: ModelCard, precision: Precision) -> bytes: ...

    @abstractmethod
    def onnx_inputs(self) -> dict[str, str]:
        """Input name -> what it holds, for the card."""

    @abstractmethod
    def parity_cases(self, scorer: Scorer, rng: np.random.Generator) -> Iterator[ParityCase]:
        """Random inputs of a few shapes, with the framework's scores for them."""

    @abstractmethod
    def feeder(self, card: ModelCard) -> Feeder: ...
