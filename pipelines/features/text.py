"""Tokens and text-match scores between a query and item text.

Tokens: lower-cased runs of letters and digits; each CJK character is a token of its own (so
Chinese queries match without a segmenter). Tokens are hashed to int64 (stable across
processes) so that matching is a vectorised equality test.
"""

from __future__ import annotations

import re

import numpy as np

from pipelines.features.jit import jit
from pipelines.features.keys import hash_strings

_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\W_]+", re.UNICODE)
PAD = np.int64(-1)
BM25_K1, BM25_B = 1.2, 0.75


def tokenize(text: object) -> list[str]:
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    return _TOKEN.findall(str(text).lower())


def token_matrix(texts: list[list[str]], width: int) -> np.ndarray:
    """Hashed tokens per text, (n, w) int64 padded with -1, w = min(width, longest text).

    Tokens past ``width`` are cut; matching ignores padding, so w changes no score.
    """
    width = max(1, min(width, max((len(t) for t in texts), default=1)))
    out = np.full((len(texts), width), PAD, dtype=np.int64)
    flat = [t for toks in texts for t in toks[:width]]
    hashed = hash_strings(flat).view(np.int64) if flat else np.zeros(0, np.int64)
    hashed = np.where(hashed == PAD, 0, hashed)  # keep -1 free for padding
    pos = 0
    for i, toks in enumerate(texts):
        m = min(len(toks), width)
        out[i, :m] = hashed[pos : pos + m]
        pos += m
    return out


def query_match(
    query: np.ndarray, offsets: np.ndarray, doc: np.ndarray, idf_of: IdfTable, avg_len: float
) -> tuple[np.ndarray, np.ndarray]:
    """Share of distinct query tokens found in each doc, and the doc's BM25 for the query.

    query: (B, Tq) hashed tokens per request; offsets: (B + 1,) the docs of each request;
    doc: (N, Td). Returns two (N,) arrays.
    """
    idf = np.asarray(idf_of(query), np.float64)  # (B, Tq)
    return _query_match(query, idf, np.asarray(offsets, np.int64), doc, max(avg_len, 1e-9))


@jit
def _query_match(
    query: np.ndarray, idf: np.ndarray, offsets: np.ndarray, doc: np.ndarray, avg_len: float
) -> tuple[np.ndarray, np.ndarray]:
    n, tq = doc.shape[0], query.shape[1]
    share, score = np.zeros(n), np.zeros(n)
    first = np.zeros(tq, np.bool_)
    norm = np.zeros(tq)
    for b in range(len(offsets) - 1):
        # A token repeated in the query counts once: in the slot where it first appears.
        n_distinct = 0
        for j in range(tq):
            first[j] = query[b, j] != PAD
            for i in range(j):
                if query[b, i] == query[b, j]:
                    first[j] = False
            n_distinct += first[j]
        for r in range(offsets[b], offsets[b + 1]):
            dl = 0
            for t in range(doc.shape[1]):
                dl += doc[r, t] != PAD
            found = 0
            for j in range(tq):
                tf = 0
                if query[b, j] != PAD:
                    for t in range(doc.shape[1]):
                        tf += doc[r, t] == query[b, j]
                found += tf > 0 and first[j]
                norm[j] = tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl / avg_len))
            share[r] = found / max(n_distinct, 1)
            score[r] = _sum_like_numpy(idf[b] * norm)
    return share, score


@jit
def _sum_like_numpy(a: np.ndarray) -> float:
    """``a.sum()`` with numpy's order for short rows: sequential below 8 values, eight
    running sums combined pairwise from 8 to 128 (its pairwise summation's base case)."""
    n = len(a)
    if n < 8:
        s = 0.0
        for v in a:
            s += v
        return s
    r = a[:8].copy()
    i = 8
    while i + 8 <= n:
        for j in range(8):
            r[j] += a[i + j]
        i += 8
    s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        s += a[i]
        i += 1
    return s


def n_tokens(m: np.ndarray) -> np.ndarray:
    return (m != PAD).sum(axis=1)


@jit
def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) Jaccard similarity of token sets a (n, T) and b (n, T); 0 when both are empty.
    (A token repeated in ``a`` counts once per repeat, as the sets are built per slot.)"""
    out = np.zeros(len(a))
    for r in range(len(a)):
        inter, na, nb = 0, 0, 0
        for t in range(a.shape[1]):
            nb += b[r, t] != PAD
            if a[r, t] == PAD:
                continue
            na += 1
            for s in range(b.shape[1]):
                if b[r, s] == a[r, t]:
                    inter += 1
                    break
        union = na + nb - inter
        out[r] = inter / max(union, 1) if union > 0 else 0.0
    return out


class IdfTable:
    """Inverse document frequency of tokens over the item corpus (BM25's idf)."""

    def __init__(self, docs: np.ndarray):
        n = len(docs)
        uniq = [np.unique(row[row != PAD]) for row in docs]
        toks = np.concatenate(uniq) if uniq else np.zeros(0, np.int64)
        self.tokens, df = np.unique(toks, return_counts=True)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        """idf of each token of q (any shape); 0 for padding and unknown tokens."""
        if not len(self.tokens):
            return np.zeros(q.shape)
        pos = np.clip(np.searchsorted(self.tokens, q), 0, len(self.tokens) - 1)
        return np.where((self.tokens[pos] == q) & (q != PAD), self.idf[pos], 0.0)
