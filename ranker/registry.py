"""The model registry: ``<registry>/<name>/<version>/`` with versions v1, v2, ... in training order.

A version directory holds ``manifest.json`` (the feature manifest, the training config, the data
fingerprint, metrics, the creation time, and its files with their sha256) and what training
needs to resume: ``checkpoint.pt`` (Transformer) or ``model.txt`` (LightGBM). ``ranker export``
adds ``model.onnx``. A version appears whole or not at all (written under a temporary name, then
renamed); ``NAME`` alone means the latest version. The layout maps one to one onto an object
store (keys ``name/version/file``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.io import write_json_atomic

if TYPE_CHECKING:
    from ranker.card import ModelCard

_VERSION = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelRef:
    registry: Path
    name: str
    version: str

    @property
    def path(self) -> Path:
        return self.registry / self.name / self.version

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    def card(self) -> ModelCard:
        from ranker.card import ModelCard

        return ModelCard.read(self.path)


def versions(registry: Path, name: str) -> list[str]:
    d = Path(registry) / name
    if not d.is_dir():
        return []
    found = [
        (int(m.group(1)), p.name)
        for p in d.iterdir()
        if p.is_dir() and (m := _VERSION.match(p.name))
    ]
    return [v for _, v in sorted(found)]


def resolve(spec: str | Path, registry: Path | None = None) -> ModelRef:
    """``REGISTRY/NAME[/VERSION]`` (or ``NAME[/VERSION]`` with ``registry``) -> a model version."""
    p = Path(spec)
    if registry is None:
        if _VERSION.match(p.name):
            registry, name, version = p.parent.parent, p.parent.name, p.name
        else:
            registry, name, version = p.parent, p.name, ""
    else:
        parts = p.parts
        name, version = parts[0], parts[1] if len(parts) > 1 else ""
    registry = Path(registry)
    if not (registry / name).is_dir():
        raise FileNotFoundError(f"no model named {name!r} in registry {registry}")
    if not version:
        found = versions(registry, name)
        if not found:
            raise FileNotFoundError(f"model {name!r} in {registry} has no version")
        version = found[-1]
    ref = ModelRef(registry, name, version)
    if not (ref.path / "manifest.json").exists():
        raise FileNotFoundError(f"{ref.path}: no such model version (or no manifest.json)")
    return ref


def resolve_in(spec: str | Path, registry: Path) -> ModelRef:
    """A reference as a path (``REGISTRY/NAME[/VERSION]``) or relative to ``registry``."""
    return resolve(spec) if Path(spec).is_dir() else resolve(spec, registry=registry)


def read_manifest(path: Path) -> dict[str, Any]:
    f = Path(path) / "manifest.json"
    if not f.exists():
        raise FileNotFoundError(f"{path}: no manifest.json")
    return dict(json.loads(f.read_text()))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def publish(registry: Path, name: str, build: Path, card: ModelCard) -> ModelRef:
    """Move the files in ``build`` into the next free version of ``name``, with its ``card``.

    The version directory is created by a rename, which fails if it exists: two trainings
    publishing at once get different versions, never a mixed directory.
    """
    if not _NAME.match(name):
        raise ValueError(f"bad model name {name!r}: letters, digits, '.', '_' and '-' only")
    root = Path(registry) / name
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for f in build.iterdir():
            shutil.move(str(f), staging / f.name)
        files = {f.name: sha256_file(f) for f in sorted(staging.iterdir())}
        while True:
            found = versions(registry, name)
            version = f"v{int(found[-1][1:]) + 1 if found else 1}"
            final = replace(
                card,
                name=name,
                version=version,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                files=files,
            )
            write_json_atomic(final.to_dict(), staging / "manifest.json")
            try:
                staging.rename(root / version)
                return ModelRef(Path(registry), name, version)
            except OSError:
                if not (root / version).exists():
                    raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def add_file(ref: ModelRef, name: str, data: bytes, onnx: dict[str, Any] | None = None) -> None:
    """Add a file to an existing version and record it (and ``onnx``, its export details) in
    the card, each atomically. A card of an older format is written back in the current one."""
    from ranker.card import ModelCard

    target = ref.path / name
    tmp = ref.path / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(target)
    card = ModelCard.read(ref.path)
    files = {**card.files, name: hashlib.sha256(data).hexdigest()}
    card = replace(card, files=files, onnx=onnx if onnx is not None else card.onnx)
    write_json_atomic(card.to_dict(), ref.path / "manifest.json")
