"""``train_transformer``: the Transformer ranker's training loop, as one typed function.

AdamW with linear warm-up and cosine decay, gradient clipping, early stopping on validation
NDCG@10 (the project's metric, lists without a positive excluded), the best weights kept,
resumable from a checkpoint, seeded (reproducible on the CPU with fixed thread counts), a
progress bar, and bf16 autocast on CUDA.

The splits are held on the training device as padded tensors when they fit (``device_data``,
see ``ranker.device_data``): batches are gathered there, the same batches in the same order as
the per-batch host path, and the loop does not wait on the device between steps (the loss is
summed there and read at validation).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ranker.data import RankData, to_padded
from ranker.device_data import DEVICE_DATA_MODES, place
from ranker.ensemble import TransformerModel
from ranker.losses import LOSSES, PER_CANDIDATE, bound_loss, distill_loss
from ranker.model import FeatureSpec, Ranker, RankerConfig, init_weights
from ranker.train.config import TrainConfig
from ranker.train.distributed import broadcast_float, check_replicas, mean_float, sum_int
from ranker.train.ema import EMA, snapshot
from ranker.train.launch import SINGLE, Launch, restores_torch_threads
from ranker.train.scoring import evaluate_ndcg, held_out_loss
from ranker.train.stream_data import StreamedSplit

log = logging.getLogger(__name__)


@dataclass
class EpochLog:
    epoch: float  # epochs of training done at this validation (1.5: half-way through the 2nd)
    train_loss: float
    valid_ndcg: float  # the selection rule's value: NDCG@k, or minus the held-out loss
    lr: float
    seconds: float
    lists_per_s: float


@dataclass
class TrainResult:
    model: TransformerModel
    best_epoch: float  # 0: the starting point (a residual re-ranker's baseline) was kept
    best_valid_ndcg: float
    history: list[EpochLog] = field(default_factory=list)
    checkpoint: dict[str, Any] = field(default_factory=dict)  # what resuming needs
    ema_decay: float = 0.0  # the weight average's decay a step (TrainConfig.ema_decay; 0: none)


# Called after each validation with its log and the model (the validated weights); a callback
# that returns True stops training there, as patience running out would (the best kept).
Callback = Callable[[EpochLog, Ranker], bool | None]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def scaled_lr(cfg: TrainConfig) -> float:
    """The learning rate for ``cfg.batch_lists`` (``cfg.lr`` holds at ``cfg.lr_ref_batch``)."""
    if cfg.lr_scaling == "sqrt":
        return cfg.lr * math.sqrt(cfg.batch_lists / cfg.lr_ref_batch)
    if cfg.lr_scaling == "none":
        return cfg.lr
    raise ValueError(f"lr_scaling must be sqrt or none, got {cfg.lr_scaling!r}")


def _elapsed(since: float, device: torch.device) -> float:
    """Seconds since ``since``, once the device has finished the work queued so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - since


