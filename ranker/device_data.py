"""A split's lists held on the training device as padded tensors, built once; batches gathered
there.

Why: on a GPU the per-batch host work of ``RankData.batch`` (numpy gathers and padding, then
host->device copies) bounds training, not the model. Here the split is padded and copied to the
device once; a batch is then a handful of ``index_select`` calls with a device index tensor: no
numpy and no host->device copy per batch (one small copy per epoch: the epoch's list order).

Storage pads every list to the split's longest list (L) and every history to its longest kept
history (H). A batch takes its lists' rows cut to the batch's own longest list and history, so
it equals ``RankData.batch`` of the same lists exactly (shapes and values) and no compute goes to
padding beyond what the per-batch path already pays. The padding costs memory only: on the demo's
train split (14,000 lists of mean length 36, longest 100) 2.8x the unpadded size, about 400 MiB,
0.3% of an H200; length buckets would save that memory at the price of batches spanning several
storage tensors, so one width is used. Splits over the memory budget (``place``) keep the
per-batch path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ranker.data import Batch, RankData, epoch_order, mask_of, shard_part

log = logging.getLogger(__name__)

DEVICE_DATA_MODES = ("auto", "on", "off")
INT32_MAX = np.iinfo(np.int32).max
ScoreFn = Callable[[Batch], torch.Tensor]  # a batch -> its scores (B, w)


@dataclass
class Footprint:
    """What a split takes on the device once padded."""

    lists: int
    width: int  # L, the longest list
    hist_width: int  # H, the longest kept history
    nbytes: int
    unpadded_nbytes: int  # the same values without padding, for the waste ratio

    def describe(self) -> str:
        waste = self.nbytes / max(self.unpadded_nbytes, 1)
        return (
            f"{self.lists} lists padded to {self.width} candidates and {self.hist_width} history "
            f"events: {self.nbytes / 2**20:.0f} MiB ({waste:.1f}x the unpadded size)"
        )


def _code_dtype(a: np.ndarray) -> torch.dtype:
    """int32 storage for integer codes that fit (half of int64); batches hand out int64."""
    fits = a.size == 0 or (int(a.min()) >= -INT32_MAX and int(a.max()) <= INT32_MAX)
    return torch.int32 if fits else torch.int64


def footprint(data: RankData) -> Footprint:
    n = len(data)
    width = max(1, int(data.lens.max()) if n else 1)
    hist_width = max(1, int(data.hist_lengths().max()) if n else 1)
    code = 4 if _code_dtype(data.cat) == torch.int32 else 8
    # Per candidate slot: numeric features, codes, label, weight, position (int32), mask.
    slot = 4 * data.num.shape[1] + code * data.cat.shape[1] + 4 + 4 + 4 + 1
    hslot = 4 * data.hist_num.shape[1] + code * data.hist_cat.shape[1] + 1
    rows, hrows = int(data.lens.sum()), int(data.hist_lengths().sum())
    return Footprint(
        n,
        width,
        hist_width,
        n * (width * slot + hist_width * hslot),
        rows * slot + hrows * hslot,
    )


class DeviceData:
    """One split as padded tensors on ``device``, built once from a ``RankData``."""

    def __init__(self, data: RankData, device: torch.device, chunk_lists: int = 4096):
        self.data = data
        self.device = device
        self.lens = data.lens
        self.hist_lens = data.hist_lengths()
        fp = footprint(data)
        self.footprint = fp
        n, w, hw = fp.lists, fp.width, fp.hist_width

        def zeros(*shape: int, dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        code = _code_dtype(data.cat)
        self.num = zeros(n, w, data.num.shape[1], dtype=torch.float32)  # (N, L, F)
        self.cat = zeros(n, w, data.cat.shape[1], dtype=code)  # (N, L, C)
        self.mask = zeros(n, w, dtype=torch.bool)  # (N, L)
        self.labels = zeros(n, w, dtype=torch.float32)  # (N, L)
        self.weights = zeros(n, w, dtype=torch.float32)  # (N, L)
        self.positions = zeros(n, w, dtype=_code_dtype(data.positions))  # (N, L)
        self.hist_num = zeros(n, hw, data.hist_num.shape[1], dtype=torch.float32)  # (N, H, Hn)
        self.hist_cat = zeros(n, hw, data.hist_cat.shape[1], dtype=_code_dtype(data.hist_cat))
        self.hist_mask = zeros(n, hw, dtype=torch.bool)  # (N, H)
        # Filled in chunks by the per-batch path itself: equal to it by construction, and the
        # host never holds more than one chunk padded.
        for lo in range(0, n, chunk_lists):
            hi = min(n, lo + chunk_lists)
            b = data.batch(np.arange(lo, hi))
            bw, bh = b.mask.shape[1], b.hist_mask.shape[1]
            for name in ("num", "cat", "mask", "labels", "weights", "positions"):
                getattr(self, name)[lo:hi, :bw].copy_(getattr(b, name))
            for name in ("hist_num", "hist_cat", "hist_mask"):
                getattr(self, name)[lo:hi, :bh].copy_(getattr(b, name))

    def __len__(self) -> int:
        return len(self.lens)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in vars(self).values() if _is_tensor(t))

    def gather(self, index: torch.Tensor, lists: np.ndarray, width: int, hwidth: int) -> Batch:
        """Lists ``index`` (a device tensor; ``lists``: the same on the host), cut to ``width``
        candidates and ``hwidth`` history events (their longest)."""

        def take(t: torch.Tensor, w: int) -> torch.Tensor:
            return t[:, :w].index_select(0, index)  # (N, L, ...) -> (B, w, ...)

        return Batch(
            num=take(self.num, width),
            cat=take(self.cat, width).long(),
            mask=take(self.mask, width),
            hist_num=take(self.hist_num, hwidth),
            hist_cat=take(self.hist_cat, hwidth).long(),
            hist_mask=take(self.hist_mask, hwidth),
            labels=take(self.labels, width),
            weights=take(self.weights, width),
            positions=take(self.positions, width).long(),
            lists=lists,
            index=index,
        )

    def batch(self, idx: np.ndarray) -> Batch:
        """Lists ``idx``, as ``RankData.batch`` gives them (copies ``idx``: for tests, not loops)."""
        width = max(1, int(self.lens[idx].max()) if len(idx) else 1)
        hwidth = max(1, int(self.hist_lens[idx].max()) if len(idx) else 1)
        index = torch.as_tensor(idx, dtype=torch.int64, device=self.device)
        return self.gather(index, np.asarray(idx), width, hwidth)

    def batches(
        self,
        batch_lists: int,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """The batches ``RankData.batches`` yields for the same arguments and rng state."""
        order, starts = epoch_order(self.lens, batch_lists, shuffle, rng)
        if len(order) == 0:
            return
        # Each batch's widths, computed for the whole epoch at once on the host; the order goes
        # to the device in one copy and batches slice it (views, no copies).
        cuts = np.arange(0, len(order), batch_lists)
        widths = np.maximum(np.maximum.reduceat(self.lens[order], cuts), 1)
        hwidths = np.maximum(np.maximum.reduceat(self.hist_lens[order], cuts), 1)
        order_dev = torch.from_numpy(order.astype(np.int64)).to(self.device)
        for s in starts:
            k = s // batch_lists
            part = shard_part(len(order[s : s + batch_lists]), *shard)
            if part is None:
                continue
            if shard[1] == 1:
                sl, w, hw = slice(s, s + batch_lists), int(widths[k]), int(hwidths[k])
            else:  # the rank's share of the batch, cut to its own longest list and history
                sl = slice(s + part.start, s + part.stop)
                w = max(1, int(self.lens[order[sl]].max()))
                hw = max(1, int(self.hist_lens[order[sl]].max()))
            yield self.gather(order_dev[sl], order[sl], w, hw)

    @torch.no_grad()
    def scores(self, score_batch: ScoreFn, batch_lists: int) -> np.ndarray:
        """Flat (N,) scores in the split's order; one device->host copy at the end."""
        out = torch.zeros(self.mask.shape, dtype=torch.float32, device=self.device)  # (N, L)
        for b in self.batches(batch_lists):
            assert b.index is not None
            s = score_batch(b).float()  # (B, w)
            out[:, : s.shape[1]].index_copy_(0, b.index, s)
        return out.cpu().numpy()[mask_of(self.data.offsets)]  # (N, L) -> (n_items,)


