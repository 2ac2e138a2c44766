"""Scores of a trained Transformer over a whole split, and its NDCG: what validation, the
model kind's ``predict`` and the benchmarks share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ranker.data import Batch, RankData
from ranker.device_data import DeviceData
from ranker.ensemble import TransformerModel
from ranker.metrics import ndcg
from ranker.train.stream_data import StreamedSplit


@torch.no_grad()
def predict(
    model: TransformerModel,
    data: RankData | DeviceData,
    device: torch.device | None = None,
    batch_lists: int = 256,
) -> np.ndarray:
    """Scores (N,) for every candidate of a split, in the split's order."""
    device = device or next(model.parameters()).device
    model.eval()

    def score(b: Batch) -> torch.Tensor:
        return model(b.num, b.cat, b.mask, b.hist_num, b.hist_cat, b.hist_mask)  # (B, L)

    if isinstance(data, DeviceData):  # the same batches, scores gathered on the device
        return data.scores(score, batch_lists)
    out = np.zeros(data.lists.n_items, np.float32)
    for batch in data.batches(batch_lists, shuffle=False):
        s = score(batch.to(device)).float().cpu().numpy()
        rows = data.offsets[batch.lists][:, None] + np.arange(s.shape[1])[None, :]  # (B, L)
        m = batch.mask.numpy()
        out[rows[m]] = s[m]
    return out


def evaluate_ndcg(
    model: TransformerModel,
    data: RankData | DeviceData | StreamedSplit,
    k: int,
    device: torch.device,
) -> float:
    """Mean NDCG@k over the lists where it is defined. A streamed split is scored a window
    at a time; only each list's NDCG is kept (the same mean as in memory)."""
    return float(np.nanmean(np.concatenate(list(_list_ndcg(model, data, k, device)))))


def _list_ndcg(
    model: TransformerModel,
    data: RankData | DeviceData | StreamedSplit,
    k: int,
    device: torch.device,
) -> Iterator[np.ndarray]:
    """NDCG@k per list (NaN where undefined), in parts."""
    if isinstance(data, StreamedSplit):
        for groups in data.windows(shuffle=False, rng=None):
            yield from _list_ndcg(model, data.read(groups), k, device)
        return
    scores = predict(model, data, device)
    s, y, m = (data.data if isinstance(data, DeviceData) else data).padded_scores(scores)
    yield ndcg(s, y, mask=m, k=k)


@torch.no_grad()
def held_out_loss(
    model: torch.nn.Module,
    data: RankData | DeviceData | StreamedSplit,
    loss_fn: Callable[..., torch.Tensor],
    device: torch.device,
    batch_lists: int = 256,
    per_candidate: bool = False,
) -> float:
    """The training loss on held-out lists, the position tower on (as in training): how well
    the model and its own click model predict clicks it has not seen. Its mean over what the
    loss averages over (the lists with a click; every real candidate when ``per_candidate``,
    see ranker.losses.PER_CANDIDATE), whatever the batching."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    counted = torch.zeros((), dtype=torch.float64, device=device)
    for batch in data.batches(batch_lists, shuffle=False):
        b = batch.to(device)
        # (a Ranker, or any module of its forward with a position tower or none)
        positions = b.positions if getattr(model, "position_bias", None) is not None else None
        s = model(b.num, b.cat, b.mask, b.hist_num, b.hist_cat, b.hist_mask, positions)  # (B, L)
        if per_candidate:
            n = b.mask.sum().double()
        else:
            n = ((b.labels > 0) & b.mask).any(dim=1).sum().double()  # lists the loss counts
        total += loss_fn(s.float(), b.labels, mask=b.mask, weights=b.weights).double() * n
        counted += n
    return float(total / counted.clamp(min=1.0))
