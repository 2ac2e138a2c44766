"""Writing and reading lists datasets."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io import atomic_dir, write_json_atomic
from pipelines.lists.manifest import SPLITS, Manifest, apply_transform
from pipelines.lists.table import Lists, flat_matrix, flat_values, list_array, matrix_list_array

# Fast zstd (level -3): about 30% quicker to write than the default level for 13% more bytes;
# dictionaries only where values repeat (item ids), no per-page statistics.
WRITE_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": -3,
    "use_dictionary": ["item_ids.list.element", "hist_item_ids.list.element"],
    "write_statistics": False,
}


def to_arrow(lists: Lists) -> pa.Table:
    off = lists.offsets
    cols: dict[str, pa.Array] = {"request_id": pa.array(lists.request_id, pa.string())}
    if lists.ts is not None:
        cols["ts"] = pa.array(lists.ts.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))
    if lists.user_id is not None:
        cols["user_id"] = pa.array(lists.user_id, pa.string())
    if lists.query is not None:
        cols["query"] = pa.array(lists.query, pa.string())
    if lists.randomized is not None:
        cols["randomized"] = pa.array(lists.randomized, pa.bool_())
    cols["item_ids"] = list_array(off, pa.array(lists.item_ids, pa.string()))
    cols["labels"] = list_array(off, pa.array(lists.labels, pa.int8()))
    if lists.positions is not None:
        cols["positions"] = list_array(off, pa.array(lists.positions, pa.int16()))
    if lists.policy_positions is not None:
        cols["policy_positions"] = list_array(off, pa.array(lists.policy_positions, pa.int16()))
    cols["num"] = matrix_list_array(off, lists.num.astype(np.float32), pa.float32())
    if lists.cat.shape[1]:
        cols["cat"] = matrix_list_array(off, lists.cat.astype(np.int32), pa.int32())
    if lists.hist_offsets is not None:
        hoff = lists.hist_offsets
        cols["hist_item_ids"] = list_array(hoff, pa.array(lists.hist_item_ids, pa.string()))
        if lists.hist_num is not None and lists.hist_num.shape[1]:
            cols["hist_num"] = matrix_list_array(
                hoff, lists.hist_num.astype(np.float32), pa.float32()
            )
        if lists.hist_cat is not None and lists.hist_cat.shape[1]:
            cols["hist_cat"] = matrix_list_array(hoff, lists.hist_cat.astype(np.int32), pa.int32())
    return pa.table(cols)


def from_arrow(
    t: pa.Table, n_num: int, n_cat: int, n_hist_num: int = 0, n_hist_cat: int = 0
) -> Lists:
    names = set(t.column_names)
    b = t.num_rows
    offsets, labels = flat_values(t.column("labels"))
    # Without the item ids (a reader that needs none, e.g. a streaming trainer): None each.
    items = (
        flat_values(t.column("item_ids"))[1].to_numpy(zero_copy_only=False).astype(object)
        if "item_ids" in names
        else np.full(int(offsets[-1]), None, dtype=object)
    )
    if "num" in names:
        _, num = flat_matrix(t.column("num"), np.float32)
    else:
        num = np.zeros((offsets[-1], n_num), np.float32)
    cat = (
        flat_matrix(t.column("cat"), np.int32)[1]
        if "cat" in names
        else np.zeros((offsets[-1], n_cat), np.int32)
    )
    out = Lists(
        request_id=t.column("request_id").to_numpy(zero_copy_only=False).astype(object),
        offsets=offsets,
        item_ids=items,
        labels=labels.to_numpy(zero_copy_only=False).astype(np.int8),
        num=num,
        cat=cat,
    )
    for name in ("positions", "policy_positions"):
        if name in names:
            flat = flat_values(t.column(name))[1]
            setattr(out, name, flat.to_numpy(zero_copy_only=False).astype(np.int16))
    if "ts" in names:
        out.ts = t.column("ts").to_numpy().astype("datetime64[us]")
    for name in ("user_id", "query"):
        if name in names:
            setattr(out, name, t.column(name).to_numpy(zero_copy_only=False).astype(object))
    if "randomized" in names:
        out.randomized = t.column("randomized").to_numpy(zero_copy_only=False).astype(bool)
    if "hist_item_ids" in names:
        hoff, hitems = flat_values(t.column("hist_item_ids"))
        out.hist_offsets = hoff
        out.hist_item_ids = hitems.to_numpy(zero_copy_only=False).astype(object)
        m = int(hoff[-1])
        out.hist_num = (
            flat_matrix(t.column("hist_num"), np.float32)[1]
            if "hist_num" in names
            else np.zeros((m, n_hist_num), np.float32)
        )
        out.hist_cat = (
            flat_matrix(t.column("hist_cat"), np.int32)[1]
            if "hist_cat" in names
            else np.zeros((m, n_hist_cat), np.int32)
        )
    assert len(out.request_id) == b
    return out


def read_split(dataset: Path, split: str, manifest: Manifest | None = None) -> Lists:
    """Read one split of a lists dataset into memory."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    m = manifest or Manifest.load(dataset)
    path = Path(dataset) / f"{split}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{dataset}: no {split}.parquet")
    t = pq.read_table(path)
    return from_arrow(
        t, len(m.numeric), len(m.categorical), len(m.history_numeric), len(m.history_categorical)
    )


