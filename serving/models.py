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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.features.transforms import Features
from pipelines.lists.manifest import Manifest
from ranker.inputs import baseline_inputs, lgbm_columns, lgbm_matrix
from ranker.registry import ModelRef, read_manifest, resolve, versions
from serving.runtime import (
    Device,
    LgbmRunner,
    MicroBatcher,
    TransformerInput,
    TransformerRunner,
    session,
)

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    pass


@dataclass
class ServedModel:
    name: str
    version: str
    kind: str
    sha256: str
    manifest: dict[str, Any]
    lgbm: LgbmRunner | None = None
    transformer: TransformerRunner | None = None
    batcher: MicroBatcher | None = None
    baseline: ServedModel | None = None
    keep_cat: list[int] = field(default_factory=list)

    def score(self, f: Features) -> np.ndarray:
        """Scores of one request's candidates (features from the live featuriser)."""
        num = f.num
        if self.baseline is not None:
            base = self.baseline.score(f)
            num = np.concatenate([num, baseline_inputs(base, np.array([0, len(base)]))], axis=1)
        if self.lgbm is not None:
            return self.lgbm.score(lgbm_matrix(num, f.cat, self.keep_cat))
        item = TransformerInput(
            num.astype(np.float32),
            f.cat.astype(np.int64),
            f.hist_num.astype(np.float32),
            f.hist_cat.astype(np.int64),
        )
        if self.batcher is not None:
            return self.batcher.score(item)
        assert self.transformer is not None
        return self.transformer.score(item)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


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
            m = read_manifest(ref.path)
            data = (ref.path / "model.onnx").read_bytes()
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{ref}: cannot read the model: {e}") from e
        digest = hashlib.sha256(data).hexdigest()
        if m.get("files", {}).get("model.onnx") != digest:
            raise ModelLoadError(
                f"{ref}: model.onnx does not match the sha256 in its manifest (corrupted?)"
            )
        try:
            features = Manifest.from_dict(m["features"])
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
        served = ServedModel(ref.name, ref.version, m["kind"], digest, m)
        if m["kind"] == "lgbm":
            served.lgbm = LgbmRunner(sess)
            _, served.keep_cat, _ = lgbm_columns(
                features, [f["name"] for f in m.get("extra_numeric", [])]
            )
        else:
            served.transformer = TransformerRunner(sess)
        if m.get("reranker"):
            try:
                base_ref = resolve(m["reranker"]["baseline"], registry=ref.registry)
            except (FileNotFoundError, ValueError) as e:
                raise ModelLoadError(f"{ref}: its baseline cannot be found: {e}") from e
            if not (base_ref.path / "model.onnx").exists():
                raise ModelLoadError(f"{ref}: its baseline {base_ref} is not exported")
            served.baseline = self.load(base_ref)
        if served.transformer is not None and o.batch_window_ms > 0:
            served.batcher = MicroBatcher(served.transformer, o.batch_window_ms, o.max_batch)
        self.cache[key] = served
        return served
