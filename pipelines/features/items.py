"""The item table as features see it: attributes, vocabularies, locations, text tokens."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines.features.config import FeatureConfig
from pipelines.features.keys import KeyIndex, hash_strings
from pipelines.features.text import PAD, IdfTable, n_tokens, token_matrix, tokenize

TEXT_WIDTH = 16  # tokens kept per item text


class Vocab:
    """Values -> indices 1..n (0 = unknown); or, when hashed, 1 + hash % (size - 1)."""

    def __init__(self, values: list[str], hashed_size: int | None = None):
        self.values = values
        self.hashed = hashed_size is not None
        self.size = int(hashed_size) if hashed_size is not None else len(values) + 1
        self._keys: KeyIndex | None = None  # built on the first large lookup
        self._dict = {v: i + 1 for i, v in enumerate(values)} if not self.hashed else {}

    @classmethod
    def build(cls, values: pd.Series | np.ndarray, max_size: int) -> Vocab:
        uniq = sorted({str(v) for v in pd.Series(values).dropna().unique()})
        if len(uniq) + 1 > max_size:
            return cls([], hashed_size=max_size)
        return cls(uniq)

    def index(self, values: np.ndarray) -> np.ndarray:
        """(n,) int32 indices of ``values`` (strings or None)."""
        if self.hashed:
            known = pd.notna(values)
            h = hash_strings(np.where(known, values, "").astype(str).astype(object))
            return np.where(known, 1 + (h % np.uint64(self.size - 1)).astype(np.int64), 0).astype(
                np.int32
            )
        if len(values) < 256:  # small lookups (one live request): a dict beats pandas' overhead
            d = self._dict
            return np.fromiter(
                (
                    d.get(v, 0)
                    if isinstance(v, str)
                    else d.get(str(v), 0)
                    if v is not None and v == v
                    else 0
                    for v in values
                ),
                np.int32,
                len(values),
            )
        if self._keys is None:
            self._keys = KeyIndex(hash_strings(np.array(self.values, dtype=object)))
        known = pd.notna(values)
        text = np.where(known, values, "").astype(str).astype(object)
        idx = self._keys.get(hash_strings(text))
        return np.where(known, idx + 1, 0).astype(np.int32)


@dataclass
class ItemRefs:
    """Items as the state and the transforms address them."""

    ids: np.ndarray  # (n,) str
    hashes: np.ndarray  # (n,) uint64, stable hash of the id (counter keys)
    rows: np.ndarray  # (n,) int64 row in the item table, -1 when unknown

    def __getitem__(self, sel: slice | np.ndarray) -> ItemRefs:
        return ItemRefs(self.ids[sel], self.hashes[sel], self.rows[sel])


@dataclass
class ItemTable:
    ids: np.ndarray  # (n,) str
    num_names: list[str]
    num: np.ndarray  # (n, F) float32, NaN where unknown
    num_defaults: np.ndarray  # (F,) median of each column
    cat_names: list[str]
    cat: np.ndarray  # (n, C) int32
    vocabs: dict[str, Vocab]  # per categorical column, plus "item_id" and the group column
    lat: np.ndarray | None
    lon: np.ndarray | None
    open_hour: np.ndarray | None
    close_hour: np.ndarray | None
    text: np.ndarray | None  # (n, TEXT_WIDTH) hashed tokens of the configured text fields
    idf: IdfTable | None
    avg_text_len: float
    sim_text: np.ndarray | None  # (n, TEXT_WIDTH) tokens of list.similarity_text
    group: np.ndarray | None  # (n,) int32 group index (e.g. category), 0 = unknown
    group_vocab: Vocab | None
    id_index: np.ndarray  # (n,) int32 index of each item in the item-id vocabulary
    # Each column above with one fill row appended (see ``take``), built on first use.
    _padded: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def build(cls, items: pd.DataFrame, cfg: FeatureConfig) -> ItemTable:
        ic = cfg.items
        items = items.reset_index(drop=True)
        ids = items["item_id"].astype("str").to_numpy(dtype=object)
        num_names = list(ic.numeric)
        if ic.auto_numeric:
            skip = set(ic.location) | set(ic.hours) | {"item_id"}
            num_names += [
                c
                for c in items.columns
                if c not in skip
                and c not in num_names
                and pd.api.types.is_numeric_dtype(items[c])
                and not pd.api.types.is_bool_dtype(items[c])
            ]
        missing = [
            c
            for c in num_names + ic.categorical + ic.text + ic.location + ic.hours
            if c not in items.columns
        ]
        if missing:
            raise ValueError(f"items table lacks the configured column(s) {missing}")
        num = (
            items[num_names].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
            if num_names
            else np.zeros((len(items), 0), np.float32)
        )
        defaults = np.array(
            [
                np.nanmedian(num[:, j]) if np.isfinite(num[:, j]).any() else 0.0
                for j in range(num.shape[1])
            ],
            np.float32,
        )
        vocabs = {c: Vocab.build(items[c], ic.max_vocab) for c in ic.categorical}
        cat = (
            np.stack(
                [vocabs[c].index(items[c].to_numpy(dtype=object)) for c in ic.categorical], axis=1
            )
            if ic.categorical
            else np.zeros((len(items), 0), np.int32)
        )
        id_vocab = Vocab.build(items["item_id"].astype("str"), ic.max_vocab)
        vocabs["item_id"] = id_vocab

        def col(name: str) -> np.ndarray:
            return pd.to_numeric(items[name], errors="coerce").to_numpy(np.float64)

        text = idf = None
        avg = 0.0
        if ic.text:
            joined = (
                items[ic.text].astype("str").where(items[ic.text].notna(), "").agg(" ".join, axis=1)
            )
            text = token_matrix([tokenize(t) for t in joined], TEXT_WIDTH)
            idf = IdfTable(text)
            avg = float(n_tokens(text).mean()) if len(text) else 0.0
        sim = None
        if cfg.list.similarity_text:
            sim = token_matrix([tokenize(t) for t in items[cfg.list.similarity_text]], TEXT_WIDTH)
        group = group_vocab = None
        gcol = cfg.list.group_column or cfg.counters.group_column or cfg.history.category_column
        if gcol:
            group_vocab = vocabs.get(gcol) or Vocab.build(items[gcol], ic.max_vocab)
            group = group_vocab.index(items[gcol].to_numpy(dtype=object))
        return cls(
            ids=ids,
            num_names=num_names,
            num=num,
            num_defaults=defaults,
            cat_names=list(ic.categorical),
            cat=cat,
            vocabs=vocabs,
            lat=col(ic.location[0]) if ic.location else None,
            lon=col(ic.location[1]) if ic.location else None,
            open_hour=col(ic.hours[0]) if ic.hours else None,
            close_hour=col(ic.hours[1]) if ic.hours else None,
            text=text,
            idf=idf,
            avg_text_len=avg,
            sim_text=sim,
            group=group,
            group_vocab=group_vocab,
            id_index=id_vocab.index(ids),
        )

    def __post_init__(self) -> None:
        self.hashes = hash_strings(self.ids)
        self._index = KeyIndex(self.hashes)
        self._row_dict = {v: i for i, v in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def refs(self, item_ids: np.ndarray) -> ItemRefs:
        """Hash and table row of each item id (row -1 for items not in the table)."""
        ids = np.asarray(item_ids, dtype=object)
        if len(ids) < 256:  # one live request: dict lookups beat the vectorised path
            d = self._row_dict
            rows = np.fromiter(map(d.get, ids, itertools.repeat(-1)), np.int64, len(ids))
            hashes = (
                self.hashes[np.maximum(rows, 0)]
                if len(self.hashes)
                else np.zeros(len(ids), np.uint64)
            )
            if (rows < 0).any():
                hashes = np.where(rows < 0, hash_strings(ids), hashes)
            return ItemRefs(ids, hashes, rows)
        hashes = hash_strings(ids)
        return ItemRefs(ids, hashes, self._index.get(hashes))

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """(n,) row of each item id in the table, -1 for unknown items."""
        return self.refs(item_ids).rows

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` at item ``rows``, its fill value (``FILLS``) where the row is -1.

        The column carries its fill as one extra last row, so a row of -1 (unknown) picks it
        by ordinary indexing: one gather per column per request, no masking. ``num_filled`` is
        the numeric attributes as float64 with each column's median where the value is
        missing: the item features as a matrix indexed by item row, materialised once.
        """
        padded = self._padded.get(name)
        if padded is None:  # built once; two threads building it at once build the same
            padded = self._padded[name] = self._pad(name)
        if padded.ndim == 0:  # a column this table does not have: the fill everywhere
            return np.full(len(rows), padded[()])
        return padded[rows]

    def _pad(self, name: str) -> np.ndarray:
        if name == "num_filled":
            num = self.num.astype(np.float64)
            defaults = self.num_defaults.astype(np.float64)
            filled = np.where(np.isnan(num), defaults[None, :], num)
            return np.concatenate([filled, defaults[None, :]])  # (n + 1, F)
        a: np.ndarray | None = getattr(self, name)
        fill = FILLS[name]
        if a is None:
            return np.array(fill)
        return np.concatenate([a, np.full((1, *a.shape[1:]), fill, dtype=a.dtype)])


# What an unknown item (row -1) reads from each column.
FILLS: dict[str, float | int] = {
    "num": np.nan,
    "cat": 0,
    "lat": np.nan,
    "lon": np.nan,
    "open_hour": np.nan,
    "close_hour": np.nan,
    "text": int(PAD),
    "sim_text": int(PAD),
    "group": 0,
    "id_index": 0,
}