class _Stats:
    """Running mean and variance of transformed numeric features (float64 sums)."""

    def __init__(self, transforms: list[str]):
        self.transforms = transforms
        self.n = 0
        self.s = np.zeros(len(transforms))
        self.ss = np.zeros(len(transforms))

    def add(self, num: np.ndarray) -> None:
        if not len(num):
            return
        self.n += len(num)
        for j, t in enumerate(self.transforms):
            col = num[:, j] if t == "none" else apply_transform(num[:, j], t)
            self.s[j] += col.sum(dtype=np.float64)
            self.ss[j] += np.dot(col.astype(np.float64), col.astype(np.float64))

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            return np.zeros_like(self.s), np.ones_like(self.s)
        mean = self.s / self.n
        var = np.maximum(self.ss / self.n - mean**2, 0.0)
        std = np.sqrt(var)
        return mean, np.where(std > 1e-6, std, 1.0)


class ListsWriter:
    """Write a dataset split by split, batch by batch; the manifest goes last.

    Normalisation statistics of the numeric features are fitted on what is written to
    ``train`` only. Use as a context manager from ``open_dataset``.
    """

    def __init__(self, tmp: Path, manifest: Manifest):
        self.tmp = tmp
        self.manifest = manifest
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._counts = {s: {"requests": 0, "items": 0} for s in SPLITS}
        self._stats = _Stats([f.transform for f in manifest.numeric])
        self._hist_stats = _Stats([f.transform for f in manifest.history_numeric])
        self._schema: pa.Schema | None = None
        self._ts_range: dict[str, list[np.datetime64]] = {}

    def write(self, split: str, lists: Lists) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        for what, got, declared in (
            ("numeric", lists.num.shape[1], len(self.manifest.numeric)),
            ("categorical", lists.cat.shape[1], len(self.manifest.categorical)),
        ):
            if got != declared:
                raise ValueError(f"{got} {what} columns, the manifest declares {declared}")
        table = to_arrow(lists)
        if self._schema is None:
            self._schema = table.schema
        table = table.cast(self._schema)
        if split not in self._writers:
            self._writers[split] = pq.ParquetWriter(
                self.tmp / f"{split}.parquet", self._schema, **WRITE_OPTIONS
            )
        if len(lists):
            self._writers[split].write_table(table, row_group_size=max(1, len(lists)))
        c = self._counts[split]
        c["requests"] += len(lists)
        c["items"] += lists.n_items
        if lists.ts is not None and len(lists):
            lo, hi = lists.ts.min(), lists.ts.max()
            cur = self._ts_range.setdefault(split, [lo, hi])
            cur[0], cur[1] = min(cur[0], lo), max(cur[1], hi)
        if split == "train":
            self._stats.add(lists.num)
            if lists.hist_num is not None and len(self.manifest.history_numeric):
                self._hist_stats.add(lists.hist_num)

    def finish(self) -> Manifest:
        for w in self._writers.values():
            w.close()
        for split in SPLITS:  # every split exists, possibly empty
            if split not in self._writers and self._schema is not None:
                pq.write_table(
                    self._schema.empty_table(), self.tmp / f"{split}.parquet", compression="zstd"
                )
        m = self.manifest
        for feats, stats in ((m.numeric, self._stats), (m.history_numeric, self._hist_stats)):
            mean, std = stats.mean_std()
            for f, mu, sd in zip(feats, mean, std, strict=True):
                f.mean, f.std = float(mu), float(sd)
        for split in SPLITS:
            info: dict[str, object] = dict(self._counts[split])
            if split in self._ts_range:
                lo, hi = self._ts_range[split]
                info["from"], info["to"] = str(lo) + "Z", str(hi) + "Z"
            m.splits[split] = info
        h = hashlib.sha256()
        for split in SPLITS:
            p = self.tmp / f"{split}.parquet"
            if p.exists():  # in 8 MiB pieces: a split can be larger than memory allows
                with p.open("rb") as fh:
                    while piece := fh.read(8 << 20):
                        h.update(piece)
        m.fingerprint = h.hexdigest()
        if not m.created:
            m.created = datetime.now(UTC).isoformat(timespec="seconds")
        write_json_atomic(m.to_dict(), self.tmp / "manifest.json")
        return m


def write_vocab(tmp: Path, name: str, values: list[str]) -> None:
    (tmp / "vocabs").mkdir(exist_ok=True)
    (tmp / "vocabs" / f"{name}.json").write_text(json.dumps(values))


@contextlib.contextmanager
def open_dataset(out: Path, manifest: Manifest) -> Iterator[ListsWriter]:
    """``with open_dataset(out, manifest) as w: w.write("train", lists) ...``

    The directory appears whole when the block ends without error, never half-written.
    """
    with atomic_dir(Path(out)) as tmp:
        writer = ListsWriter(tmp, manifest)
        yield writer
        writer.finish()
