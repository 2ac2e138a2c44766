"""The Transformer's train and validation splits streamed from Parquet row groups
(``--set stream=true``).

In memory, a split costs its features whole, and more once batched: training on the
10M-impression dataset (7.0M train candidates) peaked at 14.9 GB loaded, 1.9 GB streamed
4,096 lists at a time (benchmarks/train_memory.py). Streamed, an epoch reads the train split's row groups in a
seeded random order, ``stream_window_lists`` lists at a time (whole row groups): each window
is shuffled and batched by length as the in-memory path batches the whole split, and is
dropped before the next is read. Validation reads the validation split the same way, in file
order, and keeps only each list's NDCG. Peak memory follows the window, not the splits; what
stays is each split without its features (labels, positions and the bias-correction weights
or the validation rule's labels and mask per candidate, ``ranker.train.lgbm_stream.light_split``).

The order differs from the in-memory path's (lists mix within a window, not across the whole
split), so the model is not the same one; every rank of a torchrun launch reads the same
windows in the same order and takes its share of each batch, as in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.lists.io import from_arrow
from pipelines.lists.manifest import Manifest
from ranker.data import Batch, RankData

# Everything a training batch reads; not the item ids, users, queries or times.
STREAM_COLUMNS = (
    "request_id",
    "labels",
    "positions",
    "num",
    "cat",
    "hist_item_ids",
    "hist_num",
    "hist_cat",
)


class StreamedSplit:
    """A split whose features are read a window of row groups at a time. ``light``: the same
    split without features, with the weights (and labels) training uses per candidate, or
    for the validation split the labels and mask of its validation rule."""

    def __init__(self, path: Path, manifest: Manifest, light: RankData, window_lists: int):
        if window_lists < 1:
            raise ValueError(f"stream_window_lists must be >= 1, got {window_lists}")
        self.file = pq.ParquetFile(path)
        self.manifest, self.light, self.window_lists = manifest, light, window_lists
        sizes = [self.file.metadata.row_group(r).num_rows for r in range(self.file.num_row_groups)]
        self.group_lists = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if self.group_lists[-1] != len(light):
            raise ValueError(f"{path}: {self.group_lists[-1]} lists, the light split {len(light)}")
        names = self.file.schema_arrow.names
        self.columns = [c for c in STREAM_COLUMNS if c in names]

    def __len__(self) -> int:
        return len(self.light)

    @property
    def n_num(self) -> int:
        return len(self.manifest.numeric)

    def windows(self, shuffle: bool, rng: np.random.Generator | None) -> Iterator[list[int]]:
        """Row groups in windows of about ``window_lists`` lists (a larger group on its own)."""
        n = self.file.num_row_groups
        order = (rng or np.random.default_rng(0)).permutation(n) if shuffle else np.arange(n)
        window: list[int] = []
        size = 0
        for g in order.tolist():
            rows = int(self.group_lists[g + 1] - self.group_lists[g])
            if window and size + rows > self.window_lists:
                yield window
                window, size = [], 0
            window.append(g)
            size += rows
        if window:
            yield window

    def read(self, groups: list[int]) -> RankData:
        """Row groups ``groups`` (in that order) with their candidates' weights and labels."""
        m = self.manifest
        lists = from_arrow(
            self.file.read_row_groups(groups, columns=self.columns),
            len(m.numeric),
            len(m.categorical),
            len(m.history_numeric),
            len(m.history_categorical),
        )
        off = self.light.offsets
        rows = np.concatenate(
            [np.arange(off[self.group_lists[g]], off[self.group_lists[g + 1]]) for g in groups]
        )
        if len(rows) != lists.n_items:
            raise ValueError("the streamed row groups and the light split disagree")
        return RankData(
            lists,
            weights=self.light.weights[rows],
            max_history=self.light.max_history,
            labels=self.light.labels[rows],
            eval_mask=None if self.light.eval_mask is None else self.light.eval_mask[rows],
        )

    def batches(
        self,
        batch_lists: int,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """``RankData.batches`` a window at a time (see the module's note on the order)."""
        for groups in self.windows(shuffle, rng):
            yield from self.read(groups).batches(batch_lists, shuffle, rng, shard)
