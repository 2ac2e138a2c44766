"""``ranker abtest``: the simulated world's users search against a running server.

Each search (sampled after the logged period, in time order) goes to ``POST /v1/rank`` with its
simulated time, place and candidates; the user answers the served order as the world's click
model says (the same truth and click model as the logs); the impressions, clicks and orders go
back to ``POST /v1/events``. The server logs every ranking with its variant, so
``ranker report online`` can judge the experiment from the server's logs alone.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from pipelines.world.world import World, to_latlon

log = logging.getLogger(__name__)


@dataclass
class AbtestSummary:
    requests: int
    users: int
    clicks: int
    orders: int
    errors: int
    seconds: float
    variants: dict[str, int]


class Client:
    """A keep-alive HTTP/1.1 JSON client (the standard library; one connection), sending the
    client token when it has one."""

    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None):
        u = urlparse(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"--url must look like http://host:port, not {url!r}")
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        for attempt in range(2):  # one reconnect if the server closed the idle connection
            try:
                self.conn.request("POST", path, data, self.headers)
                r = self.conn.getresponse()
                return r.status, json.loads(r.read() or b"{}")
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def run_abtest(
    url: str,
    world_dir: Path,
    requests: int,
    users: int | None = None,
    seed: int = 0,
    days: float = 1.0,
    progress: bool = True,
    token: str | None = None,
) -> AbtestSummary:
    world = World.load(world_dir)
    rng = np.random.default_rng([seed, 1])
    pool = None
    if users is not None:
        if not 1 <= users <= len(world.users):
            raise ValueError(f"--users must be between 1 and {len(world.users)}")
        pool = np.sort(rng.choice(len(world.users), size=users, replace=False))
    s = world.sample_searches(requests, rng, days=days, id_prefix=f"ab{seed}-", user_pool=pool)
    lat, lon = to_latlon(s.x, s.y)
    client = Client(url, token=token)
    clicks = orders = errors = 0
    variants: dict[str, int] = {}
    t0 = time.perf_counter()
    for k in tqdm(range(len(s)), desc="abtest", unit="req", disable=not progress, leave=False):
        user = str(world.users.user_id[s.user[k]])
        ts = f"{np.datetime64(int(s.t[k]), 's')}Z"
        body = {
            "request_id": str(s.request_id[k]),
            "user_id": user,
            "query": str(s.query[k]),
            "ts": ts,
            "context": {"lat": float(lat[k]), "lon": float(lon[k]), "device": str(s.device[k])},
            "candidates": [{"item_id": str(world.items.item_id[i])} for i in s.candidates[k]],
        }
        status, out = client.post("/v1/rank", body)
        if status != 200:
            errors += 1
            log.warning("rank %s: %s %s", body["request_id"], status, out.get("error"))
            continue
        variants[out["variant"]] = variants.get(out["variant"], 0) + 1
        shown = [str(i["item_id"]) for i in out["items"]]
        resp = world.respond(
            s, k, np.array(shown, dtype=object), np.random.default_rng([seed, 2, k])
        )
        events = [
            {
                "type": "impression",
                "request_id": out["request_id"],
                "user_id": user,
                "item_id": item,
                "position": p + 1,
                "ts": ts,
            }
            for p, item in enumerate(shown)
        ]
        for p in np.flatnonzero(resp.clicked):
            events.append(
                {
                    "type": "click",
                    "request_id": out["request_id"],
                    "user_id": user,
                    "item_id": shown[p],
                    "position": int(p) + 1,
                    "ts": ts,
                }
            )
        for p in np.flatnonzero(resp.ordered):
            events.append(
                {
                    "type": "order",
                    "request_id": out["request_id"],
                    "user_id": user,
                    "item_id": shown[p],
                    "position": int(p) + 1,
                    "ts": ts,
                }
            )
        clicks += int(resp.clicked.sum())
        orders += int(resp.ordered.sum())
        status, out = client.post("/v1/events", {"events": events})
        if status != 200:
            errors += 1
            log.warning("events %s: %s %s", body["request_id"], status, out.get("error"))
    n_users = len({int(u) for u in s.user})
    return AbtestSummary(
        len(s), n_users, clicks, orders, errors, time.perf_counter() - t0, variants
    )
