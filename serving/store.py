"""The store shared by all workers of one server: SQLite in WAL mode on the local disk.

It is an append-only log: the requests served (so an event can find its query and time) and
the events posted (impressions, clicks, orders), plus a control table whose ``generation``
counter tells workers to reload their models. Each worker keeps its own in-memory feature
state and replays new events from the log before it featurises a request, so an event posted
to one worker is seen by all. On several machines a networked store (Redis, a queue) would take
this module's place; the rest of the service would not change.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, query TEXT NOT NULL, t_us INTEGER NOT NULL,
    variant TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, request_id TEXT NOT NULL,
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, position INTEGER, t_us INTEGER NOT NULL,
    query TEXT NOT NULL, variant TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS control (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class EventRow:
    id: int
    type: str  # impression | click | order
    request_id: str
    user_id: str
    item_id: str
    position: int | None
    t_us: int
    query: str
    variant: str  # of the request that showed the item ('' when unknown)


class SharedStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- control ---------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM control WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES (?, ?)", (key, value)
            )

    def generation(self) -> int:
        return int(self.get("generation", "0") or 0)

    def bump_generation(self) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT value FROM control WHERE key = 'generation'").fetchone()
            new = int(row[0]) + 1 if row else 1
            self._db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES ('generation', ?)", (str(new),)
            )
            self._db.execute("COMMIT")
        return new

    def reset_for(self, snapshot: str) -> None:
        """Start afresh when the state snapshot changed: old events belong to the old one."""
        if self.get("snapshot") == snapshot:
            return
        with self._lock:
            self._db.execute("DELETE FROM requests")
            self._db.execute("DELETE FROM events")
            self._db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES ('snapshot', ?)", (snapshot,)
            )

    # ---- requests and events ---------------------------------------------------------------
    def record_request(
        self, request_id: str, user_id: str, query: str, t_us: int, variant: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO requests (request_id, user_id, query, t_us, variant) "
                "VALUES (?, ?, ?, ?, ?)",
                (request_id, user_id, query, t_us, variant),
            )

    def request_info(self, request_ids: list[str]) -> dict[str, tuple[str, int, str]]:
        """request_id -> (query, t_us, variant) for the known ones."""
        out: dict[str, tuple[str, int, str]] = {}
        with self._lock:
            for rid in set(request_ids):
                row = self._db.execute(
                    "SELECT query, t_us, variant FROM requests WHERE request_id = ?", (rid,)
                ).fetchone()
                if row:
                    out[rid] = (row[0], int(row[1]), row[2])
        return out

    def add_events(
        self, rows: Sequence[tuple[str, str, str, str, int | None, int, str, str]]
    ) -> None:
        """Append (type, request_id, user_id, item_id, position, t_us, query, variant) rows."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO events (type, request_id, user_id, item_id, position, t_us, query, "
                "variant) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute("COMMIT")

    def events_since(self, last_id: int, limit: int = 100_000) -> list[EventRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, type, request_id, user_id, item_id, position, t_us, query, variant "
                "FROM events "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, limit),
            ).fetchall()
        return [EventRow(*r) for r in rows]

    def last_event_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)
