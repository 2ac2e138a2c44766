"""Tokens and text-match scores between a query and item text.

Tokens: lower-cased runs of letters and digits; each CJK character is a token of its own (so
Chinese queries match without a segmenter). Tokens are hashed to int64 (stable across
processes) so that matching is a vectorised equality test.
"""

from __future__ import annotations

import functools
import re

import numpy as np

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
    query: np.ndarray, seg: np.ndarray, doc: np.ndarray, idf_of: IdfTable, avg_len: float
) -> tuple[np.ndarray, np.ndarray]:
    """Share of distinct query tokens found in each doc, and the doc's BM25 for the query.

    query: (B, Tq) hashed tokens per request; seg: (N,) request of each doc; doc: (N, Td).
    Returns two (N,) arrays.
    """
    q_real = query != PAD
    # A token repeated in the query counts once: keep it where no earlier slot holds it.
    same = query[:, :, None] == query[:, None, :]  # (B, Tq, Tq): [b, j, i] = q_j == q_i
    earlier = _earlier(query.shape[1])  # [j, i]: i < j
    first = q_real & ~(same & earlier).any(axis=2)
    n_distinct = np.maximum(first.sum(axis=1), 1)
    q = query[seg]  # (N, Tq)
    tf = ((q[:, :, None] == doc[:, None, :]) & q_real[seg][:, :, None]).sum(axis=2)  # (N, Tq)
    share = ((tf > 0) & first[seg]).sum(axis=1) / n_distinct[seg]
    dl = n_tokens(doc)[:, None].astype(np.float64)
    norm = tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl / max(avg_len, 1e-9)))
    score = (idf_of(query)[seg] * norm).sum(axis=1)
    return share, score


@functools.lru_cache(maxsize=8)
def _earlier(width: int) -> np.ndarray:
    """(width, width) bool, [j, i] true where i < j: built once per width, not per request."""
    return np.tri(width, k=-1, dtype=bool)


def n_tokens(m: np.ndarray) -> np.ndarray:
    return (m != PAD).sum(axis=1)


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) Jaccard similarity of token sets a (n, T) and b (n, T); 0 when both are empty."""
    inter = ((a[:, :, None] == b[:, None, :]) & (a[:, :, None] != PAD)).any(axis=2).sum(axis=1)
    union = n_tokens(a) + n_tokens(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


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
