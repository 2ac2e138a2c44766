"""``train_transformer``: the Transformer ranker's training loop, as one typed function.

AdamW with linear warm-up and cosine decay, gradient clipping, early stopping on validation
NDCG@10 (the project's metric, lists without a positive excluded), the best weights kept,
resumable from a checkpoint, seeded (reproducible on the CPU with fixed thread counts), a
progress bar, and bf16 autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipelines.lists.manifest import Manifest, NumericFeature
from ranker.data import RankData
from ranker.losses import LOSSES
from ranker.metrics import ndcg
from ranker.model import Ranker, RankerConfig, init_weights

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    loss: str = "softmax"  # softmax | lambdaloss | approxndcg | bce
    epochs: int = 30
    batch_lists: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    patience: int = 4  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
    threads: int | None = None  # torch CPU threads; fixed for reproducible scores
    device: str = "auto"  # auto | cpu | cuda
    eval_k: int = 10
    # Also validate after every this many training lists inside an epoch (patience counts
    # validations): on a large dataset the best model can come before the first epoch ends.
    eval_every_lists: int = 16_384
    ema: float = 0.99  # decay of the weight average validated and kept (0: the raw weights)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: float  # epochs of training done at this validation (1.5: half-way through the 2nd)
    train_loss: float
    valid_ndcg: float
    lr: float
    seconds: float
    lists_per_s: float


@dataclass
class TrainResult:
    model: Ranker
    best_epoch: float  # 0: the starting point (a residual re-ranker's baseline) was kept
    best_valid_ndcg: float
    history: list[EpochLog] = field(default_factory=list)
    checkpoint: dict[str, Any] = field(default_factory=dict)  # what resuming needs


Callback = Callable[[EpochLog, Ranker], None]  # after each validation: its log and the model


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_transformer(
    train: RankData,
    valid: RankData,
    model_cfg: RankerConfig,
    cfg: TrainConfig,
    *,
    resume: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    checkpoint_path: Path | None = None,
) -> TrainResult:
    """Train until ``cfg.epochs`` or ``cfg.patience`` epochs without progress.

    ``resume``: a checkpoint (``TrainResult.checkpoint``, or the file ``checkpoint_path``
    written after every epoch) to continue from, exactly where it stopped.
    """
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model = Ranker(model_cfg)
    init_weights(model, cfg.seed)
    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embeddings" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embeddings" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
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
    start_epoch, best, best_epoch, bad_epochs = 0, -1.0, -1.0, 0
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
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    if resume is not None and ema is not None and resume.get("ema") is not None:
        ema.shadow = resume["ema"]
    loss_fn = LOSSES[cfg.loss]
    use_positions = model_cfg.bias_tower
    if resume is None and model_cfg.residual_input >= 0:
        # A residual re-ranker starts as its baseline: that is the score to beat on validation,
        # and the model kept if no epoch beats it.
        best = evaluate_ndcg(model, valid, cfg.eval_k, device)
        best_epoch = 0.0
        best_state = snapshot(model)
        log.info("epoch 0 (the baseline): valid ndcg@%d %.4f", cfg.eval_k, best)
    amp = device.type == "cuda"
    eval_steps = max(1, math.ceil(cfg.eval_every_lists / cfg.batch_lists))

    def validate(epoch: float, train_loss: float, seconds: float, seen: int) -> None:
        """Score the (averaged) weights on validation; keep them if they are the best yet."""
        nonlocal best, best_epoch, bad_epochs, best_state
        with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
            score = evaluate_ndcg(model, valid, cfg.eval_k, device)
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
                "epoch %g: loss %.4f, valid ndcg@%d %.4f (best %.4f at %g), %.0f lists/s",
                entry.epoch,
                entry.train_loss,
                cfg.eval_k,
                score,
                best,
                best_epoch,
                entry.lists_per_s,
            )
            for cb in callbacks:  # they see the weights that were validated
                cb(entry, model)
        model.train()

    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        model.train()
        seconds, total_loss, n_batches, seen, stopped = 0.0, 0.0, 0, 0, False
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for batch in train.batches(cfg.batch_lists, shuffle=True, rng=rng):
            t0 = time.perf_counter()
            b = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                scores = model(
                    b.num,
                    b.cat,
                    b.mask,
                    b.hist_num,
                    b.hist_cat,
                    b.hist_mask,
                    b.positions if use_positions else None,
                )
            loss = loss_fn(scores.float(), b.labels, mask=b.mask, weights=b.weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            sched.step()
            total_loss += float(loss.detach())
            n_batches += 1
            seen += len(batch.lists)
            seconds += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / n_batches:.4f}")
            if n_batches % eval_steps == 0 and n_batches < steps_per_epoch:
                validate(epoch + seen / len(train), total_loss / n_batches, seconds, seen)
                stopped = bad_epochs >= cfg.patience
                if stopped:
                    break
        bar.close()
        if not stopped:
            validate(epoch + seen / len(train), total_loss / max(n_batches, 1), seconds, seen)
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
        if checkpoint_path is not None:
            tmp = checkpoint_path.with_suffix(".tmp")
            torch.save(last, tmp)
            tmp.replace(checkpoint_path)
    model.load_state_dict(best_state or model.state_dict())
    model.eval()
    ckpt = last if history else {}
    return TrainResult(model.cpu(), best_epoch, best, history, ckpt)


def snapshot(model: Ranker) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights, unaffected by later training steps."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: Ranker, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: Ranker) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def swapped_in(self, model: Ranker) -> Iterator[None]:
        """Run with the averaged weights, then put the raw ones back."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(raw)


