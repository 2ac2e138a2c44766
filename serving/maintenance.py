"""A worker's background duties, once a second on a thread of its own: keep the state current
even when idle, follow reloads made through other workers, report itself (/v1/models shows
every worker's versions), check that the store can be written (``/readyz``), and, one worker
of the server at a time, delete what retention allows and checkpoint the state.

No duty can stop the others or the thread: each failure is logged (once per kind of failure
until it recovers) and the next tick tries again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving import metrics
from serving.live_state import Checkpoint, LiveState, remove_old_checkpoints
from serving.request_log import Retention, prune_logs
from serving.store_rows import StoreError, WorkerRow, now_us
from serving.stores import Store

if TYPE_CHECKING:
    from serving.service import Service

log = logging.getLogger(__name__)
TICK_S = 1.0
RETENTION_EVERY_S = 60.0
WORKER_TIMEOUT_S = 600.0  # a worker not seen for this long no longer holds events back
LIVE_WORKER_S = 10.0  # a worker seen within this long is listed as live in /v1/models


@dataclass
class Health:
    """Whether this worker can write the shared store (``/readyz``)."""

    ok: bool = True
    reason: str = ""

    def failed(self, reason: str) -> None:
        if self.ok:
            log.error("store unavailable, not ready: %s", reason)
        self.ok, self.reason = False, reason

    def recovered(self) -> None:
        if not self.ok:
            log.warning("store writable again, ready")
        self.ok, self.reason = True, ""


class Maintenance:
    def __init__(self, service: Service):
        self.service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)
        self._last_retention = 0.0
        self._failing: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self.tick()

    def tick(self) -> None:
        for duty in (self.sync, self.follow, self.heartbeat, self.check_store, self.retain):
            name = duty.__name__
            try:
                duty()
                self._failing.discard(name)
            except Exception:
                if name not in self._failing:  # once per failure, not once a second
                    log.exception("maintenance: %s failed", name)
                self._failing.add(name)

    # ---- duties ----------------------------------------------------------------------------
    def sync(self) -> None:
        live = self.service.live
        live.sync(self.service.store)
        for table, n in live.sizes().items():
            metrics.STATE_SIZE.labels(table).set(n)
        for table, n in live.evicted.items():
            metrics.EVICTED.labels(table).set(n)

    def follow(self) -> None:
        self.service.models.follow()

    def heartbeat(self) -> None:
        s = self.service
        s.store.heartbeat(
            s.pid, s.started_us, s.models.generation, s.live.last_event, s.models.versions()
        )

    def check_store(self) -> None:
        s = self.service
        free = shutil.disk_usage(s.settings.store_path.parent).free
        if s.store.shares_files and free < s.settings.min_free_disk_bytes:
            s.health.failed(
                f"{free // 2**20} MB free on the store's disk "
                f"(at least {s.settings.min_free_disk_bytes // 2**20} MB needed)"
            )
            return
        try:
            s.store.probe()
        except StoreError as e:
            s.health.failed(str(e))
            return
        s.health.recovered()

    def retain(self) -> None:
        """Retention and checkpoints, by whichever worker holds the lease."""
        if time.monotonic() - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = time.monotonic()
        s, cfg = self.service, self.service.settings
        if not s.store.claim("retention", s.pid, RETENTION_EVERY_S * 2):
            return
        self.checkpoint_if_due()
        keep = Retention(cfg.log_retention_days * 86400, cfg.log_max_bytes)
        for kind in ("rankings", "events"):
            prune_logs(cfg.log_dir, kind, keep)
        now = now_us()
        cp = Checkpoint.from_json(s.store.get("checkpoint"), cfg.log_dir)
        live = [w for w in s.store.workers() if w.seen_us >= now - int(WORKER_TIMEOUT_S * 1e6)]
        upto = min([cp.event_id if cp else 0] + [w.last_event for w in live])
        deleted = s.store.prune(
            served_before_us=now - int(cfg.served_ttl_s * 1e6),
            max_served=cfg.max_served_rows,
            events_upto=upto,
            workers_before_us=now - int(WORKER_TIMEOUT_S * 1e6),
        )
        if deleted:
            log.info("retention: deleted %d store rows (events up to id %d)", deleted, upto)

    def checkpoint_if_due(self, force: bool = False) -> Checkpoint | None:
        s, cfg = self.service, self.service.settings
        if not s.store.shares_files or not isinstance(s.live, LiveState):
            # Replicas on other machines cannot read this one's disk: none checkpoints, and
            # events stay in the store until a new snapshot (each replica replays them at start).
            return None
        raw = s.store.get("checkpoint")
        cp = Checkpoint.from_json(raw, cfg.log_dir)
        age_s = (now_us() - (cp.created_us if cp else s.started_us)) / 1e6
        if not force and (
            age_s < cfg.checkpoint_every_s or s.live.last_event <= (cp.event_id if cp else 0)
        ):
            return None
        new = s.live.save_checkpoint(cfg.log_dir / "checkpoints")
        if s.store.set_checkpoint(new.to_json(cfg.log_dir), new.event_id):
            # Keep the one before too: a worker starting right now may be loading it.
            if cp is not None:
                remove_old_checkpoints(cfg.log_dir / "checkpoints", cp.path)
            return new
        return None


def live_workers(store: Store) -> list[WorkerRow]:
    """Workers seen within ``LIVE_WORKER_S`` that the store does not know to be gone (on one
    machine a dead pid is gone at once); none if the store cannot be read."""
    try:
        rows = store.workers()
    except StoreError:
        return []
    recent = now_us() - int(LIVE_WORKER_S * 1e6)
    return [w for w in rows if w.seen_us >= recent and store.alive(w.pid)]
