"""Standard learning-to-rank files (SVMlight/LibSVM, LightGBM group files) -> a lists dataset.

``import_libsvm(train, test, out)`` turns MSLR-WEB10K/30K, Yahoo, Istella or LETOR files into
the same lists dataset and manifest as the log pipeline (DESIGN.md, "Standard LTR files").

Lines: ``label [qid:Q] idx:val idx:val ... [# comment]``, dense or sparse; a missing feature is
0.0. Labels are non-negative integers ("2" or "2.0", at most 127: stored as int8). Indices are
1-based; if index 0 appears in any of the files, they are taken as 0-based and index 0 is kept
as feature ``f0``. Feature ``f{i}`` is index ``i`` in every file, up to the largest index over
all the files.

Queries: by ``qid:`` when most lines carry one, else by the LightGBM group file beside the data
(``<file>.query``: one group size per line, in row order, summing to the file's data lines, bad
lines included). A qid that reappears after other queries is the same query: its lines join the
query where it first appeared (LETOR files keep qids contiguous; only files concatenated by hand
do this), with a warning and a count in ``source["merged_qids"]``. One request per query, in
file order: ``request_id`` is ``"{split}:{qid}"``, or ``"{split}:{n}"`` for the n-th group
(line n of the .query file); ``item_ids`` are the 1-based line numbers in the source file. No
ts, user, query, positions or history columns.

Bad lines are skipped and counted, one reason each, in ``manifest.bad_rows["libsvm"]``:
``bad_label``; ``bad_qid`` (empty, missing in a file that uses qids, or present in one that does
not); ``bad_feature`` (a token not ``idx:val``, an unparseable, negative or repeated index, or
one above MAX_INDEX); ``bad_value`` (NaN, infinite or beyond float32). Blank and comment-only
lines are not data. Validation: the ``valid`` file, or else a seeded random ``valid_fraction``
of the train queries (whole queries; each split keeps file order).

Transforms (DASALC-style, per feature, decided on the train split): ``slog1p`` (sign(x) *
log1p(|x|)) for a heavy tail: max |x| > SLOG_MAX_ABS (10), or p99 - p50 > SLOG_TAIL_RATIO (5) *
(p75 - p25) and > SLOG_MIN_TAIL (1: below that log1p is nearly the identity and compressing buys
nothing); ``none`` otherwise. Quantiles use at most QUANTILE_ROWS evenly spaced train rows. The
writer then fits the mean and std of the transformed values on train.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.lists.io import open_dataset
from pipelines.lists.manifest import SPLITS, Manifest, NumericFeature
from pipelines.lists.table import Lists

log = logging.getLogger(__name__)

MAX_INDEX = 1 << 16  # a larger index is a typo, not a feature: it would allocate a huge matrix
SLOG_MAX_ABS = 10.0
SLOG_TAIL_RATIO = 5.0
SLOG_MIN_TAIL = 1.0
QUANTILE_ROWS = 200_000
REASONS = ("bad_label", "bad_qid", "bad_feature", "bad_value")
# "1:2:3 4": two colons in one token, which a count of colons and tokens alone lets through
_TWO_COLONS = re.compile(r":[^\s:]*:")


@dataclass
class ParsedFile:
    """One file's good lines, queries in first-appearance order, features as sparse triples."""

    path: Path
    labels: np.ndarray  # (n,) int8, in query order
    line_no: np.ndarray  # (n,) int64, 1-based line in the file, in query order
    rows: np.ndarray  # (nnz,) int64, row (in query order) of each value
    idx: np.ndarray  # (nnz,) int64, feature index as written
    vals: np.ndarray  # (nnz,) float32
    qkeys: np.ndarray  # (Q,) object: qid, or group number
    sizes: np.ndarray  # (Q,) int64, documents per query
    grouping: str  # "qid", the group file, or "empty"
    bad: Counter[str]
    merged_qids: int = 0  # qids that reappeared after other queries


def _label(tok: str) -> int:
    """The label, or -1 when it is not an integer in 0..127 ("2" and "2.0" are both 2)."""
    try:
        v = float(tok)
    except ValueError:
        return -1
    return int(v) if v.is_integer() and 0 <= v <= 127 else -1  # NaN and inf fail is_integer