@restores_torch_threads
def train_transformer(
    train: RankData | StreamedSplit,
    valid: RankData | StreamedSplit,
    spec: FeatureSpec,
    model_cfg: RankerConfig,
    cfg: TrainConfig,
    *,
    resume: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    checkpoint_path: Path | None = None,
    position_prior: np.ndarray | None = None,
    launch: Launch = SINGLE,
    select_by_loss: bool = False,
    teacher: np.ndarray | None = None,
) -> TrainResult:
    """Train until ``cfg.epochs`` or ``cfg.patience`` epochs without progress.

    ``resume``: a checkpoint (``TrainResult.checkpoint``, or the file ``checkpoint_path``
    written after every epoch) to continue from, exactly where it stopped.
    ``position_prior``: log examination propensity per logged position (index = position),
    where the position tower starts (see ``Ranker.start_position_bias``).
    ``launch``: this process's rank under torchrun (``ranker.train.distributed``; its process
    group already joined): each rank trains on its share of every batch, rank 0 validates and
    writes the checkpoint, all return the same model.
    ``select_by_loss``: validations (what early stopping and the kept weights go by) read
    minus the training loss on the validation split, the position tower on (the "loss"
    validation rule), rather than its NDCG@k.
    ``teacher``: (N,) a teacher's scores for the train split's candidates (served scores, no
    position tower): the loss becomes ``(1 - cfg.distill_weight)`` times the click loss plus
    ``cfg.distill_weight`` times ``distill_loss`` between the model's served scores and these.
    """
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}")
    if cfg.device_data not in DEVICE_DATA_MODES:
        raise ValueError(f"device_data must be one of {DEVICE_DATA_MODES}")
    lr = scaled_lr(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = launch.device(pick_device(cfg.device))
    model = Ranker(spec, model_cfg)
    init_weights(model, cfg.seed)
    if position_prior is not None:
        model.start_position_bias(position_prior)
    model.to(device)
    teacher_t = None
    if teacher is not None:
        if not isinstance(train, RankData):
            raise ValueError("distillation needs the train split in memory, not stream=true")
        # (N, Lmax) per list, read by each batch's list indices
        padded = to_padded(teacher, train.offsets).astype(np.float32)  # (N, Lmax)
        teacher_t = torch.from_numpy(padded).to(device)
    # Under torchrun the forward and backward go through DDP, which averages the gradients
    # across ranks during backward; everything else (EMA, validation, snapshots) reads the
    # module itself, whose weights every rank holds alike.
    net: torch.nn.Module = model
    if launch.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[launch.local_rank] if device.type == "cuda" else None
        )
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embeddings" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embeddings" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        fused=True if device.type == "cuda" else None,  # one kernel per step; CPU as before
    )
    log.info(
        "batch of %d lists, learning rate %.3g (%s scaling)", cfg.batch_lists, lr, cfg.lr_scaling
    )
    # Both splits built once on the device when they fit; otherwise the per-batch host path.
    train_src = (
        train
        if isinstance(train, StreamedSplit)
        else place(train, device, cfg.device_data, "train")
    )
    valid_src = (
        valid
        if isinstance(valid, StreamedSplit)
        else place(valid, device, cfg.device_data, "valid")
    )
    steps_per_epoch = math.ceil(len(train) / cfg.batch_lists)
    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = max(1, int(cfg.warmup_frac * total))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    # best starts below any value: the loss rule's values (minus a loss) are below -1 too
    start_epoch, best, best_epoch, bad_epochs, halted = 0, -math.inf, -1.0, 0, False
    best_state: dict[str, torch.Tensor] = {}
    rng = np.random.default_rng(cfg.seed)
    history: list[EpochLog] = []
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        start_epoch, best, best_epoch = (
            resume["epoch"] + 1,
            resume["best_valid_ndcg"],
            resume["best_epoch"],
        )
        bad_epochs = resume["bad_epochs"]
        best_state = resume["best_model"]
        rng.bit_generator.state = resume["numpy_rng"]
        torch.set_rng_state(resume["torch_rng"])
        history = [EpochLog(**h) for h in resume.get("history", [])]
    # An exponential moving average of the weights: click labels are noisy and single-epoch
    # snapshots of the raw weights swing; the average is what gets validated and kept.
    average = cfg.ema_decay(steps_per_epoch)
    ema = EMA(model, average) if average > 0 else None
    if ema is not None:
        log.info("weight average: decay %.5f a step (%d steps an epoch)", average, steps_per_epoch)
    if resume is not None and ema is not None and resume.get("ema") is not None:
        ema.shadow = resume["ema"]
    loss_fn = bound_loss(cfg.loss, k=cfg.loss_k, mu=cfg.loss_mu, alpha=cfg.loss_alpha)
    per_item = cfg.loss in PER_CANDIDATE
    use_positions = model_cfg.bias_tower

    def validation_score() -> float:
        """The current weights' validation value (higher is better): rank 0's, on every rank."""
        if not launch.leader:
            score = 0.0
        elif select_by_loss:
            score = -held_out_loss(model, valid_src, loss_fn, device, per_candidate=per_item)
        else:
            score = evaluate_ndcg(model, valid_src, cfg.eval_k, device)
        return broadcast_float(score, launch, device)

    metric = "minus held-out loss" if select_by_loss else f"ndcg@{cfg.eval_k}"

    if resume is None and spec.residual_input >= 0:
        # A residual re-ranker starts as its baseline: that is the score to beat on validation,
        # and the model kept if no epoch beats it.
        best = validation_score()
        best_epoch = 0.0
        best_state = snapshot(model)
        log.info("epoch 0 (the baseline): valid %s %.4f", metric, best)
    amp = device.type == "cuda"
    eval_steps = max(1, math.ceil(cfg.eval_every_lists / cfg.batch_lists))

    def validate(epoch_index: int, train_loss: float, seconds: float, seen: int) -> None:
        """Score the (averaged) weights on validation; keep them if they are the best yet."""
        nonlocal best, best_epoch, bad_epochs, best_state, halted
        seen = sum_int(seen, launch, device)  # lists trained on by all ranks this epoch
        epoch = epoch_index + seen / len(train)
        train_loss = mean_float(train_loss, launch, device)
        check_replicas(model, launch, f"at epoch {epoch:.3f}")
        with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
            score = validation_score()
            state = snapshot(model)
            entry = EpochLog(
                round(epoch, 3),
                train_loss,
                score,
                float(sched.get_last_lr()[0]),
                seconds,
                seen / max(seconds, 1e-9),
            )
            history.append(entry)
            if score > best:
                best, best_epoch, bad_epochs, best_state = score, entry.epoch, 0, state
            else:
                bad_epochs += 1
            log.info(
                "epoch %g: loss %.4f, valid %s %.4f (best %.4f at %g), %.0f lists/s",
                entry.epoch,
                entry.train_loss,
                metric,
                score,
                best,
                best_epoch,
                entry.lists_per_s,
            )
            # Rank 0 runs the callbacks (they see the validated weights) and every rank
            # learns whether one asked to stop, so all leave the loop at the same step.
            asked = any([bool(cb(entry, model)) for cb in callbacks]) if launch.leader else False
            halted = broadcast_float(float(asked), launch, device) > 0
        model.train()

    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience or halted:
            break
        model.train()
        seconds, n_batches, seen, stopped = 0.0, 0, 0, False
        # Summed on the device (float64, as the float sum it replaces) and read at validation:
        # reading it every step would make the host wait for the device every step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        # Timed from before each batch is built (the per-batch path's cost is in the figure),
        # up to the device finishing the segment's work, without the validations.
        t0 = time.perf_counter()
        shard = (launch.rank, launch.world)
        for batch in train_src.batches(cfg.batch_lists, shuffle=True, rng=rng, shard=shard):
            b = batch.to(device)  # a no-op for resident batches
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                scores = net(
                    b.num,
                    b.cat,
                    b.mask,
                    b.hist_num,
                    b.hist_cat,
                    b.hist_mask,
                    b.positions if use_positions else None,
                )
            loss = loss_fn(scores.float(), b.labels, mask=b.mask, weights=b.weights)
            if teacher_t is not None:
                # served scores: the position tower's share taken back out
                served = scores.float()
                if use_positions:
                    served = served - model.position_offset(b.positions).float()
                rows = b.index if b.index is not None else torch.as_tensor(b.lists, device=device)
                t = teacher_t.index_select(0, rows)[:, : served.shape[1]]  # (B, L)
                mix = cfg.distill_weight
                soft = distill_loss(served, t, mask=b.mask, temperature=cfg.distill_temperature)
                loss = (1 - mix) * loss + mix * soft
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            sched.step()
            loss_sum += loss.detach()
            n_batches += 1
            if cfg.check_replicas_every and n_batches % cfg.check_replicas_every == 0:
                check_replicas(model, launch, f"after step {n_batches} of epoch {epoch + 1}")
            seen += len(batch.lists)
            bar.update(1)
            if progress and n_batches % 16 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / n_batches:.4f}")
            if n_batches % eval_steps == 0 and n_batches < steps_per_epoch:
                seconds += _elapsed(t0, device)
                validate(epoch, float(loss_sum) / n_batches, seconds, seen)
                stopped = bad_epochs >= cfg.patience or halted
                if stopped:
                    break
                t0 = time.perf_counter()
        if not stopped:
            seconds += _elapsed(t0, device)
        bar.close()
        if not stopped:
            mean_loss = float(loss_sum) / max(n_batches, 1)
            validate(epoch, mean_loss, seconds, seen)
        last = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "best_valid_ndcg": best,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "best_model": best_state,
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(h) for h in history],
            "ema": None if ema is None else ema.shadow,
        }
        if checkpoint_path is not None and launch.leader:
            tmp = checkpoint_path.with_suffix(".tmp")
            torch.save(last, tmp)
            tmp.replace(checkpoint_path)
    model.load_state_dict(best_state or model.state_dict())
    model.eval()
    ckpt = last if history else {}
    return TrainResult(model.cpu(), best_epoch, best, history, ckpt, average)
