"""Service settings, read once per process from ``RANKER_*`` environment variables.

``ranker serve`` derives one command-line flag per field (``--max-candidates`` for
``max_candidates``; help from the description) and passes the values to every worker as
``RANKER_<NAME>``, so every worker of one server sees the same settings. Secrets (the tokens)
have no flag: a flag would show in the process list. Routes get the settings through the
cached ``get_settings`` dependency (overridable in tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic.config import JsonDict

MIB = 2**20
SECRET: JsonDict = {"secret": True}  # no command-line flag; environment only


@dataclass(frozen=True)
class Concurrency:
    batch_window_ms: float  # a batch's longest wait for requests still being featurised
    lanes: int  # batches scored at once per model
    rank_threads: int  # rankings computed at once (the rank route's own threads)


class Settings(BaseModel):
    # ---- what to serve ---------------------------------------------------------------------
    registry: Path = Field(description="the model registry")
    state: Path = Field(description="the state `ranker features` wrote")
    log_dir: Path = Field(
        Path("runs/serve"), description="served rankings, events, the shared store"
    )
    store: str | None = Field(
        None,
        description="the shared store: a SQLite file (LOG_DIR/store.sqlite) for the workers of "
        "one machine, or redis://HOST:PORT/DB for replicas on several",
    )
    experiment: Path | None = Field(None, description="an A/B experiment file (TOML)")
    isolate_variants: bool = Field(
        False, description="per-variant counters and histories, so A/B variants cannot interfere"
    )
    default_model: str | None = Field(
        None, description="model served without an experiment (default: transformer)"
    )
    workers: int = Field(1, ge=1, description="worker processes")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="ONNX Runtime device")
    threads: int | None = Field(
        None,
        ge=1,
        description="ONNX Runtime threads per model session (1; requests run in parallel)",
    )
    batch_window_ms: float | None = Field(
        None,
        ge=0,
        description="longest wait of a batch for requests still being featurised (default: 2 "
        "on a GPU, 0 on the CPU); a lone request never waits",
    )
    max_batch: int = Field(64, ge=1, description="requests per batched model call at most")
    rank_threads: int | None = Field(
        None,
        ge=1,
        description="rankings computed at once per worker; more wait their turn within their "
        "deadline (default: 2 per core of the worker on the CPU, max_batch on a GPU)",
    )
    skip_inference: bool = Field(
        False, description="benchmarks only: answer with constant scores, no model call"
    )
    # ---- credentials -----------------------------------------------------------------------
    admin_token: str | None = Field(
        None, description="bearer token of POST /v1/models/reload", json_schema_extra=SECRET
    )
    client_token: str | None = Field(
        None,
        description="bearer token of /v1/events and /v1/users/{id}/history",
        json_schema_extra=SECRET,
    )
    client_tokens_file: Path | None = Field(
        None, description="a file of client tokens, one per line (# comments)"
    )
    insecure_open: bool = Field(
        False,
        description="serve /v1/events and user histories to anyone, without a client token",
    )
    # ---- what events and times are accepted ------------------------------------------------
    accept_unserved_events: bool = Field(
        False,
        description="accept events of rankings this server did not serve (imports from elsewhere)",
    )
    max_clock_skew_s: float = Field(
        300, ge=0, description="how far ahead of the server clock a ts may be, in seconds"
    )
    served_ttl_s: float = Field(
        2 * 86400,
        gt=0,
        description="how long a served ranking accepts events, in seconds; older ones are deleted",
    )
    max_served_rows: int = Field(
        5_000_000, ge=1, description="served rankings kept for event checks; the oldest go first"
    )
    # ---- limits ----------------------------------------------------------------------------
    # 1,000 candidates: 55 ms median and +74 MB peak for one request on two cores with the
    # demo's Transformer re-ranker; 3,000: 0.25 s, +618 MB; 5,000: 0.6 s, +1.65 GB (the list
    # attention is quadratic). benchmarks/candidate_limit.py; at most max(2, cores) requests
    # score at once per worker, which bounds the memory that many large requests can take.
    max_candidates: int = Field(1000, ge=1, description="candidates per ranking at most")
    max_history: int = Field(500, ge=0, description="history events per ranking at most")
    max_body_bytes: int = Field(8 * MIB, ge=1024, description="request body size at most")
    max_events: int = Field(10_000, ge=1, description="events per call at most")
    max_in_flight: int = Field(
        64, ge=1, description="requests in flight per worker; more get 503 with Retry-After"
    )
    deadline_ms: float = Field(
        2000,
        gt=0,
        description="a request still waiting this long after it arrived gets 503 instead",
    )
    # ---- state bounds, durability, retention -----------------------------------------------
    max_history_users: int = Field(
        1_000_000,
        ge=1,
        description="users whose click history a worker keeps; the least recent are evicted",
    )
    max_counter_keys: int = Field(
        5_000_000,
        ge=1,
        description="keys per counter table a worker keeps; the least recently counted are evicted",
    )
    counter_cache_keys: int = Field(
        100_000,
        ge=0,
        description="a Redis replica's counter keys kept for the current clock bucket, where "
        "they cannot change (0: read every key every time)",
    )
    checkpoint_every_s: float = Field(
        600,
        gt=0,
        description="how often the live state is checkpointed so that old events can be deleted",
    )
    log_rotate_bytes: int = Field(64 * MIB, ge=1024, description="size of one JSONL log file")
    log_retention_days: float = Field(
        7, gt=0, description="rotated logs older than this are deleted"
    )
    log_max_bytes: int = Field(
        5 * 1024 * MIB, ge=1024, description="rotated logs of each kind beyond this are deleted"
    )
    min_free_disk_bytes: int = Field(
        64 * MIB, ge=0, description="not ready while the store's disk has less free space"
    )

    @model_validator(mode="after")
    def _credentials(self) -> Settings:
        if not (self.insecure_open or self.client_token or self.client_tokens_file):
            raise ValueError(
                "no client token: set RANKER_CLIENT_TOKEN or --client-tokens-file, or pass "
                "--insecure-open to serve events and user histories without credentials"
            )
        return self

    @property
    def store_is_redis(self) -> bool:
        return bool(self.store) and str(self.store).startswith(("redis://", "rediss://", "unix://"))

    @property
    def store_path(self) -> Path:
        """The SQLite store's file (meaningless with a Redis store)."""
        return (
            Path(self.store)
            if self.store and not self.store_is_redis
            else (self.log_dir / "store.sqlite")
        )

    @property
    def intra_op_threads(self) -> int:
        """Threads per ONNX Runtime session. One by default: a request's model is too small to
        gain from splitting its operators (measured: 2 threads made a request 40% slower on two
        cores), and concurrent requests already run in parallel on the route thread pool and
        across workers."""
        return self.threads or 1

    def concurrency(self, cuda: bool) -> Concurrency:
        """How a worker spreads its requests, on a GPU or on the CPU."""
        window = self.batch_window_ms
        cores = max(1, (os.cpu_count() or 1) // self.workers)
        return Concurrency(
            batch_window_ms=(2.0 if cuda else 0.0) if window is None else window,
            # One lane (one session call at a time) per model on a GPU; on the CPU one per
            # core this worker may use, so batches still use every core (serving.inference).
            lanes=1 if cuda else cores,
            # More Python threads than cores only queue on the GIL: on two cores, 2 workers at
            # concurrency 16, 2 threads a worker against 40, four interleaved rounds: req/s
            # equal within the rounds' spread (458-500 vs 470-538), p99 58-83 ms vs 98-117 ms.
            # A GPU batches what is in flight, so there as many as one batch holds.
            rank_threads=self.rank_threads or (self.max_batch if cuda else 2 * cores),
        )

    @staticmethod
    def env_name(field: str) -> str:
        return f"RANKER_{field.upper()}"

    def to_env(self) -> dict[str, str]:
        return {
            self.env_name(key): str(value)
            for key, value in self.model_dump().items()
            if value is not None
        }

    @classmethod
    def from_env(cls) -> Settings:
        values: dict[str, str] = {}
        for name in cls.model_fields:
            raw = os.environ.get(cls.env_name(name))
            if raw is not None and raw != "":
                values[name] = raw
        missing = [k for k in ("registry", "state") if k not in values]
        if missing:
            raise RuntimeError(
                f"set {', '.join(cls.env_name(m) for m in missing)} (or use `ranker serve`)"
            )
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
