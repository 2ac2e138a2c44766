"""A hand-made list feature for the simulated world, as a reference row only (never a default):
how many other branches of a candidate's brand in the same request are nearer to the user.

The simulated world penalises near-duplicates: a branch of a brand with a nearer branch in the
list is worth less. LightGBM with this count shows how much room the list attention has; the
Transformer must find it from the brand pairs alone (``[list] pair_columns``).

    python benchmarks/reference_feature.py --data runs/cmp/lists --out runs/cmp/lists_ref
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from pipelines.lists.io import open_dataset, read_split
from pipelines.lists.manifest import SPLITS, Manifest, NumericFeature
from pipelines.lists.table import Lists

NAME = "nearer_same_brand"


def nearer_same_brand(lists: Lists, brand: int, distance: int, chunk: int = 2048) -> np.ndarray:
    """(N,) float32: per candidate, the other candidates of its request sharing its brand
    (code > 0) that are nearer (smaller ``num[:, distance]``)."""
    lens = lists.list_lengths()
    out = np.zeros(lists.n_items, np.float32)
    for lo in range(0, len(lens), chunk):
        hi = min(lo + chunk, len(lens))
        a, b = lists.offsets[lo], lists.offsets[hi]
        sub_lens = lens[lo:hi]
        width = int(sub_lens.max()) if len(sub_lens) else 0
        if width == 0:
            continue
        real = np.arange(width)[None, :] < sub_lens[:, None]  # (b, W)
        br = np.zeros((hi - lo, width), np.int64)
        dist = np.full((hi - lo, width), np.inf)
        br[real] = lists.cat[a:b, brand]
        dist[real] = lists.num[a:b, distance]
        same = (br[:, :, None] == br[:, None, :]) & (br[:, :, None] > 0)  # (b, W, W)
        nearer = dist[:, None, :] < dist[:, :, None]  # j nearer than i
        out[a:b] = (same & nearer).sum(-1)[real]
    return out


def with_reference_feature(src: Path, dst: Path) -> Path:
    """A copy of dataset ``src`` with the count as one more numeric feature (log1p)."""
    m = Manifest.load(src)
    brand = m.categorical_names.index("brand")
    distance = m.numeric_names.index("distance_km")
    out = Manifest.from_dict(m.to_dict())
    out.numeric.append(NumericFeature(NAME, "reference", "log1p"))
    out.fingerprint, out.created = "", ""
    with open_dataset(dst, out) as w:
        if (src / "vocabs").is_dir():
            shutil.copytree(src / "vocabs", w.tmp / "vocabs")
        for split in SPLITS:
            lists = read_split(src, split, m)
            feat = nearer_same_brand(lists, brand, distance)
            lists.num = np.concatenate([lists.num, feat[:, None]], axis=1)
            w.write(split, lists)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(with_reference_feature(args.data, args.out))


if __name__ == "__main__":
    main()
