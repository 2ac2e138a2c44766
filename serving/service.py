"""What a request needs: the live feature state, the models, the experiment and the logs.

One ``Service`` per worker process. ``LiveState`` holds the feature state (one lock; a
request's featurisation takes about a millisecond), ``ModelPool`` the models (leased per
request; inference runs outside the state lock), ``SharedStore`` what all workers share,
``Maintenance`` the background duties. Every input was bounded by the schema
(``serving.bounds``); what depends on settings or on the store (list lengths, clock skew,
served rankings) is checked here. One request's failure never reaches another: a store that
cannot be written degrades a ranking (a header says so) and refuses events with a 503.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from datetime import datetime
from typing import Any

import anyio
import numpy as np

from pipelines.features.history import Sequences
from pipelines.features.transforms import Features
from pipelines.io import write_json_atomic
from serving import metrics, routing
from serving.auth import Tokens
from serving.event_checks import check_events
from serving.experiments import Experiment, load_experiment
from serving.live_state import Checkpoint, LiveState
from serving.maintenance import Health, Maintenance, live_workers
from serving.model_pool import ModelPool
from serving.models import LoadOptions, ModelLoadError, ModelSet
from serving.recording import Recorder
from serving.redis_store import RedisStore
from serving.remote_state import RemoteLiveState, remote_live_state
from serving.request_log import RotatingJsonl, ranking_record
from serving.requests import (
    ServingError,
    client_time,
    context_coord,
    history_event,
    item_overrides,
    retry_later,
)
from serving.runtime import Device, choose_device
from serving.schemas import EventsRequest, RankRequest
from serving.settings import Settings
from serving.store_rows import ServedRanking, StoreError, now_us
from serving.stores import open_store

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings):
        self.settings = s = settings
        self.tokens = Tokens.from_settings(s)
        if s.insecure_open:
            log.warning(
                "INSECURE: --insecure-open: anyone who can reach this server can read any "
                "user's history and post events; set RANKER_CLIENT_TOKEN to require a token"
            )
        self.device: Device = choose_device(s.device)
        self.experiment: Experiment | None = load_experiment(s.experiment) if s.experiment else None
        self.store = open_store(s)
        self.pid, self.started_us = self.store.worker_id(os.getpid()), now_us()
        # The store's events belong to the snapshot they followed; a new snapshot starts afresh.
        self.store.reset_for(hashlib.sha256((s.state / "state.json").read_bytes()).hexdigest())
        isolate = (
            s.isolate_variants and self.experiment is not None and self.experiment.mode == "ab"
        )
        variants = [v.name for v in self.experiment.variants] if isolate and self.experiment else []
        checkpoint = Checkpoint.from_json(
            self.store.register_worker(self.pid, self.started_us), s.log_dir
        )
        self.live: LiveState | RemoteLiveState
        if isinstance(self.store, RedisStore):  # a stateless replica: the state is in Redis
            self.live = remote_live_state(s, self.store, variants)
        else:
            self.live = LiveState(
                s.state, variants, checkpoint, s.max_history_users, s.max_counter_keys
            )
        replayed = self.live.catch_up(self.store)
        self.schema = self.live.main.schema_key()
        self.numeric_attrs = set(self.live.state.items.num_names)
        plan = s.concurrency(cuda=self.device.name == "cuda")
        self.window_ms = plan.batch_window_ms
        self.rank_slots = anyio.CapacityLimiter(plan.rank_threads)
        opts = LoadOptions(
            self.schema, self.device, s.intra_op_threads, self.window_ms, s.max_batch, plan.lanes
        )
        self.models = ModelPool(
            s.registry, opts, self.store, s.default_model, self._warmup(), self._check_experiment
        )
        if self.experiment is not None:  # the online report reads the weights from here
            write_json_atomic(self.experiment.to_dict(), s.log_dir / "experiment.json")
        self.recorder = Recorder(
            self.store, self.live.remote if isinstance(self.live, RemoteLiveState) else None
        )
        self.rankings = RotatingJsonl(s.log_dir, "rankings", s.log_rotate_bytes)
        self.event_log = RotatingJsonl(s.log_dir, "events", s.log_rotate_bytes)
        self.health = Health()
        self.maintenance = Maintenance(self)
        self.maintenance.heartbeat()
        self.ready = True
        log.info(
            "worker %d ready: replayed %d events, models %s",
            self.pid,
            replayed,
            self.models.versions(),
        )

    # ---- models ----------------------------------------------------------------------------
    def _warmup(self) -> Features:
        return self.live.main.featurize(
            user_id="warmup",
            query="warmup",
            t_us=int(self.live.state.clock_us or 0),
            item_ids=list(self.live.state.items.ids[:20]) or ["warmup"],
        )

    def _check_experiment(self, models: ModelSet) -> None:
        if self.experiment is None:
            return
        missing = [v.model for v in self.experiment.variants if models.get(v.model) is None]
        if missing:
            raise ModelLoadError(f"experiment {self.experiment.name}: no served model {missing}")

    def reload(self) -> None:
        """Load the registry afresh; swap only if every model loads (else the old ones serve)."""
        try:
            self.models.reload()
        except ModelLoadError as e:
            raise ServingError(409, f"reload rejected, previous models keep serving: {e}") from e
        except StoreError as e:
            self.health.failed(str(e))
            raise retry_later(f"reload not published, the store cannot be written: {e}") from e

    # ---- time and state --------------------------------------------------------------------
    def _time(self, ts: datetime | None, field: str) -> int:
        return client_time(ts, field, self.settings.max_clock_skew_s)

    def _sync(self) -> bool:
        """Apply other workers' new events; False when the store could not be read."""
        try:
            poll = self.store.poll(self.live.last_event)  # Redis: a read that can fail
            if poll.pending:
                self.live.sync(self.store)
            self.live.follow_clock(poll.clock_us)
            return True
        except StoreError as e:
            self.health.failed(str(e))
            return False

    @staticmethod
    def _check_deadline(deadline: float | None, stage: str) -> None:
        if deadline is not None and time.perf_counter() > deadline:
            metrics.SHED.labels("deadline").inc()
            raise retry_later(f"the request missed its deadline ({stage}); the server is busy")

    # ---- ranking ---------------------------------------------------------------------------
    def rank(self, req: RankRequest, deadline: float | None = None) -> dict[str, Any]:
        """The ranking as a plain dict in the shape of ``RankResponse``."""
        t0 = time.perf_counter()
        self._check_deadline(deadline, "before it started")
        s = self.settings
        if len(req.candidates) > s.max_candidates:
            raise ServingError(
                422,
                f"too many candidates: {len(req.candidates)} > {s.max_candidates} "
                "(the server's --max-candidates)",
                "candidates",
            )
        if req.history is not None and len(req.history) > s.max_history:
            raise ServingError(
                422,
                f"history too long: {len(req.history)} > {s.max_history} (--max-history)",
                "history",
            )
        ids = [str(c.item_id) for c in req.candidates]
        if len(set(ids)) != len(ids):
            raise ServingError(422, "candidates repeat an item_id", "candidates")
        overrides = item_overrides(req, self.numeric_attrs)
        context = req.context or {}
        lat, lon = context_coord(context, "lat"), context_coord(context, "lon")
        ctx = {
            k: None if context.get(k) is None else str(context.get(k))
            for k in self.live.state.cfg.requests.categorical
        }
        t_us = self._time(req.ts, "ts")
        # A client's history is used for this request only, and its events after the request
        # time are left out by the featuriser: it cannot move anything.
        history = None if req.history is None else [history_event(h) for h in req.history]
        user = str(req.user_id)
        rid = req.request_id or uuid.uuid4().hex
        degraded = [] if self._sync() else ["store-unreadable"]
        with self.models.lease() as models:
            route = routing.route(models, self.experiment, req, user)
            live = self.live.for_variant(route.variant)
            # The batchers may wait (a window) for a request announced here.
            tickets = [m.announce() for m in route.models]
            try:
                t_feat = time.perf_counter()
                with (
                    self.live.lock,
                    self.recorder.around_featurisation(
                        ServedRanking(rid, user, req.query, t_us, route.variant, ids)
                    ) as recorded,
                ):
                    feats = live.featurize(
                        user_id=user,
                        query=req.query,
                        t_us=t_us,
                        item_ids=ids,
                        lat=lat,
                        lon=lon,
                        context=ctx,
                        overrides=overrides,
                        history=history,
                    )
                if getattr(live.state, "degraded", False):  # Redis down: snapshot features
                    degraded.append("store-unreadable")
                t_infer = time.perf_counter()
                self._check_deadline(deadline, "before inference")
                ranked = routing.rank_candidates(
                    route,
                    self.experiment,
                    rid,
                    user,
                    feats,
                    tickets,
                    self.settings.skip_inference,
                )
            finally:
                for m, ticket in zip(route.models, tickets, strict=True):
                    m.withdraw(ticket)
        t_done = time.perf_counter()
        if not np.isfinite(ranked.scores).all():
            raise ServingError(
                422,
                "the candidates' features give non-finite scores; check the values sent",
                "candidates",
            )
        top = ranked.items[: req.top_k] if req.top_k else ranked.items
        # Plain dicts: the route sends them as JSON directly (no second validation pass).
        items: list[dict[str, Any]] = [
            {"item_id": req.candidates[i].item_id, "score": float(ranked.scores[i]), "rank": r + 1}
            for r, i in enumerate(top)
        ]
        if ranked.teams:
            for r, item in enumerate(items):
                item["team"] = ranked.teams[r]
        took = (time.perf_counter() - t0) * 1000
        record = recorded()
        if record.failure is not None:  # the ranking still serves; its events cannot be checked
            self.health.failed(record.failure)
            degraded.append("store-unwritable")
        if not record.mine:
            raise ServingError(
                409, "request_id was already used for another user's ranking", "request_id"
            )
        experiment = self.experiment.name if self.experiment else None
        self._log_ranking(
            ranking_record(rid, t_us, user, req.query, context, experiment, ranked, ids, top, took)
        )
        metrics.REQUESTS.labels(ranked.model.name, ranked.variant).inc()
        metrics.LATENCY.labels(ranked.model.name, ranked.variant).observe(took / 1000)
        return {
            "request_id": rid,
            "model": ranked.model.name,
            "version": ranked.model.version,
            "variant": ranked.variant,
            "items": items,
            "took_ms": round(took, 3),
            # Moved to headers by the route: per-stage milliseconds, and what was degraded.
            "_timing": {
                "featurize": (t_infer - t_feat) * 1000,
                "infer": (t_done - t_infer) * 1000,
            },
            "_degraded": degraded,
        }

    def _log_ranking(self, record: dict[str, Any]) -> None:
        try:
            self.rankings.write(record)
        except OSError as e:  # a full disk loses the log line, not the ranking
            log.error("ranking log not written: %s", e)

    # ---- events ----------------------------------------------------------------------------
    def events(self, req: EventsRequest) -> tuple[int, int]:
        """Check and store the events; returns (accepted, of which duplicates)."""
        s = self.settings
        if len(req.events) > s.max_events:
            raise ServingError(
                422, f"too many events: {len(req.events)} > {s.max_events} (--max-events)", "events"
            )
        try:
            served = self.store.served([e.request_id for e in req.events])
        except StoreError as e:
            self.health.failed(str(e))
            raise retry_later(f"events not accepted: the shared store cannot be read ({e})") from e
        rows = check_events(
            req.events, served, now_us(), int(s.max_clock_skew_s * 1e6), s.accept_unserved_events
        )
        try:
            # A stateless replica's events update the state in Redis with their idempotency
            # check, in one script: an event is counted exactly once or not at all.
            effects = self.live.effects(rows) if isinstance(self.live, RemoteLiveState) else None
            fresh = self.store.add_events(rows, effects)
        except StoreError as e:
            self.health.failed(str(e))
            raise retry_later(
                f"events not accepted, none of this call was kept: the shared store cannot be "
                f"written ({e})"
            ) from e
        new_rows = [row for row, new in zip(rows, fresh, strict=True) if new]
        for kind, rid, user, item, position, t_us, *_ in new_rows:  # a retry is logged once
            metrics.EVENTS.labels(kind).inc()
            try:
                self.event_log.write(
                    {
                        "type": kind,
                        "request_id": rid,
                        "user_id": user,
                        "item_id": item,
                        "position": position,
                        "t_us": t_us,
                        "known_request": rid in served,
                    }
                )
            except OSError as e:
                log.error("event log not written: %s", e)
        self._sync()
        return len(rows), len(rows) - len(new_rows)

    def user_history(self, user_id: str) -> Sequences:
        self._sync()
        return self.live.history(user_id)

    def info(self) -> dict[str, Any]:
        with contextlib.suppress(StoreError):
            self.models.follow()  # a reload made through another worker, without waiting
        versions = self.models.versions()
        live = live_workers(self.store)
        with self.models.lease() as models:
            return {
                "generation": self.models.generation,
                "device": self.device.description,
                "worker": self.pid,
                "models": [
                    {
                        "name": m.name,
                        "version": m.version,
                        "kind": m.kind,
                        "sha256": m.sha256,
                        "default": m.name == models.default,
                        "reranker_of": f"{m.baseline.name}/{m.baseline.version}"
                        if m.baseline
                        else None,
                    }
                    for m in models.models.values()
                ],
                "workers": [
                    {"pid": w.pid, "generation": w.generation, "models": w.models} for w in live
                ],
                "version_skew": any(w.models and w.models != versions for w in live),
                "experiment": self.experiment.to_dict() if self.experiment else None,
            }

    def close(self) -> None:
        self.maintenance.stop()
        self.models.close()
        self.rankings.close()
        self.event_log.close()
        with contextlib.suppress(StoreError):
            self.store.forget_worker(self.pid)
        self.store.close()
