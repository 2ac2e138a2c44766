"""The models a server holds: every registry model that has ``model.onnx`` and whose features
match the live feature state, loaded into ONNX Runtime, verified and warmed up.

A model is refused (and the old set keeps serving) when its file's sha256 differs from its
manifest, when ONNX Runtime cannot load it, or when it was trained on other features than the
state computes. A re-ranker brings the exact baseline version it was trained over.
"""

from __future__ import annotations

import hashlib
import logging
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

    def get(self, name: str) -> ServedModel | None:
        return self.models.get(name)

    def close(self) -> None:
        for m in self.models.values():
            m.close()


def load_model_set(
    registry: Path,
    live_schema: dict[str, Any],
    device: Device,
    threads: int,
    default: str | None = None,
    batch_window_ms: float = 0.0,
    max_batch: int = 64,
    warmup: Features | None = None,
) -> ModelSet:
    """Load the latest exported version of every model in the registry. Raises
    ``ModelLoadError`` naming the first model that cannot serve."""
    names = sorted(
        p.name for p in Path(registry).iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    loaded: dict[str, ServedModel] = {}
    cache: dict[str, ServedModel] = {}
    for name in names:
        exported = [
            v
            for v in versions(registry, name)
            if (Path(registry) / name / v / "model.onnx").exists()
        ]
        if not exported:
            log.info("model %s has no exported version; not served", name)
            continue
        ref = resolve(f"{name}/{exported[-1]}", registry=registry)
        loaded[name] = _load(ref, live_schema, device, threads, cache, batch_window_ms, max_batch)
    if not loaded:
        raise ModelLoadError(f"no exported model in {registry} (run `ranker export`)")
    chosen = default or ("transformer" if "transformer" in loaded else sorted(loaded)[0])
    if chosen not in loaded:
        raise ModelLoadError(
            f"default model {chosen!r} is not among the loaded ones {sorted(loaded)}"
        )
    if warmup is not None:
        for m in loaded.values():
            for _ in range(3):
                m.score(warmup)
    return ModelSet(loaded, chosen)


def _load(
    ref: ModelRef,
    live_schema: dict[str, Any],
    device: Device,
    threads: int,
    cache: dict[str, ServedModel],
    window_ms: float,
    max_batch: int,
) -> ServedModel:
    key = str(ref)
    if key in cache:
        return cache[key]
    m = read_manifest(ref.path)
    path = ref.path / "model.onnx"
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if m.get("files", {}).get("model.onnx") != digest:
        raise ModelLoadError(
            f"{ref}: model.onnx does not match the sha256 in its manifest (corrupted?)"
        )
    features = Manifest.from_dict(m["features"])
    if features.schema_key() != live_schema:
        raise ModelLoadError(f"{ref}: trained on other features than the serving state computes")
    try:
        sess = session(data, device, threads)
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
        if window_ms > 0:
            served.batcher = MicroBatcher(served.transformer, window_ms, max_batch)
    if m.get("reranker"):
        base_ref = resolve(m["reranker"]["baseline"], registry=ref.registry)
        if not (base_ref.path / "model.onnx").exists():
            raise ModelLoadError(f"{ref}: its baseline {base_ref} is not exported")
        served.baseline = _load(base_ref, live_schema, device, threads, cache, window_ms, max_batch)
    cache[key] = served
    return served
