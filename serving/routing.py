"""Which model(s) serve a request and in what order its candidates come back: an explicit
model, the default, an A/B variant, or a team-draft interleaving of two variants."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipelines.features.transforms import Features
from serving.experiments import Experiment, team_draft
from serving.inference import Ticket
from serving.models import ModelSet, ServedModel
from serving.requests import ServingError
from serving.schemas import RankRequest


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


def route(models: ModelSet, experiment: Experiment | None, req: RankRequest, user: str) -> Route:
    """Which model(s) serve the request, under which variant name."""
    if req.model is not None:
        m = models.get(req.model)
        if m is None:
            raise ServingError(
                422,
                f"unknown model {req.model[:60]!a}; served: {sorted(models.models)}",
                "model",
            )
        return Route("explicit", [m])
    if experiment is None:
        return Route("default", [models.models[models.default]])
    if experiment.mode == "ab":
        v = experiment.assign(user)
        return Route(v.name, [models.models[v.model]])
    return Route("interleave", [models.models[v.model] for v in experiment.variants])


def rank_candidates(
    r: Route,
    experiment: Experiment | None,
    rid: str,
    user: str,
    feats: Features,
    tickets: list[Ticket | None],
    skip_inference: bool = False,
) -> Ranked:
    """Score the candidates with the route's model(s); interleave two variants' orders."""
    if r.variant != "interleave":
        return _order(r.models[0], r.variant, feats, tickets[0], skip_inference)
    assert experiment is not None
    va, vb = experiment.variants
    ra, rb = (
        _order(r.models[0], va.name, feats, tickets[0], skip_inference),
        _order(r.models[1], vb.name, feats, tickets[1], skip_inference),
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
    return Ranked(r.models[0], "interleave", served, scores, [names[t] for t in teams])


def _order(
    model: ServedModel, variant: str, feats: Features, ticket: Ticket | None, skip: bool
) -> Ranked:
    # skip (benchmarks only): the same server answering without the model.
    scores = np.zeros(len(feats.num), np.float32) if skip else model.score(feats, ticket)
    order = np.argsort(-scores, kind="stable").tolist()
    return Ranked(model, variant, order, scores)
