"""From the lists dataset to model inputs: padded batches for the Transformer, flat matrices
for LightGBM, and the list-level arrays metrics need.

Batches are bucketed by list length: lists of similar length travel together and each batch
is padded only to its own longest list, which is where most of the CPU time of a naive loop
goes (padding every batch to the longest list in the dataset).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.lists.table import Lists


@dataclass
class Batch:
    """Padded tensors of B lists; L = the batch's longest list, H = its longest history."""

    num: torch.Tensor  # (B, L, F) float32, raw values (the model normalises)
    cat: torch.Tensor  # (B, L, C) int64
    mask: torch.Tensor  # (B, L) bool, True for real candidates
    hist_num: torch.Tensor  # (B, H, Hn) float32
    hist_cat: torch.Tensor  # (B, H, Hc) int64
    hist_mask: torch.Tensor  # (B, H) bool
    labels: torch.Tensor  # (B, L) float32
    weights: torch.Tensor  # (B, L) float32 (inverse propensity weights, or ones)
    positions: torch.Tensor  # (B, L) int64, logged position (0 = none); training only
    lists: np.ndarray  # (B,) index of each list in the split
    # (B,) the same indices on the device (device-resident batches only): where scores go back
    index: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        # Already-resident tensors (DeviceData batches) make this a no-op: .to returns them.
        t = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return Batch(**t, lists=self.lists)


