"""Small file helpers shared by every job: atomic writes and table readers.

Every output is written under a temporary name in the same directory and renamed into place,
so an interrupted run never leaves a file (or a directory) that looks complete. Temporary
names carry the host and process that made them (``.NAME.HOST.pidPID.RANDOM.tmp``), so the
next run can tell what a dead run left behind and remove it (``remove_dead_scratch``); a
killed ``ranker features`` once left 14 such entries, 788 MB.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_SCRATCH = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9_-]+)\.pid(?P<pid>\d+)\.[^.]*\.(?:tmp|old)$")


def scratch_prefix(name: str) -> str:
    """The start of a temporary name for ``name``, tagged with this host and process."""
    return f".{name}.{_HOST}.pid{os.getpid()}."


def remove_dead_scratch(directory: Path) -> int:
    """Remove the temporary files and directories that processes of this host which are no
    longer running left in ``directory``. Returns how many entries were removed."""
    removed = 0
    if not Path(directory).is_dir():
        return 0
    for entry in Path(directory).iterdir():
        m = _SCRATCH.match(entry.name)
        if m is None or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("removed %d temporary entries left by dead runs in %s", removed, directory)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{scratch_prefix(path.name)}{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(obj: Any, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n", path)


def write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=scratch_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` whole.

    On an exception the temporary directory is removed and ``final`` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=scratch_prefix(final.name), suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            trash = final.with_name(f"{scratch_prefix(final.name)}{uuid.uuid4().hex}.old")
            final.replace(trash)
            tmp.replace(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.replace(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class JsonlRecords:
    records: list[dict[str, Any]]
    bad_lines: int  # torn (a writer killed mid-line) or otherwise unreadable: skipped


def read_jsonl(directory: Path, kind: str) -> JsonlRecords:
    """Every record of the ``<kind>-*.jsonl`` files in ``directory`` (a server's logs: all
    workers, all rotations), skipping and counting lines that do not parse."""
    out: list[dict[str, Any]] = []
    bad = 0
    for path in sorted(Path(directory).glob(f"{kind}-*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if isinstance(record, dict):
                    out.append(record)
                else:
                    bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable %s line(s) (torn writes?)", directory, bad, kind)
    return JsonlRecords(out, bad)