def _is_tensor(v: object) -> bool:
    return isinstance(v, torch.Tensor)


def memory_budget(device: torch.device, share: float) -> int:
    """Bytes a resident split may take: ``share`` of the device's free memory (host RAM for
    the CPU), leaving the rest to the model, activations and everything else."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(share * free)
    avail = _host_available()
    return int(share * avail)


def _host_available() -> int:
    try:
        # MemAvailable counts reclaimable page cache; sysconf's free pages do not.
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def place(
    data: RankData, device: torch.device, mode: str = "auto", name: str = "", share: float = 0.4
) -> RankData | DeviceData:
    """``data`` resident on ``device`` (``DeviceData``), or as it is (the per-batch path).

    mode "on": resident whatever the size; "off": the per-batch path; "auto": resident when the
    padded split fits ``share`` of the free memory, with a log line either way.
    """
    if mode not in DEVICE_DATA_MODES:
        raise ValueError(f"device_data must be one of {DEVICE_DATA_MODES}, got {mode!r}")
    if mode == "off" or len(data) == 0:
        return data
    fp = footprint(data)
    if mode == "auto":
        budget = memory_budget(device, share)
        if fp.nbytes > budget:
            log.warning(
                "%s split not resident on %s: %s, over the budget of %.0f MiB (%.0f%% of free "
                "memory); batches built per step on the host (device_data=auto)",
                name,
                device,
                fp.describe(),
                budget / 2**20,
                100 * share,
            )
            return data
    out = DeviceData(data, device)
    log.info("%s split resident on %s: %s", name, device, fp.describe())
    return out
