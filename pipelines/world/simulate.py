"""``ranker simulate``: draw a world, play its logged period, write ``logs/`` and ``world/``.

Output (DESIGN.md, "The embedded default"):

- ``OUT/logs/requests.parquet``: request_id, ts, user_id, query, lat, lon, device,
  randomized (the request was shown with random adjacent swaps), click_seed (the random state
  its clicks were drawn from);
- ``OUT/logs/impressions.parquet``: request_id, item_id, position, policy_position (the
  logging policy's own position before a randomised swap), clicked, ordered, dwell_ms;
- ``OUT/logs/items.parquet`` and ``OUT/logs/users.parquet``: public attributes only;
- ``OUT/world/``: ``world.json``, the traits of every merchant and user, and ``truth.parquet``
  (request_id, item_id, relevance, relevance_no_list).

Same config, same bytes. Each directory is written whole or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipelines.io import atomic_dir, remove_dead_scratch, write_parquet_atomic
from pipelines.world.clicks import N_DRAWS, respond_batch
from pipelines.world.config import CATEGORIES, DISTRICTS, WorldConfig
from pipelines.world.relevance import pad_candidates
from pipelines.world.world import STREAM_CLICKS, STREAM_POLICY, STREAM_SEARCHES, World, to_latlon

log = logging.getLogger(__name__)
CHUNK = 2000  # searches judged and clicked per vectorised step


@dataclass
class SimulationSummary:
    requests: int
    impressions: int
    clicks: int
    orders: int
    randomized: int
    out: Path


def simulate(cfg: WorldConfig, out: Path, progress: bool = True) -> SimulationSummary:
    world = World.create(cfg)
    searches = world.sample_searches(
        cfg.n_requests,
        np.random.default_rng([cfg.seed, STREAM_SEARCHES]),
        start_s=world.start_s,
        days=cfg.days,
        id_prefix="r",
    )
    n = len(searches)
    policy_rng = np.random.default_rng([cfg.seed, STREAM_POLICY])
    randomized = policy_rng.random(n) < cfg.random_share
    click_seeds = np.random.default_rng([cfg.seed, STREAM_CLICKS]).integers(0, 2**62, size=n)

    req_ids = searches.request_id
    item_ids = world.items.item_id
    out = Path(out)
    counts = {"impressions": 0, "clicks": 0, "orders": 0}
    bar = tqdm(total=n, desc="simulate", unit="req", disable=not progress, leave=False)
    # Impressions and truth are written chunk by chunk, so memory stays flat as the log grows.
    remove_dead_scratch(out)  # what an interrupted run left beside its output
    with atomic_dir(out / "logs") as logs_dir, atomic_dir(out / "world") as world_dir:
        imp_writer = pq.ParquetWriter(
            logs_dir / "impressions.parquet", _IMPRESSIONS, compression="zstd"
        )
        truth_writer = pq.ParquetWriter(world_dir / "truth.parquet", _TRUTH, compression="zstd")
        for lo in range(0, n, CHUNK):
            idx = np.arange(lo, min(n, lo + CHUNK))
            chunk = searches.take(idx)
            rel, rel0 = world.relevance_parts(chunk)
            logged = world.policy.rank_logged(chunk, policy_rng, randomized[idx])
            shown = [o for o, _ in logged]
            u = [
                np.random.default_rng(int(click_seeds[k])).random((N_DRAWS, len(o)))
                for k, o in zip(idx, shown, strict=True)
            ]
            rel_pad, valid = _pad_float([r[o] for r, o in zip(rel, shown, strict=True)])
            u_pad = np.zeros((len(idx), N_DRAWS, rel_pad.shape[1]))
            for j, uj in enumerate(u):
                u_pad[j, :, : uj.shape[1]] = uj
            resp = respond_batch(rel_pad, valid, u_pad, cfg.clicks)

            lens = valid.sum(axis=1)
            req_rep = np.repeat(req_ids[idx], lens)
            shown_items = np.concatenate(
                [c[o] for c, o in zip(chunk.candidates, shown, strict=True)]
            )
            imp_writer.write_table(
                pa.table(
                    {
                        "request_id": pa.array(req_rep, pa.string()),
                        "item_id": pa.array(item_ids[shown_items], pa.string()),
                        "position": np.concatenate([np.arange(1, m + 1) for m in lens]).astype(
                            np.int32
                        ),
                        "policy_position": np.concatenate([p for _, p in logged]).astype(np.int32),
                        "clicked": resp.clicked[valid],
                        "ordered": resp.ordered[valid],
                        "dwell_ms": pa.array(resp.dwell_ms[valid], pa.float64(), from_pandas=True),
                    },
                    schema=_IMPRESSIONS,
                )
            )
            truth_writer.write_table(
                pa.table(
                    {
                        "request_id": pa.array(req_rep, pa.string()),
                        "item_id": pa.array(
                            item_ids[np.concatenate(chunk.candidates)], pa.string()
                        ),
                        "relevance": np.concatenate(rel).astype(np.float32),
                        "relevance_no_list": np.concatenate(rel0).astype(np.float32),
                    },
                    schema=_TRUTH,
                )
            )
            counts["impressions"] += int(lens.sum())
            counts["clicks"] += int(resp.clicked.sum())
            counts["orders"] += int(resp.ordered.sum())
            bar.update(len(idx))
        imp_writer.close()
        truth_writer.close()
        bar.close()

        lat, lon = to_latlon(searches.x, searches.y)
        requests = pa.table(
            {
                "request_id": pa.array(req_ids, pa.string()),
                "ts": pa.array(searches.t * 1_000_000, pa.timestamp("us", tz="UTC")),
                "user_id": pa.array(world.users.user_id[searches.user], pa.string()),
                "query": pa.array(searches.query, pa.string()),
                "lat": lat,
                "lon": lon,
                "device": pa.array(searches.device, pa.string()),
                "randomized": randomized,
                "click_seed": click_seeds,
            }
        )
        write_parquet_atomic(requests, logs_dir / "requests.parquet")
        write_parquet_atomic(_public_items(world), logs_dir / "items.parquet")
        us = world.users
        write_parquet_atomic(
            pa.table(
                {
                    "user_id": pa.array(us.user_id, pa.string()),
                    "home_district": pa.array(
                        [DISTRICTS[d][0] for d in us.home_district], pa.string()
                    ),
                    "member": us.member,
                }
            ),
            logs_dir / "users.parquet",
        )
        world.save(world_dir)
    summary = SimulationSummary(
        requests=n,
        impressions=counts["impressions"],
        clicks=counts["clicks"],
        orders=counts["orders"],
        randomized=int(randomized.sum()),
        out=out,
    )
    log.info("simulated %s", summary)
    return summary


_IMPRESSIONS = pa.schema(
    [
        ("request_id", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int32()),
        ("policy_position", pa.int32()),
        ("clicked", pa.bool_()),
        ("ordered", pa.bool_()),
        ("dwell_ms", pa.float64()),
    ]
)
_TRUTH = pa.schema(
    [
        ("request_id", pa.string()),
        ("item_id", pa.string()),
        ("relevance", pa.float32()),
        ("relevance_no_list", pa.float32()),
    ]
)


def _public_items(world: World) -> pa.Table:
    it = world.items
    lat, lon = to_latlon(it.x, it.y)
    return pa.table(
        {
            "item_id": pa.array(it.item_id, pa.string()),
            "title": pa.array(it.title, pa.string()),
            "category": pa.array([CATEGORIES[c].name for c in it.category], pa.string()),
            "brand": pa.array(
                [it.brand_names[b] if b >= 0 else None for b in it.brand], pa.string()
            ),
            "district": pa.array([DISTRICTS[d][0] for d in it.district], pa.string()),
            "price_level": it.price_level.astype(np.int32),
            "avg_price": it.avg_price,
            "rating": it.rating,
            "review_count": it.review_count,
            "lat": lat,
            "lon": lon,
            "open_hour": it.open_hour.astype(np.int32),
            "close_hour": it.close_hour.astype(np.int32),
        }
    )


def _pad_float(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    idx, valid = pad_candidates([np.arange(len(r)) for r in rows])
    out = np.zeros(idx.shape)
    for k, r in enumerate(rows):
        out[k, : len(r)] = r
    return out, valid
