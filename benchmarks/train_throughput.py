"""Training throughput of the Transformer ranker on the CPU, beside a straightforward loop.

The straightforward loop is what a first implementation looks like: a torch DataLoader whose
collate function pads every list to the longest list of the dataset (and every history to the
longest history) in Python, and ``nn.TransformerEncoder`` for the list blocks, at the same
model size. Ours buckets lists by length (each batch padded to its own longest list), builds
batches with vectorised gathers, and uses fused scaled-dot-product attention. Same data, loss,
optimiser, epochs and thread count, in one run.

    python benchmarks/train_throughput.py --data runs/demo/lists [--epochs 2 --threads 2]

Prints JSON: lists per second of each, their ratio (goal: at least 3x), and the validation
NDCG@10 each reaches after the same number of epochs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ranker.data import RankData
from ranker.losses import softmax_loss
from ranker.metrics import ndcg
from ranker.model import MLP, CandidateEncoder, Ranker, RankerConfig, TargetAttention, init_weights
from ranker.train.prepare import load_splits, rank_data
from ranker.train.transformer import TrainConfig, config_from_manifest, predict, train_transformer


class NaiveRanker(nn.Module):
    """The same encoders and head; list blocks from nn.TransformerEncoder."""

    def __init__(self, cfg: RankerConfig):
        super().__init__()
        ref = Ranker(cfg)
        self.candidates = CandidateEncoder(cfg)
        self.history = ref.history
        self.target_attention = TargetAttention(cfg)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_heads,
            cfg.d_ff,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = MLP(cfg.d_model, cfg.d_model, 1, cfg.dropout)

    def forward(self, num, cat, mask, hist_num, hist_cat, hist_mask):  # type: ignore[no-untyped-def]
        x = self.candidates(num, cat)
        if self.history is not None:
            x = self.target_attention(x, self.history(hist_num, hist_cat), hist_mask)
        x = self.encoder(x, src_key_padding_mask=~mask)
        return self.head(self.ln_f(x)).squeeze(-1)


class ListsDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, data: RankData):
        self.d = data

    def __len__(self) -> int:
        return len(self.d)

    def __getitem__(self, i: int) -> int:
        return i


def naive_collate(data: RankData, max_len: int, max_hist: int):  # type: ignore[no-untyped-def]
    """Pad each list to the dataset's longest list, one list at a time (in Python)."""

    def collate(idx: list[int]):  # type: ignore[no-untyped-def]
        b = len(idx)
        num = torch.zeros(b, max_len, data.num.shape[1])
        cat = torch.zeros(b, max_len, data.cat.shape[1], dtype=torch.long)
        mask = torch.zeros(b, max_len, dtype=torch.bool)
        labels = torch.zeros(b, max_len)
        hn = torch.zeros(b, max_hist, data.hist_num.shape[1])
        hc = torch.zeros(b, max_hist, data.hist_cat.shape[1], dtype=torch.long)
        hm = torch.zeros(b, max_hist, dtype=torch.bool)
        for j, i in enumerate(idx):
            lo, hi = data.offsets[i], data.offsets[i + 1]
            num[j, : hi - lo] = torch.from_numpy(data.num[lo:hi])
            cat[j, : hi - lo] = torch.from_numpy(data.cat[lo:hi])
            labels[j, : hi - lo] = torch.from_numpy(data.labels[lo:hi])
            mask[j, : hi - lo] = True
            hlo, hhi = data.hist_offsets[i], data.hist_offsets[i + 1]
            hlo = max(hlo, hhi - max_hist)
            hn[j, : hhi - hlo] = torch.from_numpy(data.hist_num[hlo:hhi])
            hc[j, : hhi - hlo] = torch.from_numpy(data.hist_cat[hlo:hhi])
            hm[j, : hhi - hlo] = True
        return num, cat, mask, hn, hc, hm, labels

    return collate


def train_naive(
    train: RankData, valid: RankData, cfg: RankerConfig, epochs: int, batch: int, seed: int
) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = NaiveRanker(cfg)
    init_weights(model, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    max_len = int(train.lens.max())
    max_hist = max(1, int(np.diff(train.hist_offsets).max()))
    loader = torch.utils.data.DataLoader(
        ListsDataset(train),
        batch_size=batch,
        shuffle=True,
        collate_fn=naive_collate(train, max_len, max_hist),
    )
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for num, cat, mask, hn, hc, hm, labels in loader:
            loss = softmax_loss(model(num, cat, mask, hn, hc, hm), labels, mask=mask)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    lists_per_s = epochs * len(train) / (time.perf_counter() - t0)
    model.eval()
    scores = np.zeros(valid.lists.n_items, np.float32)
    with torch.no_grad():
        for batch_ in valid.batches(256):
            b = batch_
            s = model(b.num, b.cat, b.mask, b.hist_num, b.hist_cat, b.hist_mask).numpy()
            rows = valid.offsets[b.lists][:, None] + np.arange(s.shape[1])[None, :]
            scores[rows[b.mask.numpy()]] = s[b.mask.numpy()]
    s_, y_, m_ = valid.padded_scores(scores)
    return lists_per_s, float(np.nanmean(ndcg(s_, y_, mask=m_, k=10)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sp, _ = load_splits(args.data)
    m = sp.manifest
    train, valid = rank_data(sp.train, m), rank_data(sp.valid, m)
    mc = config_from_manifest(m)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_lists=args.batch,
        threads=args.threads,
        seed=args.seed,
        patience=args.epochs,
        ema=0.0,
        lr=2e-3,
        warmup_frac=0.0,
        min_lr_frac=1.0,
    )
    t0 = time.perf_counter()
    res = train_transformer(train, valid, mc, cfg, progress=False)
    ours = args.epochs * len(train) / sum(h.seconds for h in res.history)
    wall_ours = time.perf_counter() - t0
    s_, y_, m_ = valid.padded_scores(predict(res.model, valid))
    ours_ndcg = float(np.nanmean(ndcg(s_, y_, mask=m_, k=10)))
    naive, naive_ndcg = train_naive(train, valid, mc, args.epochs, args.batch, args.seed)
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "device": "cpu",
                "threads": args.threads,
                "train_lists": len(train),
                "epochs": args.epochs,
                "batch_lists": args.batch,
                "parameters": Ranker(mc).n_parameters(),
                "ours": {
                    "lists_per_s": round(ours, 1),
                    "valid_ndcg@10": round(ours_ndcg, 4),
                    "wall_s": round(wall_ours, 1),
                },
                "naive": {
                    "lists_per_s": round(naive, 1),
                    "valid_ndcg@10": round(naive_ndcg, 4),
                    "padding_to": int(train.lens.max()),
                },
                "speedup": round(ours / naive, 2),
                "goal": {"speedup": 3.0},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