class RankData:
    """One split ready for batching: the Lists plus extra numeric columns and weights."""

    def __init__(
        self,
        lists: Lists,
        extra_num: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        max_history: int = 50,
        labels: np.ndarray | None = None,
        eval_mask: np.ndarray | None = None,
    ):
        self.lists = lists
        # (N,) bool, validation only: the candidates the metric reads (the others are scored,
        # in their lists, but neither gain nor rank); see ranker.train.prepare.validation_set
        self.eval_mask = eval_mask
        n = lists.n_items
        self.num = (
            lists.num
            if extra_num is None
            else np.concatenate([lists.num, extra_num.astype(np.float32)], axis=1)
        )
        self.cat = lists.cat.astype(np.int64)
        # Labels as the loss and the metrics see them (validation may use de-biased gains).
        self.labels = (lists.labels if labels is None else labels).astype(np.float32)
        self.weights = np.ones(n, np.float32) if weights is None else weights.astype(np.float32)
        self.positions = (
            np.zeros(n, np.int64) if lists.positions is None else lists.positions.astype(np.int64)
        )
        self.lens = lists.list_lengths()
        self.offsets = lists.offsets
        self.max_history = max_history
        if (
            lists.hist_offsets is not None
            and lists.hist_num is not None
            and lists.hist_cat is not None
        ):
            self.hist_offsets = lists.hist_offsets
            self.hist_num = lists.hist_num
            self.hist_cat = lists.hist_cat.astype(np.int64)
        else:
            self.hist_offsets = np.zeros(len(lists) + 1, np.int64)
            self.hist_num = np.zeros((0, 0), np.float32)
            self.hist_cat = np.zeros((0, 0), np.int64)

    def __len__(self) -> int:
        return len(self.lens)

    def subset(self, idx: np.ndarray) -> RankData:
        """Lists ``idx`` (in that order) with their weights, labels and extra columns."""
        idx = np.asarray(idx, np.int64)
        rows = candidate_rows(self.offsets, idx)
        n_own = self.lists.num.shape[1]
        return RankData(
            self.lists.select(idx),
            extra_num=self.num[rows, n_own:] if self.num.shape[1] > n_own else None,
            weights=self.weights[rows],
            max_history=self.max_history,
            labels=self.labels[rows],
            eval_mask=None if self.eval_mask is None else self.eval_mask[rows],
        )

    @property
    def n_num(self) -> int:
        return self.num.shape[1]

    def batch(self, idx: np.ndarray) -> Batch:
        """Lists ``idx`` padded to their own longest list and history."""
        lens = self.lens[idx]
        width = max(1, int(lens.max()) if len(idx) else 1)
        j = np.arange(width)
        mask = j[None, :] < lens[:, None]  # (B, L)
        rows = np.where(mask, self.offsets[idx, None] + j[None, :], 0)  # (B, L) candidate rows
        hlen = np.minimum(self.hist_offsets[idx + 1] - self.hist_offsets[idx], self.max_history)
        hwidth = max(1, int(hlen.max()) if len(idx) else 1)
        k = np.arange(hwidth)
        hmask = k[None, :] < hlen[:, None]  # (B, H)
        # The most recent events when a history is longer than max_history.
        hstart = self.hist_offsets[idx + 1] - hlen
        hrows = np.where(hmask, hstart[:, None] + k[None, :], 0)  # (B, H)

        def pad(a: np.ndarray, r: np.ndarray, m: np.ndarray) -> torch.Tensor:
            if a.shape[0] == 0:
                return torch.zeros((*r.shape, *a.shape[1:]), dtype=torch.from_numpy(a[:0]).dtype)
            out = a[r]
            out[~m] = 0
            return torch.from_numpy(out)

        return Batch(
            num=pad(self.num, rows, mask),
            cat=pad(self.cat, rows, mask),
            mask=torch.from_numpy(mask),
            hist_num=pad(self.hist_num, hrows, hmask),
            hist_cat=pad(self.hist_cat, hrows, hmask),
            hist_mask=torch.from_numpy(hmask),
            labels=pad(self.labels, rows, mask),
            weights=pad(self.weights, rows, mask),
            positions=pad(self.positions, rows, mask),
            lists=idx,
        )

    def batches(
        self,
        batch_lists: int,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """All lists in batches of ``batch_lists``, bucketed by length.

        With ``shuffle``, lists are shuffled within buckets of similar length and the batch
        order is shuffled, so every epoch sees different batches of still-similar lengths.
        ``shard=(rank, world)``: the rank's share of each batch (see ``shard_part``).
        """
        order, starts = epoch_order(self.lens, batch_lists, shuffle, rng)
        for s in starts:
            part = shard_part(len(order[s : s + batch_lists]), *shard)
            if part is not None:
                yield self.batch(order[s : s + batch_lists][part])

    def hist_lengths(self) -> np.ndarray:
        """(B,) events of each list's history that batches keep (at most ``max_history``)."""
        return np.minimum(np.diff(self.hist_offsets), self.max_history)

    def padded_scores(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat (N,) scores -> (scores, labels, mask), each (B, Lmax), for the metrics; only
        the candidates of ``eval_mask`` when it is set (labels zeroed elsewhere: the ideal DCG
        reads the labels)."""
        mask = mask_of(self.offsets)
        labels = to_padded(self.labels, self.offsets)
        if self.eval_mask is not None:
            mask &= to_padded(self.eval_mask.astype(np.float64), self.offsets) > 0
            labels = np.where(mask, labels, 0.0)
        return to_padded(scores, self.offsets), labels, mask


def candidate_rows(offsets: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """The candidate rows of ``lists``, list by list in that order (``offsets``: (n + 1,))."""
    lens = np.diff(offsets)[lists]
    starts = np.repeat(offsets[lists] - np.cumsum(lens) + lens, lens)
    return starts + np.arange(int(lens.sum()))


def epoch_order(
    lens: np.ndarray, batch_lists: int, shuffle: bool, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): lists in batch order, and where each batch starts in ``order``.

    One function for every batching path, so that a seed gives the same batches whichever path
    builds them (it draws from ``rng`` exactly as the per-batch path always has).
    """
    n = len(lens)
    if shuffle:
        assert rng is not None
        # Coarse length buckets (4 candidates wide) in random order inside each bucket.
        order = np.lexsort((rng.random(n), lens // 4))
        starts = np.arange(0, n, batch_lists)
        rng.shuffle(starts)
    else:
        order = np.argsort(lens, kind="stable")
        starts = np.arange(0, n, batch_lists)
    return order, starts


def shard_part(n: int, rank: int, world: int) -> slice | None:
    """Rank ``rank``'s contiguous share of a batch of ``n`` lists among ``world`` ranks (sizes
    as ``np.array_split`` gives them); None, on every rank alike, for a batch too small to give
    each rank a list (only an epoch's last batch can be)."""
    if n < world:
        return None
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def to_padded(values: np.ndarray, offsets: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Flat per-candidate values (N,) -> (B, Lmax) padded with ``fill``."""
    lens = np.diff(offsets)
    width = max(1, int(lens.max()) if len(lens) else 1)
    out = np.full((len(lens), width), fill, dtype=np.float64)
    m = mask_of(offsets)
    out[m] = values
    return out


def mask_of(offsets: np.ndarray) -> np.ndarray:
    lens = np.diff(offsets)
    width = max(1, int(lens.max()) if len(lens) else 1)
    return np.arange(width)[None, :] < lens[:, None]