@torch.no_grad()
def predict(
    model: Ranker, data: RankData, device: torch.device | None = None, batch_lists: int = 256
) -> np.ndarray:
    """Scores (N,) for every candidate of a split, in the split's order."""
    device = device or next(model.parameters()).device
    model.eval()
    out = np.zeros(data.lists.n_items, np.float32)
    for batch in data.batches(batch_lists, shuffle=False):
        b = batch.to(device)
        s = model(b.num, b.cat, b.mask, b.hist_num, b.hist_cat, b.hist_mask).float().cpu().numpy()
        rows = data.offsets[batch.lists][:, None] + np.arange(s.shape[1])[None, :]
        m = batch.mask.numpy()
        out[rows[m]] = s[m]
    return out


def evaluate_ndcg(model: Ranker, data: RankData, k: int, device: torch.device) -> float:
    scores = predict(model, data, device)
    s, y, m = data.padded_scores(scores)
    return float(np.nanmean(ndcg(s, y, mask=m, k=k)))


def save_checkpoint(
    result: TrainResult, model_cfg: RankerConfig, cfg: TrainConfig, path: Path
) -> None:
    torch.save(
        {
            **result.checkpoint,
            "best_model": {k: v.cpu() for k, v in result.model.state_dict().items()},
            "model_config": model_cfg.to_dict(),
            "train_config": cfg.to_dict(),
        },
        path,
    )


def load_model(path: Path) -> tuple[Ranker, dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = Ranker(RankerConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["best_model"])
    model.eval()
    return model, ckpt


def config_from_manifest(
    manifest: Manifest, extra: Sequence[NumericFeature] = (), **arch: Any
) -> RankerConfig:
    """A RankerConfig for a dataset's features (plus extra numeric inputs, e.g. re-ranking)."""
    num = list(manifest.numeric) + list(extra)
    cat_names = manifest.categorical_names
    group_col = (manifest.config.get("list", {}) or {}).get("group_column")
    shared = []
    for f in manifest.history_categorical:
        target = f.name if f.name in cat_names else group_col if f.name == "group" else None
        j = cat_names.index(target) if target in cat_names else -1
        shared.append(j if j >= 0 and manifest.categorical[j].size == f.size else -1)
    return RankerConfig(
        num_transforms=[f.transform for f in num],
        num_mean=[f.mean for f in num],
        num_std=[f.std for f in num],
        cat_sizes=[f.size for f in manifest.categorical],
        hist_num_transforms=[f.transform for f in manifest.history_numeric],
        hist_num_mean=[f.mean for f in manifest.history_numeric],
        hist_num_std=[f.std for f in manifest.history_numeric],
        hist_cat_sizes=[f.size for f in manifest.history_categorical],
        hist_cat_shared=shared,
        **arch,
    )