def _numbers(fields: list[str], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, values, per-line ok) of alternating idx/val tokens, ``counts[j]`` pairs a line."""
    n = int(counts.sum())
    try:  # one pass over the whole file in C when every token parses (the usual case)
        idx = np.fromiter(map(int, fields[0::2]), np.int64, n)
        vals = np.fromiter(map(float, fields[1::2]), np.float64, n)
        return idx, vals, np.ones(len(counts), bool)
    except (ValueError, OverflowError):
        pass
    # Some token does not parse: find its lines one by one.
    idx, vals, ok = np.zeros(n, np.int64), np.zeros(n), np.ones(len(counts), bool)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j in range(len(counts)):
        a, b = int(starts[j]), int(starts[j + 1])
        try:
            idx[a:b] = [int(s) for s in fields[2 * a : 2 * b : 2]]
            vals[a:b] = [float(s) for s in fields[2 * a + 1 : 2 * b : 2]]
        except (ValueError, OverflowError):
            ok[j] = False
    return idx, vals, ok


def _read_groups(path: Path, n_data: int) -> tuple[np.ndarray, Path]:
    gpath = Path(f"{path}.query")
    if not gpath.is_file():
        raise ValueError(
            f"{path}: no qid: on its lines and no group file {gpath}; either write a qid on "
            f"each line ('label qid:Q idx:val ...') or put the group sizes (one per line, in row "
            f"order) in {gpath.name} beside it"
        )
    sizes = []
    for no, line in enumerate(gpath.read_text().splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if not s.isdigit():
            raise ValueError(f"{gpath}:{no}: group size {s!r} is not a non-negative integer")
        sizes.append(int(s))
    if sum(sizes) != n_data:
        raise ValueError(
            f"{gpath}: group sizes sum to {sum(sizes)} but {path} has {n_data} data lines"
        )
    return np.array(sizes, np.int64), gpath


def _split_lines(text: str) -> tuple[list[int], list[int], list[str | None], list[str]]:
    """(labels (-1: bad), line numbers, qids (None: no qid:), feature text) of the data lines."""
    labels: list[int] = []
    line_no: list[int] = []
    qids: list[str | None] = []
    rests: list[str] = []
    for no, line in enumerate(text.splitlines(), 1):
        if "#" in line:
            line = line[: line.index("#")]
        head = line.split(None, 2)
        if not head:
            continue
        if len(head) > 1 and head[1].startswith("qid:"):
            qids.append(head[1][4:])
            rests.append(head[2] if len(head) > 2 else "")
        else:
            qids.append(None)
            rests.append(" ".join(head[1:]))
        labels.append(_label(head[0]))
        line_no.append(no)
    return labels, line_no, qids, rests


def _features(
    rests: list[str], reason: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kept lines, entry -> kept line, indices, values) of the lines with ``reason`` 0.

    Sets ``reason`` to 3 (bad_feature) or 4 (bad_value) for the lines it rejects.
    """
    counts = np.array([r.count(":") for r in rests], np.int64)
    for j, r in enumerate(rests):
        if reason[j] == 0 and (len(r.split()) != counts[j] or _TWO_COLONS.search(r)):
            reason[j] = 3
    good = np.flatnonzero(reason == 0)
    fields = " ".join(rests[g] for g in good).replace(":", " ").split()
    if len(fields) != 2 * counts[good].sum():  # an empty side (":5", "5:"): find the lines
        for g in good:
            if len(rests[g].replace(":", " ").split()) != 2 * counts[g]:
                reason[g] = 3
        good = np.flatnonzero(reason == 0)
        fields = " ".join(rests[g] for g in good).replace(":", " ").split()
    idx, vals64, ok = _numbers(fields, counts[good])
    entry = np.repeat(np.arange(len(good)), counts[good])  # line (in ``good``) of each value
    same = entry[1:] == entry[:-1]
    if (idx[1:][same] <= idx[:-1][same]).any():  # indices not increasing: look for repeats
        key = np.sort(entry * (MAX_INDEX + 2) + np.clip(idx, 0, MAX_INDEX + 1))
        ok[np.unique(key[1:][key[1:] == key[:-1]] // (MAX_INDEX + 2))] = False
    ok &= np.bincount(entry[(idx < 0) | (idx > MAX_INDEX)], minlength=len(good)) == 0
    reason[good[~ok]] = 3
    with np.errstate(over="ignore"):
        vals = vals64.astype(np.float32)
    nonfinite = np.bincount(entry[~np.isfinite(vals)], minlength=len(good)) > 0
    reason[good[ok & nonfinite]] = 4
    ok &= ~nonfinite
    kept = ok[entry]
    return good[ok], (np.cumsum(ok) - 1)[entry[kept]], idx[kept], vals[kept]


def parse_file(path: Path) -> ParsedFile:
    """Parse one SVMlight/LibSVM file (and its .query file when it has no qids)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    t0 = time.perf_counter()
    labels, line_no, qids, rests = _split_lines(path.read_text(encoding="utf-8", errors="replace"))
    n = len(labels)
    # One reason per line (REASONS, from 1), the first that applies: label, qid, feature, value.
    reason = np.where(np.array(labels, np.int64) < 0, 1, 0).astype(np.int8)
    use_qid = 2 * sum(q is not None for q in qids) > n
    qid_bad = np.array([(not q) if use_qid else (q is not None) for q in qids], bool)
    reason[(reason == 0) & qid_bad] = 2
    keep, entry, idx, vals = _features(rests, reason)
    bad = +Counter({r: int((reason == k).sum()) for k, r in enumerate(REASONS, 1)})
    # Keys of the kept lines: qid, or group number from the .query file (bad lines included).
    grouping = "qid" if use_qid else "empty"
    if use_qid:
        keys = np.array([qids[j] for j in keep], dtype=object)
    elif n:
        sizes_file, gpath = _read_groups(path, n)
        keys = np.repeat(np.arange(1, len(sizes_file) + 1), sizes_file)[keep].astype(object)
        grouping = str(gpath)
    else:
        keys = np.array([], dtype=object)
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(first)] = np.arange(len(uniq))
    query = rank[inv.reshape(-1)]  # query number of each kept line, by first appearance
    order = np.argsort(query, kind="stable")
    new_row = np.empty(len(keep), np.int64)
    new_row[order] = np.arange(len(keep))
    merged = int(len(keys) > 0) + int(np.count_nonzero(keys[1:] != keys[:-1])) - len(uniq)
    if merged:
        log.warning("%s: %d qids reappear after other queries; merged into one query", path, merged)
    pf = ParsedFile(
        path=path,
        labels=np.array(labels, np.int64)[keep][order].astype(np.int8),
        line_no=np.array(line_no, np.int64)[keep][order],
        rows=new_row[entry],
        idx=idx,
        vals=vals,
        qkeys=uniq[np.argsort(first)],
        sizes=np.bincount(query, minlength=len(uniq)).astype(np.int64),
        grouping=grouping,
        bad=bad,
        merged_qids=merged,
    )
    log.info(
        "%s: %d lines, %d queries, %d documents, bad %s (%.2fs)",
        path,
        n,
        len(pf.sizes),
        len(keep),
        dict(bad) or "none",
        time.perf_counter() - t0,
    )
    return pf


def _to_lists(pf: ParsedFile, n_cols: int, base: int) -> Lists:
    """The file's queries; ``request_id`` holds the bare key until the split is known."""
    num = np.zeros((len(pf.labels), n_cols), np.float32)
    num[pf.rows, pf.idx - base] = pf.vals
    offsets = np.zeros(len(pf.sizes) + 1, np.int64)
    np.cumsum(pf.sizes, out=offsets[1:])
    return Lists(
        request_id=pf.qkeys,
        offsets=offsets,
        item_ids=pf.line_no.astype(str).astype(object),
        labels=pf.labels,
        num=num,
        cat=np.zeros((len(num), 0), np.int32),
    )


def choose_transforms(num: np.ndarray) -> list[str]:
    """Per column of train values, ``slog1p`` for heavy tails, else ``none`` (module docstring)."""
    if not len(num):
        return ["none"] * num.shape[1]
    step = -(-len(num) // QUANTILE_ROWS)
    p25, p50, p75, p99 = np.percentile(num[::step].astype(np.float64), [25, 50, 75, 99], axis=0)
    tail = p99 - p50
    heavy = (np.abs(num).max(axis=0) > SLOG_MAX_ABS) | (
        (tail > SLOG_TAIL_RATIO * (p75 - p25)) & (tail > SLOG_MIN_TAIL)
    )
    return ["slog1p" if h else "none" for h in heavy]


def import_libsvm(
    train: Path,
    test: Path,
    out: Path,
    *,
    valid: Path | None = None,
    valid_fraction: float = 0.2,
    seed: int = 0,
) -> Manifest:
    """Read the files, write the lists dataset at ``out`` (whole or not at all), return its
    manifest."""
    if valid is None and not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), not {valid_fraction}")
    files = {"train": Path(train), "test": Path(test)}
    if valid is not None:
        files["valid"] = Path(valid)
    parsed = {s: parse_file(p) for s, p in files.items()}
    zero_based = any(bool((pf.idx == 0).any()) for pf in parsed.values())
    base = 0 if zero_based else 1
    n_cols = max((int(pf.idx.max()) for pf in parsed.values() if len(pf.idx)), default=0) + 1
    n_cols -= base
    bad = sum((pf.bad for pf in parsed.values()), Counter[str]())
    if n_cols <= 0:
        raise ValueError(
            f"no feature values in {', '.join(map(str, files.values()))} ({dict(bad)})"
        )
    lists = {s: _to_lists(pf, n_cols, base) for s, pf in parsed.items()}
    if valid is None:  # hold out whole train queries, drawn with the seed
        nq = len(lists["train"])
        held = np.zeros(nq, bool)
        held[np.random.default_rng(seed).permutation(nq)[: round(valid_fraction * nq)]] = True
        lists["valid"] = lists["train"].select(np.flatnonzero(held))
        lists["train"] = lists["train"].select(np.flatnonzero(~held))
    for split, ls in lists.items():
        ls.request_id = np.array([f"{split}:{k}" for k in ls.request_id], dtype=object)
    transforms = choose_transforms(lists["train"].num)
    max_label = max((int(ls.labels.max()) for ls in lists.values() if ls.n_items), default=0)
    manifest = Manifest(
        numeric=[NumericFeature(f"f{base + j}", "libsvm", t) for j, t in enumerate(transforms)],
        labels={"graded": f"0-{max_label} relevance from the file"},
        max_label=max_label,
        source={
            "kind": "libsvm",
            "train": str(files["train"]),
            "valid": None if valid is None else str(valid),
            "test": str(files["test"]),
            "valid_fraction": None if valid is not None else valid_fraction,
            "seed": seed,
            "grouping": {s: pf.grouping for s, pf in parsed.items()},
            "merged_qids": {s: pf.merged_qids for s, pf in parsed.items()},
            "bad_lines": {s: dict(pf.bad) for s, pf in parsed.items()},
        },
        bad_rows={"libsvm": dict(bad)},
        config={
            "transform_rule": "slog1p if on train max|x| > slog1p_max_abs or p99 - p50 > "
            "slog1p_tail_ratio * (p75 - p25) and > slog1p_min_tail, else none",
            "slog1p_max_abs": SLOG_MAX_ABS,
            "slog1p_tail_ratio": SLOG_TAIL_RATIO,
            "slog1p_min_tail": SLOG_MIN_TAIL,
            "quantile_rows": QUANTILE_ROWS,
            "zero_based": zero_based,
            "reappearing_qid": "merged into the query where it first appeared",
        },
    )
    with open_dataset(Path(out), manifest) as w:
        for split in SPLITS:
            w.write(split, lists[split])
    log.info("wrote %s: %d features, splits %s", out, n_cols, manifest.splits)
    return manifest
