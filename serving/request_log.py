"""Served rankings and events, logged as JSON lines, one file series per worker, rotated.

Files are ``<dir>/<kind>-<pid>-<n>.jsonl``; a file is closed and the next opened once it
passes the size limit. One line per served ranking or event: what the next training and the
online A/B report read.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, TextIO


class RotatingJsonl:
    def __init__(self, directory: Path, kind: str, max_bytes: int):
        self.directory = directory
        self.kind = kind
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._n = 0
        self._file: TextIO | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self) -> Path:
        return self.directory / f"{self.kind}-{os.getpid()}-{self._n:04d}.jsonl"

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                while self._path().exists() and self._path().stat().st_size >= self.max_bytes:
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


def read_jsonl(directory: Path, kind: str) -> list[dict[str, Any]]:
    """Every record of one kind under ``directory`` (all workers, all rotations)."""
    out = []
    for path in sorted(Path(directory).glob(f"{kind}-*.jsonl")):
        with path.open(encoding="utf-8") as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out
