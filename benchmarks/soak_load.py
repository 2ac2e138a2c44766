"""The load ``benchmarks/soak.py`` puts on a server and what it reads back from it.

Keep-alive client threads that rank and post events (``Load``), the worker pids and their
RSS, p99 latencies, and every clicked user's history read back through each worker.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ops.online.server_proc import BackgroundServer
from pipelines.features.state import FeatureState


class Conn:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, url: str, token: str):
        u = urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            data = None if body is None else json.dumps(body).encode()
            self.conn.request(method, path, data, self.headers)
            r = self.conn.getresponse()
            raw = r.read()
            headers = dict(r.getheaders())
            if "json" not in headers.get("content-type", ""):
                return r.status, raw.decode(), headers
            return r.status, json.loads(raw) if raw else None, headers
        except (OSError, http.client.HTTPException, ValueError):
            self.conn.close()
            self.conn = None
            raise


@dataclass
class World:
    users: list[str]
    items: list[str]
    t0_us: int


def load_world(state: Path) -> World:
    st = FeatureState.load(state)
    users = sorted(st.history.users_with_at_least(10))
    return World(users[:2000], [str(i) for i in st.items.ids], int(st.clock_us or 0) + 600 * 10**6)


@dataclass
class Record:
    t: float  # monotonic seconds when it finished
    ms: float
    kind: str  # rank | events
    ok: bool
    status: str


@dataclass
class Load:
    url: str
    token: str
    world: World
    probes: int = 0  # probe users, one click each
    stop: threading.Event = field(default_factory=threading.Event)
    records: list[Record] = field(default_factory=list)
    clicks: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # user -> (t, item)
    uncertain: set[str] = field(default_factory=set)  # clicks whose answer was lost
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def run(self, n: int, worker: int) -> None:
        rng = np.random.default_rng(worker)
        conn = Conn(self.url, self.token)
        w = self.world
        while not self.stop.is_set():
            with self.lock:
                k = self.counter
                self.counter += 1
            probe = self.probes and k % 50 == 7 and k // 50 < self.probes
            user = f"probe-{k // 50}" if probe else w.users[int(rng.integers(len(w.users)))]
            t_us = w.t0_us + k * 1000  # distinct times: a history entry is (time, item)
            cands = rng.choice(len(w.items), 100, replace=False)
            body = {
                "user_id": user,
                "query": ["hotpot", "coffee", "dinner", "sushi"][k % 4],
                "ts": f"{np.datetime64(t_us, 'us')}Z",
                "candidates": [{"item_id": w.items[i]} for i in cands],
            }
            status, out = self._timed(conn, "rank", "/v1/rank", body)
            if status != 200 or not (probe or k % 2 == 0):
                continue
            rid, shown = out["request_id"], [x["item_id"] for x in out["items"][:10]]
            events: list[dict[str, Any]] = [
                {
                    "type": "impression",
                    "request_id": rid,
                    "user_id": user,
                    "item_id": i,
                    "position": p + 1,
                }
                for p, i in enumerate(shown)
            ]
            clicked = shown[int(rng.integers(len(shown)))]
            events.append({**events[shown.index(clicked)], "type": "click"})
            status, _ = self._timed(conn, "events", "/v1/events", {"events": events})
            with self.lock:
                if status == 200:
                    self.clicks.setdefault(user, []).append((t_us, clicked))
                elif status == 0 or status >= 500:
                    self.uncertain.add(user)

    def _timed(self, conn: Conn, kind: str, path: str, body: Any) -> tuple[int, Any]:
        t = time.perf_counter()
        try:
            status, out, _ = conn.call("POST", path, body)
            result = str(status)
        except Exception as e:
            status, out, result = 0, None, type(e).__name__
        ms = (time.perf_counter() - t) * 1000
        with self.lock:
            self.records.append(Record(time.monotonic(), ms, kind, status == 200, result))
        return status, out

    def start(self, threads: int) -> list[threading.Thread]:
        ts = [threading.Thread(target=self.run, args=(n, n), daemon=True) for n in range(threads)]
        for t in ts:
            t.start()
        return ts


def worker_pids(url: str, token: str) -> list[int]:
    _, out, _ = Conn(url, token).call("GET", "/v1/models")
    return sorted(w["pid"] for w in out["workers"])


def worker_processes(server_pid: int) -> list[int]:
    """The OS pids of a server's worker processes (uvicorn's spawned children): with a Redis
    store the workers' listed ids are numbers Redis gave them, not pids."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return sorted(
        int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def p99(records: list[Record]) -> float | None:
    ms = [r.ms for r in records if r.kind == "rank" and r.ok]
    return round(float(np.percentile(ms, 99)), 2) if ms else None


def histories(
    url: str, token: str, users: list[str]
) -> dict[str, dict[str, list[tuple[int, str]]]]:
    """worker pid -> user -> history, each user read until both workers have answered."""
    conn = Conn(url, token)
    out: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for user in users:
        seen: set[str] = set()
        for _ in range(200):
            status, body, headers = conn.call("GET", f"/v1/users/{user}/history")
            assert status == 200, body
            pid = {k.lower(): v for k, v in headers.items()}["x-ranker-worker"]
            out.setdefault(pid, {})[user] = [(h["ts_us"], h["item_id"]) for h in body["history"]]
            seen.add(pid)
            if len(seen) == 2:
                break
            if conn.conn is not None:  # a new connection may land on the other worker
                conn.conn.close()
                conn.conn = None
    return out


def consistency(load: Load, s: BackgroundServer) -> dict[str, Any]:
    users = sorted(load.clicks)
    views = histories(s.url, s.client_token, users)
    dup = sum(len(h) - len(set(h)) for v in views.values() for h in v.values())
    both = [u for u in users if all(u in v for v in views.values())]
    differ = sum(1 for u in both if len({json.dumps(v[u]) for v in views.values()}) > 1)
    probes = [u for u in both if u.startswith("probe-")]
    missing = sum(
        1
        for u in probes
        for v in views.values()
        if u not in load.uncertain and not set(load.clicks[u]) <= set(map(tuple, v[u]))
    )
    return {
        "users_read_back": len(users),
        "users_read_through_both_workers": len(both),
        "workers_read": len(views),
        "duplicated_entries": dup,
        "users_differing_between_workers": differ,
        "probe_clicks": len(probes),
        "probe_clicks_missing_through_some_worker": missing,
    }


def log_bytes(log_dir: Path) -> dict[str, int]:
    out = {"logs": 0, "store": 0}
    for p in log_dir.rglob("*"):
        if p.is_file():
            out["store" if p.name.startswith("store.sqlite") else "logs"] += p.stat().st_size
    return out


def probe_p99(s: BackgroundServer, world: World, n: int = 400, threads: int = 4) -> float | None:
    load = Load(s.url, s.client_token, world)
    ts = load.start(threads)
    while len(load.records) < n:
        time.sleep(0.1)
    load.stop.set()
    for t in ts:
        t.join(timeout=60)
    return p99(load.records)
