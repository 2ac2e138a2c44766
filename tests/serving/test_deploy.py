"""The deployment recipe in ``deploy/`` is what the code renders and what the real programs
accept: HAProxy's configuration checks, and Redis runs with AOF on and eviction off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ops.online.cluster import haproxy_available, haproxy_config
from ops.online.redis_proc import redis_available, wait_ready
from ops.online.server_proc import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLE_REPLICAS = ["10.0.0.11:8000", "10.0.0.12:8000"]


def test_the_committed_haproxy_config_is_the_rendered_one() -> None:
    rendered = haproxy_config("*:8000", EXAMPLE_REPLICAS, stats="127.0.0.1:8404")
    assert (DEPLOY / "haproxy.cfg").read_text() == rendered, (
        "deploy/haproxy.cfg is stale: render it again from ops/online/cluster.py"
    )


@pytest.mark.skipif(haproxy_available() is not None, reason=str(haproxy_available()))
def test_haproxy_accepts_the_config() -> None:
    r = subprocess.run(
        ["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(redis_available() is not None, reason=str(redis_available()))
def test_redis_runs_with_the_config(tmp_path: Path) -> None:
    import redis

    port = free_port()
    # The recipe's settings, on a local port and directory instead of the deployment's.
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    proc = subprocess.Popen(
        ["redis-server", str(DEPLOY / "redis.conf"), *local], stdout=subprocess.DEVNULL
    )
    try:
        wait_ready(port, proc)
        client = redis.Redis(port=port, decode_responses=True)
        conf = {k: client.config_get(k)[k] for k in ("appendonly", "appendfsync")}
        conf["maxmemory-policy"] = client.config_get("maxmemory-policy")["maxmemory-policy"]
        assert conf == {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
        }
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
