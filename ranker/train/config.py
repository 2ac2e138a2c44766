"""``TrainConfig``: the Transformer's training settings (``--set`` keys), apart from the
training loop so that the command line reads them without importing torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    # softmax | lambdaloss | approxndcg | bce. bce (the click likelihood, the position tower in
    # its logit) was tried as the standalone's default and is not: README "The click
    # likelihood as the loss".
    loss: str = "softmax"
    # The losses' own settings, passed to the loss that takes them (see ranker.losses):
    loss_k: int | None = None  # lambdaloss: NDCG@k's truncation (None: the whole list)
    loss_mu: float = 10.0  # lambdaloss: weight of the NDCG-Loss2++ term
    loss_alpha: float = 10.0  # approxndcg: sharpness of the soft rank
    epochs: int = 30
    batch_lists: int = 64
    lr: float = 2e-3  # at lr_ref_batch lists per batch; scaled for other batch sizes
    # Larger batches take larger steps: lr * sqrt(batch_lists / lr_ref_batch). Square root, not
    # linear: AdamW divides each step by the gradient's running RMS, so the step does not grow
    # with the batch as SGD's does; the square-root rule keeps the update noise of the reference
    # batch (Malladi et al. 2022, SDEs for adaptive methods), while the linear rule (Goyal et al.
    # 2017) is SGD's and leans on a long warm-up. Warm-up (warmup_frac) applies either way.
    lr_ref_batch: int = 64
    lr_scaling: str = "sqrt"  # sqrt | none (lr as given, whatever the batch)
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    patience: int = 4  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
    threads: int | None = None  # torch CPU threads; fixed for reproducible scores
    device: str = "auto"  # auto | cpu | cuda
    # Splits held on the device as padded tensors: auto (when they fit 40% of free memory, with
    # a log line either way) | on | off (batches built per step on the host, the old path).
    device_data: str = "auto"
    eval_k: int = 10
    # Also validate after every this many training lists inside an epoch (patience counts
    # validations): on a large dataset the best model can come before the first epoch ends.
    eval_every_lists: int = 16_384
    # The weight average validated and kept: its decay per step (0: the raw weights), made
    # slower where an epoch has more steps, so that it spans at least ema_epochs of training
    # (decay 1 - 1 / (ema_epochs * steps per epoch); 0: the decay as given). A fixed decay
    # averages over fewer epochs the larger the data: at 50,000 requests 0.99 spans a fifth of
    # an epoch, and spanning one gave the standalone Transformer +0.003 oracle NDCG@10 (README
    # "A weight average that spans an epoch"). Below about 100 steps an epoch it is 0.99 as
    # before. A residual re-ranker (blend=0) trains with ema_epochs 0 unless set: for it, it did
    # not pay.
    ema: float = 0.99
    ema_epochs: float = 1.0
    # Start the position tower (--bias tower) at the estimated log propensities
    # (ranker.train.prepare.propensities_from) rather than at zero (see
    # Ranker.start_position_bias): from zero the main tower learns the logging order before
    # the position tower learns examination. It comes with the held-out loss selection rule
    # (IPS for a residual re-ranker; see TransformerKind.own_validation): under the examined rule it
    # shipped late epochs that read the logging order again.
    position_prior: bool = True
    # Under torchrun: also compare the ranks' weights after every this many steps (0: at each
    # validation only); a mismatch stops training with an error.
    check_replicas_every: int = 0
    # Train features read from Parquet row groups, this many lists at a time, not loaded
    # (ranker.train.stream_data): memory follows the window. The standalone Transformer only.
    stream: bool = False
    stream_window_lists: int = 65_536
    # Train this many models from different seeds and publish them as one seed ensemble
    # (ranker.ensemble): better rankings for this many times the inference (1: one model).
    ensemble: int = 1
    # Ensemble distillation: train this many models from other seeds first (the members an
    # ensemble of this size would have) and publish one model trained to also match their mean
    # score within each list: part of an ensemble's gain at one model's inference, for this
    # many more trainings (0: off). The loss is (1 - distill_weight) times the click loss plus
    # distill_weight times the listwise KL divergence at distill_temperature (ranker.losses).
    distill: int = 0
    distill_weight: float = 0.5
    distill_temperature: float = 1.0

    def ema_decay(self, steps_per_epoch: int) -> float:
        """The weight average's decay per step for an epoch of ``steps_per_epoch`` steps."""
        if self.ema <= 0 or self.ema_epochs <= 0:
            return max(self.ema, 0.0)
        return max(self.ema, 1.0 - 1.0 / (self.ema_epochs * max(steps_per_epoch, 1)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_training_settings(settings: dict[str, Any]) -> None:
    """Refuse, by name, ``--set`` values whose types alone do not rule them out: before any
    model trains (a bad temperature would otherwise fail at the student's first step, after
    every teacher had trained)."""
    members = settings.get("ensemble", 1)
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"ensemble must be a whole number of models >= 1, got {members!r}")
    teachers = settings.get("distill", 0)
    if isinstance(teachers, bool) or not isinstance(teachers, int) or teachers < 0:
        raise ValueError(f"distill must be a whole number of teachers >= 0, got {teachers!r}")
    if teachers and members > 1:
        raise ValueError("distill and ensemble exclude each other: one publishes one model")
    if teachers and settings.get("stream", False):
        raise ValueError("distill needs the train split in memory: not with stream=true")
    bounds = {
        "distill_weight": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "distill_temperature": (lambda v: v > 0, "> 0"),
        "ema_epochs": (lambda v: v >= 0, ">= 0"),
    }
    for name, (within, text) in bounds.items():
        if name not in settings:
            continue
        v = settings[name]
        number = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not number or not within(v):
            raise ValueError(f"{name} must be a finite number {text}, got {v!r}")
