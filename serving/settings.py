"""Service settings, read once per process from ``RANKER_*`` environment variables.

``ranker serve`` sets them from its options before starting the workers, so every worker of
one server sees the same settings. Routes get them through the cached ``get_settings``
dependency (overridable in tests).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field


class Settings(BaseModel):
    registry: Path
    state: Path
    log_dir: Path = Path("runs/serve")
    store: Path | None = None  # shared SQLite store; default <log_dir>/store.sqlite
    experiment: Path | None = None
    isolate_variants: bool = False  # per-variant counters and histories (A/B experiments)
    default_model: str | None = None  # default: the latest "transformer", else any model
    admin_token: str | None = None  # POST /v1/models/reload needs "Authorization: Bearer <it>"
    max_candidates: int = Field(10_000, ge=1)
    max_history: int = Field(500, ge=0)
    max_body_bytes: int = Field(8 * 2**20, ge=1024)
    max_events: int = Field(10_000, ge=1)
    workers: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)  # ONNX Runtime intra-op threads per worker
    device: str = "auto"  # auto | cpu | cuda
    batch_window_ms: float | None = None  # None: 2 ms on a GPU, off on the CPU
    max_batch: int = Field(64, ge=1)
    log_rotate_bytes: int = Field(64 * 2**20, ge=1024)
    skip_inference: bool = False  # benchmarks only: answer with constant scores, no model call

    @property
    def store_path(self) -> Path:
        return self.store or self.log_dir / "store.sqlite"

    @property
    def intra_op_threads(self) -> int:
        """Threads per ONNX Runtime session. One by default: a request's model is too small to
        gain from splitting its operators (measured: 2 threads made a request 40% slower on two
        cores), and concurrent requests already run in parallel on the route thread pool and
        across workers."""
        return self.threads or 1

    def to_env(self) -> dict[str, str]:
        out = {}
        for key, value in self.model_dump().items():
            if value is not None:
                out[f"RANKER_{key.upper()}"] = str(value)
        return out

    @classmethod
    def from_env(cls) -> Settings:
        values: dict[str, str] = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"RANKER_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        if "admin_token" not in values and os.environ.get("RANKER_ADMIN_TOKEN"):
            values["admin_token"] = os.environ["RANKER_ADMIN_TOKEN"]
        missing = [k for k in ("registry", "state") if k not in values]
        if missing:
            raise RuntimeError(
                f"set {', '.join('RANKER_' + m.upper() for m in missing)} (or use `ranker serve`)"
            )
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
