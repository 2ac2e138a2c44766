"""The store shared by all workers of one server: SQLite in WAL mode on the local disk.

It holds the rankings served (so an event can be checked against its ranking and find its
query, time and variant), the events posted (impressions, clicks, orders), a ``workers`` table
(each worker's generation, model versions and progress, for /v1/models and for deciding which
events every worker has applied) and a ``control`` table (the reload generation, the pinned
model versions, the latest state checkpoint). Each worker keeps its own in-memory feature state
and replays new events from here, so an event posted to one worker is seen by all.

Every write runs in one transaction that is rolled back on any error, so a failed write
(a full disk, a value SQLite refuses) never leaves the database locked for other workers.
On several machines a networked store (Redis) would take this module's place.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from serving.event_hint import EventHint
from serving.store_rows import (
    SEP,
    EventRow,
    NewEvent,
    Poll,
    Served,
    ServedRanking,
    StoreError,
    WorkerRow,
    now_us,
)

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
CREATE TABLE IF NOT EXISTS workers (
    pid INTEGER PRIMARY KEY, started_us INTEGER NOT NULL, seen_us INTEGER NOT NULL,
    generation INTEGER NOT NULL, last_event INTEGER NOT NULL, models TEXT NOT NULL
);
"""
# Columns added after the first release: an older store gains them in place.
ADDED_COLUMNS = {
    "requests": {
        "candidates": "TEXT NOT NULL DEFAULT ''",
        "created_us": "INTEGER NOT NULL DEFAULT 0",
    },
    "events": {"key": "TEXT"},  # the idempotency key; NULL: none (stored every time)
}
INDEXES = """
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_us);
CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (key);
"""
BUSY_TIMEOUT_S = 5.0  # the longest a writer waits for another; transactions last milliseconds


