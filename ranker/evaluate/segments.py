"""Exploratory views of an offline comparison: segments and per-request differences.

No verdict comes from these (the primary metric on all requests decides); they show where a
difference comes from. Segments of requests:

- query frequency: head / torso / tail by how often the query appears in the train split
  (head: the most frequent queries that together make half of train traffic; torso: the next
  30%; tail: the rest, and queries never seen in train);
- list length: short (<= 20 candidates), medium (21-50), long (> 50);
- users: new (no behaviour history at request time) or returning;
- category: the most common item category among the request's candidates (when the dataset
  has a categorical feature named by its group column, e.g. ``category``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest, load_vocab
from pipelines.lists.table import Lists
from ranker.evaluate.stats import Clusters, mean_ci, paired_difference

SEGMENT_BOOT = 300  # fewer resamples than the headline numbers: these are exploratory


def segment_labels(lists: Lists, manifest: Manifest, dataset: Any) -> dict[str, np.ndarray]:
    """{segment kind: (B,) label of each request}."""
    out: dict[str, np.ndarray] = {}
    lens = lists.list_lengths()
    out["list_length"] = np.where(
        lens <= 20, "short (<=20)", np.where(lens <= 50, "medium (21-50)", "long (>50)")
    )
    if lists.query is not None:
        train = read_split(dataset, "train", manifest)
        freq = Counter(
            str(q).strip().lower() for q in (train.query if train.query is not None else [])
        )
        total = sum(freq.values())
        band: dict[str, str] = {}
        acc = 0
        for q, n in freq.most_common():
            band[q] = "head" if acc < 0.5 * total else "torso" if acc < 0.8 * total else "tail"
            acc += n
        out["query_frequency"] = np.array(
            [band.get(str(q).strip().lower(), "tail") for q in lists.query]
        )
    if lists.hist_offsets is not None:
        out["users"] = np.where(np.diff(lists.hist_offsets) > 0, "returning", "new")
    group = (manifest.config.get("list", {}) or {}).get("group_column")
    if group and group in manifest.categorical_names:
        j = manifest.categorical_names.index(group)
        f = manifest.categorical[j]
        names = ["(unknown)", *load_vocab(dataset, f.vocab)] if f.vocab else None
        seg = np.repeat(np.arange(len(lists)), lens)
        codes = lists.cat[:, j]
        top = np.zeros(len(lists), np.int64)
        for b in range(len(lists)):  # the most common category of each list
            vals, counts = (
                np.unique(codes[seg == b], return_counts=True)
                if lens[b]
                else (np.zeros(1, int), [1])
            )
            top[b] = vals[int(np.argmax(counts))]
        out["category"] = np.array([names[c] if names and c < len(names) else str(c) for c in top])
    return out


def segment_table(
    labels: dict[str, np.ndarray],
    per_request: dict[str, dict[str, np.ndarray]],
    users: np.ndarray,
    models: list[str],
    metric: str,
    seed: int,
) -> dict[str, Any]:
    """Per segment kind and value: the metric per model with CIs, and each model minus the
    first, paired, with CI and p-value."""
    out: dict[str, Any] = {}
    base = models[0]
    for kind, lab in labels.items():
        rows = {}
        for value in sorted(set(lab.tolist())):
            idx = np.flatnonzero(lab == value)
            cl = Clusters.of(users[idx], n_boot=SEGMENT_BOOT, n_perm=2000, seed=seed)
            entry: dict[str, Any] = {"requests": len(idx)}
            for m in models:
                entry[m] = mean_ci(per_request[m][metric][idx], cl).to_dict()
            for m in models[1:]:
                d = paired_difference(
                    per_request[m][metric][idx], per_request[base][metric][idx], cl
                )
                entry[f"{m} - {base}"] = d.to_dict()
            rows[value] = entry
        out[kind] = rows
    return out


def differences(
    per_request: dict[str, dict[str, np.ndarray]], models: list[str], metric: str
) -> dict[str, Any]:
    """Per-request differences of each model against the first: their distribution."""
    out = {}
    base = models[0]
    for m in models[1:]:
        d = per_request[m][metric] - per_request[base][metric]
        d = d[np.isfinite(d)]
        out[f"{m} - {base}"] = {
            "values": [round(float(x), 5) for x in d],
            "share_better": float(np.mean(d > 0)) if len(d) else float("nan"),
            "share_worse": float(np.mean(d < 0)) if len(d) else float("nan"),
            "quantiles": {q: float(np.quantile(d, q / 100)) for q in (5, 25, 50, 75, 95)}
            if len(d)
            else {},
        }
    return out
