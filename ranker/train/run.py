"""``ranker train``: load a dataset, correct position bias, train the chosen kind within a
stated tuning budget, and publish the model to the registry with its card."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ranker.card import ModelCard
from ranker.kinds import get_kind
from ranker.kinds.base import TrainJob
from ranker.registry import ModelRef, publish
from ranker.train.launch import Launch, restores_torch_threads
from ranker.train.prepare import (
    VALIDATION_RULES,
    ipw_weights,
    load_splits,
    rank_data,
    validation_set,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRequest:
    model: str  # a kind: see ranker.kinds.KINDS
    data: Path
    registry: Path
    name: str | None = None
    bias: str = "auto"  # auto (the kind's own) | none | ipw | the kind's own model
    tune: int = 1
    seed: int = 0
    threads: int = 2
    reranker: str | None = None  # registry reference of the baseline (kinds that re-rank)
    resume: str | None = None  # registry reference of a version to continue
    # the model-selection rule (see ranker.train.prepare); auto: the kind's own for its settings
    validation: str = "auto"
    # which propensity estimate (ranker.propensity.PROPENSITY_SOURCES); auto: reconciled
    propensities: str = "auto"
    progress: bool = True
    overrides: dict[str, Any] | None = None  # the kind's settings (e.g. epochs, num_leaves)
    # Python API only: the kind's training-loop callbacks (train_lgbm's or train_transformer's),
    # e.g. to watch every validation or to stop early
    callbacks: tuple[Callable[..., None], ...] = ()


def run_training(req: TrainRequest) -> ModelRef:
    """Train and publish one model. Under ``torchrun`` (``ranker.train.launch``) every rank runs
    this: kinds that train across ranks do, rank 0 publishes, and every rank returns its ref."""
    launch = Launch.detect()
    kind = get_kind(req.model)
    if launch.distributed and not kind.distributed:
        raise ValueError(
            f"{kind.name} does not train across processes; run it without torchrun "
            f"(this launch has {launch.world})"
        )
    if not launch.distributed:
        ref = _train_and_publish(req, launch)
        assert ref is not None  # a single process leads
        return ref
    from ranker.train.distributed import broadcast_object, process_group
    from ranker.train.transformer import pick_device

    # The ranks' own group: NCCL where the kind trains on CUDA, gloo otherwise.
    on = (req.overrides or {}).get("device", "auto") if "device" in kind.setting_names() else "cpu"
    with process_group(launch, launch.device(pick_device(on))):
        ref = _train_and_publish(req, launch)
        out = broadcast_object(ref, launch)
    assert isinstance(out, ModelRef)
    return out


@restores_torch_threads
def _train_and_publish(req: TrainRequest, launch: Launch) -> ModelRef | None:
    kind = get_kind(req.model)
    bias = kind.own_bias if req.bias == "auto" else req.bias
    if launch.distributed:
        bias = kind.distributed_bias(bias, explicit=req.bias != "auto")
    if bias not in kind.biases:
        raise ValueError(
            f"bias {bias!r} does not apply to {kind.name}; it takes {list(kind.biases)}"
        )
    if req.reranker and not kind.reranks:
        raise ValueError(f"{kind.name} does not train over a baseline (--reranker)")
    settings = dict(req.overrides or {})
    kind.check_settings(settings)
    torch.set_num_threads(req.threads)
    splits, _ = load_splits(
        req.data,
        light_train=kind.streams_train(settings),
        light_valid=kind.streams_valid(settings),
        threads=req.threads,
        propensities=req.propensities,
    )
    m = splits.manifest
    weights = ipw_weights(splits.train, splits.propensities, bias)
    rule = (
        kind.own_validation(settings, bias, reranks=bool(req.reranker))
        if req.validation == "auto"
        else req.validation
    )
    if rule in VALIDATION_RULES and rule not in kind.validation_rules:
        raise ValueError(
            f"{kind.name} cannot select by the {rule!r} rule; it can by {kind.validation_rules}"
        )
    v = validation_set(splits.valid, splits.propensities, bias, rule)
    train = rank_data(splits.train, m, weights)
    valid = rank_data(splits.valid, m, labels=v.labels, eval_mask=v.mask)
    registry = Path(req.registry)
    with tempfile.TemporaryDirectory(
        prefix=".build-", dir=registry.parent if registry.parent.exists() else None
    ) as tmp:
        job = TrainJob(
            data=Path(req.data),
            registry=registry,
            splits=splits,
            train=train,
            valid=valid,
            manifest=m,
            bias=bias,
            tune=req.tune,
            seed=req.seed,
            threads=req.threads,
            settings=settings,
            build=Path(tmp),
            reranker=req.reranker,
            resume=req.resume,
            progress=req.progress and launch.leader,
            callbacks=req.callbacks,
            launch=launch,
            validation_rule=rule,
        )
        done = kind.train(job)
        if not launch.leader:
            return None  # rank 0 publishes the one version
        p = splits.propensities
        card = ModelCard(
            kind=kind.name,
            features=m.to_dict(),
            data={
                "path": str(Path(req.data).resolve()),
                "fingerprint": m.fingerprint,
                "source": m.source,
            },
            bias_correction=bias,
            seed=req.seed,
            validation_metric=v.metric,
            # batch_lists is per step across all ranks; a launch's size is recorded with it
            training=done.training
            if not launch.distributed
            else {
                **done.training,
                "processes": launch.world,
            },
            tuning=done.tuning,
            valid_ndcg=done.valid_ndcg,
            details=done.details,
            extra_numeric=[asdict(f) for f in done.extra],
            propensities=None
            if p is None
            else {
                "eta": p.eta,
                "source": p.source,
                "requested": req.propensities,
                "considered": p.considered,
                "eta_se": p.eta_se,
                "clicks_used": p.clicks_used,
                "values": p.to_list()[:20],
            },
            reranker=done.reranker,
        )
        return publish(registry, req.name or kind.name, Path(tmp), card)