class SharedStore:
    shares_files = True  # every worker is on this machine: checkpoints on disk are shared

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
        )
        try:
            self._enter_wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot open the store: {e}") from e
        with self._tx() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, columns in ADDED_COLUMNS.items():
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, decl in columns.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            for statement in INDEXES.split(";"):
                if statement.strip():
                    db.execute(statement)

        self._hint = EventHint(path.with_name(path.name + ".events"))

    def _enter_wal(self) -> None:
        """Switch a new file to WAL, retrying while another worker does the same.

        SQLite answers "database is locked" at once here, without calling the busy handler,
        when several workers open a fresh file together (seen in about 40% of rounds of three
        processes), and uvicorn (0.54 here) stops the server when one worker fails its startup."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.005
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._hint.close()

    def worker_id(self, pid: int) -> int:
        return pid  # one machine: the pid is unique among live workers

    def alive(self, worker: int) -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: alive
            return True
        return True

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed at the end, rolled back on any error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"cannot start a write: {e}") from e
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"write failed and was rolled back: {e}") from e
                raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"read failed: {e}") from e

    # ---- control ---------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        rows = self._read("SELECT value FROM control WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO control (key, value) VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        return int(self.get("generation", "0") or 0)

    def pinned_models(self) -> dict[str, str] | None:
        """The model versions the server last loaded successfully (name -> version)."""
        raw = self.get("models")
        return None if raw is None else dict(json.loads(raw))

    def publish_models(self, versions: dict[str, str], bump: bool) -> int:
        """Pin ``versions`` (and with ``bump`` start a new generation, which every worker
        follows), in one transaction. Returns the generation."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM control WHERE key = 'generation'").fetchone()
            gen = int(row[0]) if row else 0
            gen += 1 if bump else 0
            db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES ('generation', ?)", (str(gen),)
            )
            db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES ('models', ?)",
                (json.dumps(versions, sort_keys=True),),
            )
        return gen

    def reset_for(self, snapshot: str) -> bool:
        """Start afresh when the state snapshot changed: old events belong to the old one.
        Returns whether it did."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM control WHERE key = 'snapshot'").fetchone()
            if row and row[0] == snapshot:
                return False
            db.execute("DELETE FROM requests")
            db.execute("DELETE FROM events")
            self._hint.publish(0)
            db.execute("DELETE FROM control WHERE key = 'checkpoint'")
            db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES ('snapshot', ?)", (snapshot,)
            )
        return True

    def probe(self) -> None:
        """A small real write: raises ``StoreError`` when the store cannot be written."""
        self.set("probe", str(now_us()))

    # ---- requests and events ---------------------------------------------------------------
    def record_request(self, ranking: ServedRanking) -> bool:
        """Store a served ranking. A request id already served to the same user is replaced
        (a client's retry); one served to another user is left alone and False returned, so
        no client can take over another user's ranking and its events."""
        with self._tx() as db:
            done = db.execute(
                "INSERT INTO requests (request_id, user_id, query, t_us, variant, candidates, "
                "created_us) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
                "query = excluded.query, t_us = excluded.t_us, variant = excluded.variant, "
                "candidates = excluded.candidates, created_us = excluded.created_us "
                "WHERE requests.user_id = excluded.user_id",
                (*ranking.fields(), now_us()),
            )
            if done.rowcount == 1:
                self._hint.publish_clock(ranking.t_us)  # inside the write lock: see EventHint
            return done.rowcount == 1

    def served(self, request_ids: Sequence[str]) -> dict[str, Served]:
        """The stored rankings among ``request_ids``."""
        out: dict[str, Served] = {}
        for rid in set(request_ids):
            for user, query, t_us, variant, cands in self._read(
                "SELECT user_id, query, t_us, variant, candidates FROM requests "
                "WHERE request_id = ?",
                (rid,),
            ):
                items = cands.split(SEP) if cands else []
                out[rid] = Served(user, query, int(t_us), variant, frozenset(items), len(items))
        return out

    def add_events(
        self, rows: Sequence[NewEvent], effects: Sequence[str] | None = None
    ) -> list[bool]:
        """Append events, all or none; per row, whether it was new (False: its idempotency key
        was already stored, a retry). ``effects``: only Redis applies state writes with them."""
        if effects is not None:
            raise ValueError("the SQLite store keeps no state: its workers replay the events")
        fresh = []
        with self._tx() as db:
            for *row, key in rows:
                # Looked up first rather than INSERT OR IGNORE, which would use up an id.
                seen = key and db.execute("SELECT 1 FROM events WHERE key = ?", (key,)).fetchone()
                if not seen:
                    db.execute(
                        "INSERT INTO events (type, request_id, user_id, item_id, position, t_us, "
                        "query, variant, key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*row, key or None),
                    )
                fresh.append(not seen)
            # Inside the write transaction: writers are serialised, so the hint only grows
            # (a reader that sees it before the commit just reads again on its next call).
            self._hint.publish(int(db.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0))
        return fresh

    def poll(self, last_id: int) -> Poll:
        """Without a query: a ranking checks this instead of asking SQLite on every request
        (measured: 8% of a worker's busy time)."""
        return Poll(self._hint.read() > last_id, self._hint.clock())

    def events_since(self, last_id: int, limit: int = 100_000) -> list[EventRow]:
        rows = self._read(
            "SELECT id, type, request_id, user_id, item_id, position, t_us, query, variant "
            "FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (last_id, limit),
        )
        return [EventRow(*r) for r in rows]

    def last_event_id(self) -> int:
        return int(self._read("SELECT MAX(id) FROM events")[0][0] or 0)

    # ---- workers, leases, checkpoints ------------------------------------------------------
    def register_worker(self, worker: int, started_us: int) -> str | None:
        """Register a starting worker and read the latest checkpoint in one transaction: the
        worker's row holds back the deletion of the events after that checkpoint, which it
        has yet to replay. Returns the checkpoint (JSON) or None."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM control WHERE key = 'checkpoint'").fetchone()
            raw = row[0] if row else None
            event_id = int(json.loads(raw)["event_id"]) if raw else 0
            db.execute(
                "INSERT OR REPLACE INTO workers (pid, started_us, seen_us, generation, "
                "last_event, models) VALUES (?, ?, ?, 0, ?, '{}')",
                (worker, started_us, now_us(), event_id),
            )
        return raw

    def claim(self, name: str, worker: int, ttl_s: float) -> bool:
        """Take the lease ``name`` for ``ttl_s`` if it is free, expired or already ours: one
        worker of the server does a periodic job (retention, checkpoints) at a time."""
        key = f"lease:{name}"
        t = now_us()
        with self._tx() as db:
            row = db.execute("SELECT value FROM control WHERE key = ?", (key,)).fetchone()
            if row:
                owner, until = (int(x) for x in row[0].split(":"))
                if owner != worker and until > t:
                    return False
            db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES (?, ?)",
                (key, f"{worker}:{t + int(ttl_s * 1e6)}"),
            )
        return True

    def set_checkpoint(self, raw: str, event_id: int) -> bool:
        """Point at a new checkpoint unless a newer one is already named."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM control WHERE key = 'checkpoint'").fetchone()
            if row and int(json.loads(row[0])["event_id"]) >= event_id:
                return False
            db.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES ('checkpoint', ?)", (raw,)
            )
        return True

    def heartbeat(
        self,
        worker: int,
        started_us: int,
        generation: int,
        last_event: int,
        models: dict[str, str],
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers (pid, started_us, seen_us, generation, "
                "last_event, models) VALUES (?, ?, ?, ?, ?, ?)",
                (worker, started_us, now_us(), generation, last_event, json.dumps(models)),
            )

    def workers(self) -> list[WorkerRow]:
        rows = self._read(
            "SELECT pid, seen_us, generation, last_event, models FROM workers ORDER BY pid"
        )
        return [WorkerRow(p, s, g, e, json.loads(m)) for p, s, g, e, m in rows]

    def forget_worker(self, worker: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE pid = ?", (worker,))

    # ---- retention -------------------------------------------------------------------------
    def prune(
        self,
        served_before_us: int,
        max_served: int,
        events_upto: int,
        workers_before_us: int,
        chunk: int = 5000,
    ) -> int:
        """Delete rankings stored before ``served_before_us`` or beyond the newest
        ``max_served``, events with id <= ``events_upto`` (every worker and the latest
        checkpoint hold them) and the rows of workers not seen since ``workers_before_us``.
        In small transactions, so no other writer waits long. Returns the rows deleted."""
        newest = self._read(
            "SELECT created_us FROM requests ORDER BY created_us DESC LIMIT 1 OFFSET ?",
            (max_served,),
        )
        cutoff = max(served_before_us, int(newest[0][0]) + 1 if newest else 0)
        deleted = 0
        for sql, arg in (
            (
                "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests "
                "WHERE created_us < ? LIMIT ?)",
                cutoff,
            ),
            (
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? LIMIT ?)",
                events_upto,
            ),
        ):
            while True:
                with self._tx() as db:
                    n = db.execute(sql, (arg, chunk)).rowcount
                deleted += n
                if n < chunk:
                    break
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE seen_us < ?", (workers_before_us,))
        return deleted

    def counts(self) -> dict[str, int]:
        return {
            table: int(self._read(f"SELECT COUNT(*) FROM {table}")[0][0])
            for table in ("requests", "events", "workers")
        }
