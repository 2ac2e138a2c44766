"""What a request needs: the live feature state, the models, the experiment and the logs.

One ``Service`` per worker process. The feature state is local to the worker and replays the
shared store's events before each request; state access is serialised by a lock (one
request's featurisation takes about a millisecond), inference runs outside it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.features.history import Sequences
from pipelines.features.live import LiveFeaturizer
from pipelines.features.state import Events, FeatureState
from pipelines.features.transforms import Features
from pipelines.io import write_json_atomic
from pipelines.lists.manifest import Manifest
from serving import metrics
from serving.experiments import Experiment, load_experiment, team_draft
from serving.models import ModelLoadError, ModelSet, ServedModel, load_model_set
from serving.request_log import RotatingJsonl
from serving.requests import (
    ServingError,
    context_coord,
    history_event,
    item_overrides,
    to_us,
)
from serving.runtime import Device, choose_device
from serving.schemas import EventsRequest, RankRequest
from serving.settings import Settings
from serving.store import SharedStore

log = logging.getLogger(__name__)


@dataclass
class Route:
    variant: str
    models: list[ServedModel]


@dataclass
class Ranked:
    model: ServedModel
    variant: str
    items: list[int]  # candidate indices in served order
    scores: np.ndarray  # per candidate
    teams: list[str] | None = None


class Service:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.device: Device = choose_device(settings.device)
        self.state = FeatureState.load(settings.state)
        self.live = LiveFeaturizer(self.state)
        spec = self.live.spec
        self.experiment: Experiment | None = (
            load_experiment(settings.experiment) if settings.experiment else None
        )
        # Per-variant states (A/B only): each variant's counters and histories see only the
        # events of its own traffic, so variants cannot influence each other through them.
        self.variant_live: dict[str, LiveFeaturizer] = {}
        if (
            settings.isolate_variants
            and self.experiment is not None
            and self.experiment.mode == "ab"
        ):
            for v in self.experiment.variants:
                self.variant_live[v.name] = LiveFeaturizer(FeatureState.load(settings.state), spec)
        self.schema = Manifest(
            numeric=spec.numeric,
            categorical=spec.categorical,
            history_numeric=spec.history_numeric,
            history_categorical=spec.history_categorical,
            history_max_len=self.state.cfg.history.max_len,
        ).schema_key()
        self.numeric_attrs = set(self.state.items.num_names)
        self.lock = threading.Lock()
        self.store = SharedStore(settings.store_path)
        # The store's events belong to the snapshot they followed; a new snapshot starts afresh.
        self.store.reset_for(
            hashlib.sha256((settings.state / "state.json").read_bytes()).hexdigest()
        )
        self.last_event = 0
        window = settings.batch_window_ms
        self.window_ms = (2.0 if self.device.name == "cuda" else 0.0) if window is None else window
        self.models = self._load_models()
        self.generation = self.store.generation()
        self._check_experiment(self.models)
        if self.experiment is not None:  # the online report reads the weights from here
            write_json_atomic(self.experiment.to_dict(), settings.log_dir / "experiment.json")
        self.rankings = RotatingJsonl(settings.log_dir, "rankings", settings.log_rotate_bytes)
        self.event_log = RotatingJsonl(settings.log_dir, "events", settings.log_rotate_bytes)
        self.sync()
        self.ready = True

    # ---- models ----------------------------------------------------------------------------
    def _load_models(self) -> ModelSet:
        warm = self.live.featurize(
            user_id="warmup",
            query="warmup",
            t_us=int(self.state.clock_us or 0),
            item_ids=list(self.state.items.ids[:20]) or ["warmup"],
        )
        return load_model_set(
            self.settings.registry,
            self.schema,
            self.device,
            self.settings.intra_op_threads,
            self.settings.default_model,
            self.window_ms,
            self.settings.max_batch,
            warmup=warm,
        )

    def _check_experiment(self, models: ModelSet) -> None:
        if self.experiment is None:
            return
        missing = [v.model for v in self.experiment.variants if models.get(v.model) is None]
        if missing:
            raise ModelLoadError(f"experiment {self.experiment.name}: no served model {missing}")

    def reload(self) -> ModelSet:
        """Load the registry afresh; swap only if every model loads (else the old ones serve)."""
        try:
            new = self._load_models()
            self._check_experiment(new)
        except ModelLoadError as e:
            raise ServingError(409, f"reload rejected, previous models keep serving: {e}") from e
        old, self.models = self.models, new
        self.generation = self.store.bump_generation()
        old.close()
        log.info("models reloaded (generation %d): %s", self.generation, sorted(new.models))
        return new

    def sync(self) -> None:
        """Apply events other workers stored; reload models if another worker did."""
        rows = self.store.events_since(self.last_event)
        if rows:
            with self.lock:
                self._apply(rows)
            self.last_event = rows[-1].id
        gen = self.store.generation()
        if gen != self.generation:
            try:
                new = self._load_models()
                self._check_experiment(new)
                old, self.models = self.models, new
                old.close()
            except ModelLoadError as e:  # keep serving the old ones; say so
                log.error("generation %d reload failed in this worker: %s", gen, e)
            self.generation = gen

    def _apply(self, rows: list[Any]) -> None:
        targets = [(self.live, rows)]
        for name, live in self.variant_live.items():
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

    # ---- ranking ---------------------------------------------------------------------------
    def rank(self, req: RankRequest) -> dict[str, Any]:
        """The ranking as a plain dict in the shape of ``RankResponse``."""
        t0 = time.perf_counter()
        s = self.settings
        if len(req.candidates) > s.max_candidates:
            raise ServingError(
                422,
                f"too many candidates: {len(req.candidates)} > {s.max_candidates}",
                "candidates",
            )
        if req.history is not None and len(req.history) > s.max_history:
            raise ServingError(
                422, f"history too long: {len(req.history)} > {s.max_history}", "history"
            )
        ids = [str(c.item_id) for c in req.candidates]
        if len(set(ids)) != len(ids):
            raise ServingError(422, "candidates repeat an item_id", "candidates")
        overrides = item_overrides(req, self.numeric_attrs)
        context = req.context or {}
        lat, lon = context_coord(context, "lat"), context_coord(context, "lon")
        ctx = {
            k: None if context.get(k) is None else str(context.get(k))
            for k in self.state.cfg.requests.categorical
        }
        t_us = to_us(req.ts)
        user = str(req.user_id)
        history = None if req.history is None else [history_event(h) for h in req.history]
        rid = req.request_id or uuid.uuid4().hex
        route = self._route(req, user)
        live = self.variant_live.get(route.variant, self.live)
        self.sync()
        t_feat = time.perf_counter()
        with self.lock:
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
        t_infer = time.perf_counter()
        ranked = self._score(route, rid, user, feats)
        t_done = time.perf_counter()
        timing = {"featurize": (t_infer - t_feat) * 1000, "infer": (t_done - t_infer) * 1000}
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
        self.store.record_request(rid, user, req.query, t_us, ranked.variant)
        self.rankings.write(
            {
                "request_id": rid,
                "t_us": t_us,
                "user_id": user,
                "query": req.query,
                "context": context,
                "experiment": self.experiment.name if self.experiment else None,
                "variant": ranked.variant,
                "model": ranked.model.name,
                "version": ranked.model.version,
                "items": [ids[i] for i in top],
                "scores": [float(ranked.scores[i]) for i in top],
                "teams": ranked.teams[: len(top)] if ranked.teams else None,
                "candidates": ids,
                "took_ms": round(took, 3),
            }
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
            "_timing": timing,  # per-stage milliseconds; the route moves it to a header
        }

    def _route(self, req: RankRequest, user: str) -> Route:
        """Which model(s) serve the request, under which variant name."""
        models = self.models  # one consistent set for this request, even during a reload
        if req.model is not None:
            m = models.get(req.model)
            if m is None:
                raise ServingError(
                    422, f"unknown model {req.model!r}; served: {sorted(models.models)}", "model"
                )
            return Route("explicit", [m])
        exp = self.experiment
        if exp is None:
            return Route("default", [models.models[models.default]])
        if exp.mode == "ab":
            v = exp.assign(user)
            return Route(v.name, [models.models[v.model]])
        return Route("interleave", [models.models[v.model] for v in exp.variants])

    def _score(self, route: Route, rid: str, user: str, feats: Features) -> Ranked:
        if route.variant != "interleave":
            return self._order(route.models[0], route.variant, feats)
        assert self.experiment is not None
        va, vb = self.experiment.variants
        ra, rb = (
            self._order(route.models[0], va.name, feats),
            self._order(route.models[1], vb.name, feats),
        )
        # The coin flips of the draft, seeded by the request: the same request, the same list.
        seed = int.from_bytes(hashlib.sha256(f"{rid}:{user}".encode()).digest()[:8], "big")
        order, teams = team_draft(
            [str(i) for i in ra.items], [str(i) for i in rb.items], np.random.default_rng(seed)
        )
        served = [int(i) for i in order]
        # Scores follow the interleaved order (descending), so clients sorting by score agree.
        scores = np.empty(len(served), np.float32)
        scores[served] = np.arange(len(served), 0, -1, dtype=np.float32)
        names = {"a": va.name, "b": vb.name}
        return Ranked(route.models[0], "interleave", served, scores, [names[t] for t in teams])

    def _order(self, model: ServedModel, variant: str, feats: Features) -> Ranked:
        # skip_inference (benchmarks only): the same server answering without the model.
        scores = (
            np.zeros(len(feats.num), np.float32)
            if self.settings.skip_inference
            else model.score(feats)
        )
        order = np.argsort(-scores, kind="stable").tolist()
        return Ranked(model, variant, order, scores)

    # ---- events ----------------------------------------------------------------------------
    def events(self, req: EventsRequest) -> int:
        if len(req.events) > self.settings.max_events:
            raise ServingError(
                422, f"too many events: {len(req.events)} > {self.settings.max_events}", "events"
            )
        known = self.store.request_info([e.request_id for e in req.events])
        rows: list[tuple[str, str, str, str, int | None, int, str, str]] = []
        for e in req.events:
            query, req_t, variant = known.get(e.request_id, ("", None, ""))
            t_us = to_us(e.ts) if e.ts is not None else req_t if req_t is not None else to_us(None)
            rows.append(
                (
                    str(e.type),
                    e.request_id,
                    str(e.user_id),
                    str(e.item_id),
                    e.position,
                    t_us,
                    query,
                    variant,
                )
            )
            self.event_log.write(
                {
                    "type": e.type,
                    "request_id": e.request_id,
                    "user_id": str(e.user_id),
                    "item_id": str(e.item_id),
                    "position": e.position,
                    "t_us": t_us,
                    "known_request": e.request_id in known,
                }
            )
            metrics.EVENTS.labels(e.type).inc()
        self.store.add_events(rows)
        self.sync()
        return len(rows)

    def user_history(self, user_id: str) -> Sequences:
        self.sync()
        with self.lock:
            return self.state.history.lookup(np.array([user_id], dtype=object), np.array([2**62]))

    def info(self) -> dict[str, Any]:
        self.sync()
        models = self.models
        return {
            "generation": self.generation,
            "device": self.device.description,
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
            "experiment": self.experiment.to_dict() if self.experiment else None,
        }

    def close(self) -> None:
        self.models.close()
        self.rankings.close()
        self.event_log.close()
        self.store.close()
