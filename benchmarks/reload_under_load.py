"""Reloads under load: does any request fail or hang while the models are swapped?

    python benchmarks/reload_under_load.py --run runs/demo [--device cuda] [--workers 2]
        [--threads 32] [--reloads 10] [--batch-window-ms 2]

`ranker serve` on the demo's models; client threads send rankings (100 candidates, the
Transformer) with a 10 s timeout while the main thread reloads every two seconds. On a GPU the
server batches requests across callers by default (a 2 ms window); on the CPU pass
--batch-window-ms to exercise the same batcher. A reload once closed the batcher under
requests in flight and they hung (1 of 40 past 10 s on a GPU host). Prints JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ops.online.server_proc import background_server
from pipelines.features.state import FeatureState

TIMEOUT_S = 10.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/demo"))
    p.add_argument("--out", type=Path, default=Path("runs/reload_under_load"))
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--reloads", type=int, default=10)
    p.add_argument("--batch-window-ms", type=float)
    a = p.parse_args()
    st = FeatureState.load(a.run / "lists" / "state")
    items = [str(i) for i in st.items.ids]
    t0 = int(st.clock_us or 0) + 600 * 10**6
    extra = ["--device", a.device]
    if a.batch_window_ms is not None:
        extra += ["--batch-window-ms", str(a.batch_window_ms)]
    with background_server(
        a.run / "registry", a.run / "lists" / "state", a.out, workers=a.workers, extra=extra
    ) as s:
        u = urlparse(s.url)
        stop = threading.Event()
        lock = threading.Lock()
        results: list[tuple[str, float]] = []

        def client(n: int) -> None:
            rng = np.random.default_rng(n)
            k = 0
            while not stop.is_set():
                body = {
                    "user_id": f"load-{n}",
                    "query": "hotpot",
                    "model": "transformer",
                    "ts": f"{np.datetime64(t0 + n * 10**6 + k, 'us')}Z",
                    "candidates": [
                        {"item_id": items[i]} for i in rng.choice(len(items), 100, replace=False)
                    ],
                }
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT_S)
                t = time.perf_counter()
                try:
                    conn.request(
                        "POST", "/v1/rank", json.dumps(body), {"content-type": "application/json"}
                    )
                    r = conn.getresponse()
                    r.read()
                    outcome = str(r.status)
                except TimeoutError:
                    outcome = "hung"
                except OSError as e:
                    outcome = type(e).__name__
                finally:
                    conn.close()
                with lock:
                    results.append((outcome, time.perf_counter() - t))
                k += 1

        threads = [
            threading.Thread(target=client, args=(n,), daemon=True) for n in range(a.threads)
        ]
        for t in threads:
            t.start()
        reloads: list[int] = []
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        for _ in range(a.reloads):
            time.sleep(2)
            conn.request(
                "POST", "/v1/models/reload", b"", {"authorization": f"Bearer {s.admin_token}"}
            )
            r = conn.getresponse()
            r.read()
            reloads.append(r.status)
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT_S + 5)
        conn.request("GET", "/v1/models")
        info = json.loads(conn.getresponse().read())
    outcomes = [o for o, _ in results]
    print(
        json.dumps(
            {
                "benchmark": "reload_under_load",
                "device": info["device"],
                "workers": a.workers,
                "threads": a.threads,
                "batch_window_ms": a.batch_window_ms,
                "requests": len(results),
                "ok": outcomes.count("200"),
                "hung_past_10s": outcomes.count("hung"),
                "other": sorted({o for o in outcomes if o not in ("200", "hung")}),
                "max_s": round(max((s for _, s in results), default=0.0), 3),
                "reload_statuses": reloads,
                "generation": info["generation"],
                "version_skew": info["version_skew"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
