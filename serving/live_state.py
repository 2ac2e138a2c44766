"""The worker's feature state, kept current from the shared store, bounded and checkpointed.

One lock guards the state: featurising a request, applying new events and saving a
checkpoint each hold it, so two request threads can never apply the same events twice (they
once did: duplicated history entries and lost clicks under load). Events are applied in id
order; memory bounds (``max_history_users``, ``max_counter_keys``) are enforced at fixed
event-id boundaries, so every worker fed the same events evicts the same keys and all workers
read the same state.

A checkpoint is the dynamic part of every state (counters, histories, clock) at one event id,
written beside the logs; a worker starting later loads the newest one and replays only the
events after it, and events older than it can be deleted from the store.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.features.history import Sequences
from pipelines.features.live import LiveFeaturizer
from pipelines.features.state import Events, FeatureState
from pipelines.io import atomic_dir
from serving.store_rows import EventRow
from serving.stores import Store

log = logging.getLogger(__name__)
EVICT_EVERY = 4096  # event ids between two checks of the memory bounds
MAIN = "main"


@dataclass(frozen=True)
class Checkpoint:
    event_id: int  # the state holds every event up to this id
    path: Path  # one directory per state (``main``, then one per variant)
    variants: tuple[str, ...]
    created_us: int

    def to_json(self, log_dir: Path) -> str:
        return json.dumps(
            {
                "event_id": self.event_id,
                "path": str(self.path.relative_to(log_dir)),
                "variants": list(self.variants),
                "created_us": self.created_us,
            }
        )

    @classmethod
    def from_json(cls, raw: str | None, log_dir: Path) -> Checkpoint | None:
        if not raw:
            return None
        d = json.loads(raw)
        return cls(
            int(d["event_id"]), log_dir / d["path"], tuple(d["variants"]), int(d["created_us"])
        )


class LiveState:
    def __init__(
        self,
        snapshot: Path,
        variants: list[str],
        checkpoint: Checkpoint | None,
        max_users: int,
        max_keys: int,
    ):
        self.lock = threading.Lock()
        self.max_users, self.max_keys = max_users, max_keys
        usable = checkpoint is not None and (checkpoint.path / MAIN).is_dir()
        if checkpoint is not None and not usable:
            log.warning("checkpoint %s is missing; replaying from the snapshot", checkpoint.path)
        self.last_event = checkpoint.event_id if usable and checkpoint else 0

        def load(name: str) -> FeatureState:
            if not usable or checkpoint is None:
                return FeatureState.load(snapshot)
            own = checkpoint.path / name
            if not own.is_dir():  # the experiment changed since: start from the shared state
                log.warning("checkpoint has no state for variant %s; using the main one", name)
                own = checkpoint.path / MAIN
            return FeatureState.load(snapshot, dynamic=own)

        self.main = LiveFeaturizer(load(MAIN))
        # Per-variant states (A/B with isolation): each variant's counters and histories see
        # only the events of its own traffic, so variants cannot influence each other.
        self.variants = {v: LiveFeaturizer(load(v), self.main.spec) for v in variants}
        for lf in self.featurizers():
            for table in lf.state.counters.values():
                table.track_recency()
        self.evicted: dict[str, int] = {}
        self._bound()  # a snapshot larger than the bounds is cut at once

    @property
    def state(self) -> FeatureState:
        return self.main.state

    def featurizers(self) -> list[LiveFeaturizer]:
        return [self.main, *self.variants.values()]

    def for_variant(self, variant: str) -> LiveFeaturizer:
        return self.variants.get(variant, self.main)

    # ---- events ----------------------------------------------------------------------------
    def sync(self, store: Store, limit: int = 50_000) -> int:
        """Apply the events stored since the last sync (at most ``limit``); returns how many."""
        with self.lock:
            rows = store.events_since(self.last_event, limit)
            start = 0
            while start < len(rows):
                # The bounds are enforced just before the first event at or past each multiple
                # of EVICT_EVERY: on the same state in every worker, however events are synced.
                block = rows[start].id // EVICT_EVERY
                if block > self.last_event // EVICT_EVERY:
                    self._bound()
                end = start
                while end < len(rows) and rows[end].id // EVICT_EVERY == block:
                    end += 1
                self._apply(rows[start:end])
                self.last_event = rows[end - 1].id
                start = end
            return len(rows)

    def follow_clock(self, t_us: int) -> None:
        """Move every state's clock to ``t_us``, the latest ranking any worker served (never
        back): workers and replicas then close the same counter buckets."""
        if t_us <= (self.state.clock_us or 0):
            return
        with self.lock:
            for lf in self.featurizers():
                lf.state.advance(t_us)

    def catch_up(self, store: Store) -> int:
        """Apply every stored event (a starting worker, before it says it is ready)."""
        total = 0
        while n := self.sync(store):
            total += n
        return total

    def _apply(self, rows: list[EventRow]) -> None:
        targets = [(self.main, rows)]
        for name, live in self.variants.items():
            # An event whose request is unknown cannot be attributed: every state sees it.
            targets.append((live, [r for r in rows if r.variant in (name, "")]))
        for live, part in targets:
            if not part:
                continue
            kind = np.array([r.type for r in part])
            live.state.observe(
                Events(
                    user_id=np.array([r.user_id for r in part], dtype=object),
                    query=np.array([r.query for r in part], dtype=object),
                    item_id=np.array([r.item_id for r in part], dtype=object),
                    t_us=np.array([r.t_us for r in part], dtype=np.int64),
                    position=np.array([r.position or 0 for r in part], dtype=np.int64),
                    clicked=kind == "click",
                    ordered=kind == "order",
                    impression=kind == "impression",
                )
            )

    def _bound(self) -> None:
        for lf in self.featurizers():
            gone = lf.state.evict_least_recent(self.max_users, self.max_keys)
            for k, v in gone.items():
                self.evicted[k] = self.evicted.get(k, 0) + v
            if gone:
                log.info("memory bounds: forgot %s (at event %d)", gone, self.last_event)

    # ---- reads -----------------------------------------------------------------------------
    def history(self, user_id: str) -> Sequences:
        with self.lock:
            return self.state.history.lookup(np.array([user_id], dtype=object), np.array([2**62]))

    def sizes(self) -> dict[str, int]:
        with self.lock:
            st = self.state
            return {"history": len(st.history)} | {k: len(t.index) for k, t in st.counters.items()}

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, root: Path) -> Checkpoint:
        """Write every state at the current event id under ``root`` (atomically)."""
        t0 = time.perf_counter()
        with self.lock:
            final = root / f"e{self.last_event:012d}"
            with atomic_dir(final) as tmp:
                self.main.state.save_dynamic(tmp / MAIN)
                for name, lf in self.variants.items():
                    lf.state.save_dynamic(tmp / name)
            cp = Checkpoint(self.last_event, final, tuple(self.variants), time.time_ns() // 1000)
        log.info(
            "checkpoint at event %d in %.2f s: %s", cp.event_id, time.perf_counter() - t0, final
        )
        return cp


def remove_old_checkpoints(root: Path, keep: Path) -> None:
    """Delete every checkpoint under ``root`` older than ``keep`` (the one the store names)."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("e") and p.name < keep.name:
            shutil.rmtree(p, ignore_errors=True)
