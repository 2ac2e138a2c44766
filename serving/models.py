"""The models a server holds: every registry model that has ``model.onnx`` and whose features
match the live feature state, loaded into ONNX Runtime, verified and warmed up.

A model is refused (and the old set keeps serving) when its file's sha256 differs from its
manifest, when ONNX Runtime cannot load it, or when it was trained on other features than the
state computes. A re-ranker brings the exact baseline version it was trained over.

A set in use is leased by each request that scores with it; a set replaced by a reload is
closed (its batchers stopped) only once the last request leasing it has finished.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.features.transforms import Features
from ranker.card import ModelCard
from ranker.inputs import baseline_inputs
from ranker.kinds import get_kind
from ranker.kinds.base import Feeder
from ranker.registry import ModelRef, resolve, versions
from serving.inference import Batcher, OnnxRunner, Ticket
from serving.runtime import Device, session

log = logging.getLogger(__name__)
# Candidates per batched call at most (a batch of 8 lists of 1,000 candidates: the
# Transformer's attention alone then needs about 0.5 GB).
MAX_BATCH_ROWS = 8192


class ModelLoadError(Exception):
    pass


@dataclass
class ServedModel:
    name: str
    version: str
    card: ModelCard
    sha256: str
    runner: OnnxRunner
    feeder: Feeder  # the kind's: ONNX feeds of a batch, per-request scores back
    baseline: ServedModel | None = None
    batcher: Batcher[Features] | None = None

    @property
    def kind(self) -> str:
        return self.card.kind

    def score(self, f: Features, ticket: Ticket | None = None) -> np.ndarray:
        """Scores of one request's candidates, batched with other callers' requests."""
        if self.batcher is None:
            return self.score_many([f])[0]
        return self.batcher.score(f, ticket)

    def announce(self) -> Ticket | None:
        """A request for this model is being featurised (the batcher may wait for it)."""
        return None if self.batcher is None else self.batcher.announce()

    def withdraw(self, ticket: Ticket | None) -> None:
        if ticket is not None and self.batcher is not None:
            self.batcher.withdraw(ticket)

    def score_many(self, batch: Sequence[Features]) -> list[np.ndarray]:
        """Scores of several requests' candidates: one session call per model for all of them
        (a re-ranker: its baseline over every row first)."""
        lens = np.array([len(f.num) for f in batch])
        offsets = np.concatenate([[0], np.cumsum(lens)])
        num = _rows([f.num for f in batch])  # (N, F), N candidates of all requests
        if self.baseline is not None:
            base = np.concatenate(self.baseline.score_many(batch))
            num = np.concatenate([num, baseline_inputs(base, offsets)], axis=1)
        out = self.runner.run(self.feeder.feeds(batch, num, lens))
        return self.feeder.split(out, lens)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def _rows(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass
class ModelSet:
    models: dict[str, ServedModel]
    default: str
    _leases: int = 0
    _retired: bool = False
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, name: str) -> ServedModel | None:
        return self.models.get(name)

    def versions(self) -> dict[str, str]:
        return {name: m.version for name, m in sorted(self.models.items())}

    def acquire(self) -> None:
        with self._lock:
            self._leases += 1

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            done = self._retired and self._leases == 0
        if done:
            self._close()

    def retire(self) -> None:
        """No new leases will come: close once the requests holding one have finished."""
        with self._lock:
            self._retired = True
            done = self._leases == 0
        if done:
            self._close()

    def close(self) -> None:
        self.retire()

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for m in self.models.values():
            m.close()


def exported_versions(registry: Path, name: str) -> list[str]:
    return [v for v in versions(registry, name) if (registry / name / v / "model.onnx").exists()]


@dataclass(frozen=True)
class LoadOptions:
    """How every model of a set is loaded."""

    live_schema: dict[str, Any]  # the features the serving state computes
    device: Device
    threads: int
    batch_window_ms: float = 0.0
    max_batch: int = 64
    lanes: int = 1  # batches scored at once per model (see serving.inference)


def load_model_set(
    registry: Path,
    opts: LoadOptions,
    default: str | None = None,
    warmup: Features | None = None,
    pinned: dict[str, str] | None = None,
    lenient: bool = False,
) -> ModelSet:
    """Load every model of the registry: the versions in ``pinned``, else the latest exported
    version of each. Raises ``ModelLoadError`` naming the first model that cannot serve;
    ``lenient`` (a worker starting) instead falls back, per model, to the newest exported
    version that loads, with a warning for each one skipped."""
    registry = Path(registry)
    names = sorted(p.name for p in registry.iterdir() if p.is_dir() and not p.name.startswith("."))
    loader = _Loader(opts)
    try:
        loaded: dict[str, ServedModel] = {}
        for name in names:
            order = exported_versions(registry, name)[::-1]  # newest first
            if not order:
                log.info("model %s has no exported version; not served", name)
                continue
            if pinned is not None and pinned.get(name) in order:
                order.remove(pinned[name])
                order.insert(0, pinned[name])
            loaded[name] = loader.first_that_loads(registry, name, order if lenient else order[:1])
        if not loaded:
            raise ModelLoadError(f"no exported model in {registry} (run `ranker export`)")
        chosen = default or ("transformer" if "transformer" in loaded else sorted(loaded)[0])
        if chosen not in loaded:
            raise ModelLoadError(
                f"default model {chosen!r} is not among the loaded ones {sorted(loaded)}"
            )
        for m in loaded.values():
            if warmup is None:
                break
            try:
                for _ in range(3):
                    m.score(warmup)
            except Exception as e:
                raise ModelLoadError(f"{m.name}/{m.version}: fails on a warm-up: {e}") from e
        return ModelSet(loaded, chosen)
    except BaseException:
        loader.close()  # stop the batchers of a set that will never serve
        raise


class _Loader:
    """Loads model versions once each (a re-ranker and its baseline share the baseline)."""

    def __init__(self, opts: LoadOptions):
        self.opts = opts
        self.cache: dict[str, ServedModel] = {}

    def close(self) -> None:
        for m in self.cache.values():
            m.close()

    def first_that_loads(self, registry: Path, name: str, order: list[str]) -> ServedModel:
        for k, version in enumerate(order):
            try:
                return self.load(resolve(f"{name}/{version}", registry=registry))
            except ModelLoadError as e:
                if k == len(order) - 1:
                    raise
                log.warning("skipping %s/%s, trying an older version: %s", name, version, e)
        raise ModelLoadError(f"{name}: no version to load")

    def load(self, ref: ModelRef) -> ServedModel:
        key = str(ref)
        if key in self.cache:
            return self.cache[key]
        o = self.opts
        try:
            card = ModelCard.read(ref.path)
            data = (ref.path / "model.onnx").read_bytes()
        except (OSError, ValueError) as e:  # CardError included: an unreadable card
            raise ModelLoadError(f"{ref}: cannot read the model: {e}") from e
        digest = hashlib.sha256(data).hexdigest()
        if card.files.get("model.onnx") != digest:
            raise ModelLoadError(
                f"{ref}: model.onnx does not match the sha256 in its manifest (corrupted?)"
            )
        try:
            features = card.feature_manifest
            kind = get_kind(card.kind)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{ref}: its manifest is damaged: {e!r}") from e
        if features.schema_key() != o.live_schema:
            raise ModelLoadError(
                f"{ref}: trained on other features than the serving state computes"
            )
        try:
            sess = session(data, o.device, o.threads)
        except Exception as e:
            raise ModelLoadError(f"{ref}: ONNX Runtime cannot load model.onnx: {e}") from e
        served = ServedModel(
            ref.name, ref.version, card, digest, OnnxRunner(sess), kind.feeder(card)
        )
        if card.baseline is not None:
            try:
                base_ref = resolve(card.baseline, registry=ref.registry)
            except (FileNotFoundError, ValueError) as e:
                raise ModelLoadError(f"{ref}: its baseline cannot be found: {e}") from e
            if not (base_ref.path / "model.onnx").exists():
                raise ModelLoadError(f"{ref}: its baseline {base_ref} is not exported")
            served.baseline = self.load(base_ref)
        # Every model has its batcher, a baseline too (it serves on its own as well); a
        # re-ranker's batch calls its baseline's score_many directly, not its batcher.
        served.batcher = Batcher(
            served.score_many,
            o.batch_window_ms,
            o.max_batch,
            o.lanes,
            size=lambda f: len(f.num),
            max_rows=MAX_BATCH_ROWS,
        )
        self.cache[key] = served
        return served
