"""How many candidates one ranking may carry: latency and memory of one request by list length.

    python benchmarks/candidate_limit.py --run runs/demo [--sizes 100 1000 3000] [--model NAME]

Each size runs in a fresh process (so its peak memory is its own): the worker's service is
built as `ranker serve` builds it, one warm-up request of 10 candidates, then 5 requests of N
candidates (validated from JSON as the route does). Reports the median and worst time of the
5 and how much the process's peak RSS grew over the warm-up (what one request of N in flight
costs; several in flight at once cost that many times). The server's default
``--max-candidates`` is chosen from this table (the README states the figures). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def one_size(run: Path, n: int, model: str) -> dict[str, float]:
    from pipelines.features.state import FeatureState
    from serving.schemas import RankRequest
    from serving.service import Service
    from serving.settings import Settings

    state_dir = run / "lists" / "state"
    st = FeatureState.load(state_dir)
    ids = [str(i) for i in st.items.ids]
    rng = np.random.default_rng(n)
    t0 = int(st.clock_us or 0) // 10**6 + 600

    def body(k: int, size: int) -> str:
        items = rng.choice(len(ids), size, replace=size > len(ids))
        names = [ids[i] if size <= len(ids) else f"{ids[i]}-{j}" for j, i in enumerate(items)]
        return json.dumps(
            {
                "user_id": f"u{k}",
                "query": "hotpot",
                "ts": f"{np.datetime64(t0 + k, 's')}Z",
                "model": model,
                "candidates": [{"item_id": x} for x in names],
            }
        )

    with tempfile.TemporaryDirectory() as logs:
        settings = Settings(
            registry=run / "registry",
            state=state_dir,
            log_dir=Path(logs),
            insecure_open=True,
            max_candidates=10**6,
        )
        service = Service(settings)
        service.rank(RankRequest.model_validate_json(body(0, 10)))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = []
        for k in range(1, 6):
            start = time.perf_counter()
            service.rank(RankRequest.model_validate_json(body(k, n)))
            times.append((time.perf_counter() - start) * 1000)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        service.close()
    return {
        "candidates": n,
        "median_ms": round(float(np.median(times)), 2),
        "max_ms": round(max(times), 2),
        "peak_rss_growth_mb": round((peak - base) / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/demo"))
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 2000, 3000, 5000])
    p.add_argument("--model", default="transformer")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: a child process
    a = p.parse_args()
    if a.one:
        print(json.dumps(one_size(a.run, a.one, a.model)))
        return
    rows = []
    for n in a.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--run", str(a.run), "--model", a.model, "--one", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"model": a.model, "sizes": rows}, indent=1))


if __name__ == "__main__":
    main()
