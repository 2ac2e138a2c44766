"""Served rankings and events, logged as JSON lines, one file series per worker, rotated, and
deleted by age and total size.

Files are ``<dir>/<kind>-<pid>-<start>-<n>.jsonl``: the start time in the name means a worker
that reuses a dead worker's pid never appends to its file (whose last line may be torn). A
file is closed and the next opened once it passes the size limit. One line per served
ranking or event: what the next training and the online A/B report read. A worker killed
mid-write leaves a torn last line; ``pipelines.io.read_jsonl`` skips such lines and counts
them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from serving.routing import Ranked

log = logging.getLogger(__name__)
BUSY_S = 120.0  # a file written within this long may still be open: never deleted


@dataclass(frozen=True)
class Retention:
    max_age_s: float
    max_bytes: int  # per kind, all workers together


class RotatingJsonl:
    def __init__(self, directory: Path, kind: str, max_bytes: int):
        self.directory = directory
        self.kind = kind
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._n = 0
        self._start = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._file: TextIO | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self) -> Path:
        return self.directory / f"{self.kind}-{os.getpid()}-{self._start}-{self._n:04d}.jsonl"

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                while self._path().exists():
                    self._n += 1
                self._file = self._path().open("a", encoding="utf-8")
            self._file.write(line)
            self._file.flush()
            if self._file.tell() >= self.max_bytes:
                self._file.close()
                self._file = None
                self._n += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def prune_logs(directory: Path, kind: str, keep: Retention, now: float | None = None) -> int:
    """Delete ``kind`` log files older than ``keep.max_age_s``, then the oldest until the rest
    fit in ``keep.max_bytes``; files written in the last ``BUSY_S`` are left alone (a worker
    may still be appending). Returns how many were deleted."""
    now = time.time() if now is None else now
    files = []
    for p in Path(directory).glob(f"{kind}-*.jsonl"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        files.append((st.st_mtime, st.st_size, p))
    files.sort()
    total = sum(size for _, size, _ in files)
    deleted = 0
    for mtime, size, p in files:
        if now - mtime < BUSY_S:
            break
        if now - mtime <= keep.max_age_s and total <= keep.max_bytes:
            break
        p.unlink(missing_ok=True)
        total -= size
        deleted += 1
    if deleted:
        log.info("deleted %d old %s log file(s)", deleted, kind)
    return deleted


def ranking_record(
    rid: str,
    t_us: int,
    user: str,
    query: str,
    context: dict[str, Any],
    experiment: str | None,
    ranked: Ranked,
    ids: list[str],
    top: list[int],
    took_ms: float,
) -> dict[str, Any]:
    """One served ranking's log line: what the next training and the online report read."""
    return {
        "request_id": rid,
        "t_us": t_us,
        "user_id": user,
        "query": query,
        "context": context,
        "experiment": experiment,
        "variant": ranked.variant,
        "model": ranked.model.name,
        "version": ranked.model.version,
        "items": [ids[i] for i in top],
        # Seven significant digits are all a float32 score has.
        "scores": [float(f"{ranked.scores[i]:.7g}") for i in top],
        "teams": ranked.teams[: len(top)] if ranked.teams else None,
        # The candidates only when top_k cut the list: otherwise they are the items.
        "candidates": ids if len(top) < len(ids) else None,
        "took_ms": round(took_ms, 3),
    }
