"""Replicas behind HAProxy on one Redis: the configuration (one source for ``deploy/`` and the
demo), a real HAProxy process, and the whole cluster on this machine for tests and demos.

Health checks: HAProxy asks every replica's ``/readyz`` each ``CHECK_INTER_MS``; ``FALL``
failures in a row take it out, ``RISE`` successes bring it back. A replica that dies is out
within ``FALL * CHECK_INTER_MS`` (1 s here); meanwhile a request that finds its connection
refused or reset is sent again to another replica (``retry-on``, ``option redispatch``, the
body buffered first so that it can be): rankings are safe to repeat, and events carry
idempotency keys, so a repeat counts once.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.online.redis_proc import RedisServer, redis_server, stop
from ops.online.server_proc import BackgroundServer, background_server, free_port

CHECK_INTER_MS = 500
FALL, RISE = 2, 2


def haproxy_config(bind: str, replicas: list[str], stats: str | None = None) -> str:
    """HAProxy's configuration: ``bind`` (``host:port``) in front of ``replicas``
    (``host:port`` each); ``stats``: where its statistics page listens, if anywhere."""
    servers = "\n".join(f"    server r{k} {addr} check" for k, addr in enumerate(replicas, 1))
    stats_section = (
        f"\nlisten stats\n    bind {stats}\n    stats enable\n    stats uri /\n" if stats else ""
    )
    return f"""\
# Rendered by ops/online/cluster.py (haproxy_config); edit there, not here.
global
    maxconn 4096
    # A request is retried only if its body fits in one buffer (see http-buffer-request):
    # 64 kB holds a ranking of about 2,500 candidates given by id (16 kB by default: 600).
    tune.bufsize 65536

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A request whose replica refused, reset or dropped the connection goes to another one.
    # Such a retry needs the request's body in HAProxy's buffer: without
    # http-buffer-request a POST went to the replica as it arrived, and a replica killed
    # under load cost 2-3 rankings (502, some sent after the kill, while its processes
    # exited) in each of 5 runs; none in 5 runs with it.
    retries 3
    option redispatch 1
    option http-buffer-request
    retry-on conn-failure empty-response response-timeout

frontend ranker
    bind {bind}
    default_backend replicas

backend replicas
    balance roundrobin
    # In once its models are loaded and warmed (/readyz "ready"), and kept in while the shared
    # store is down ("store unavailable": rankings still answer, degraded; events get a 503),
    # since every replica shares that store and taking all out would refuse every ranking.
    option httpchk GET /readyz
    http-check expect rstring '"status":"(ready|store unavailable)"'
    default-server inter {CHECK_INTER_MS}ms fall {FALL} rise {RISE}
{servers}
{stats_section}"""


def haproxy_available() -> str | None:
    if shutil.which("haproxy") is None:
        return "haproxy is not installed (Debian: apt-get install haproxy)"
    return None


@contextmanager
def haproxy(work: Path, replicas: list[str], port: int | None = None) -> Iterator[str]:
    """HAProxy in the foreground on ``port`` (a free one by default); yields its URL."""
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cfg = work / "haproxy.cfg"
    cfg.write_text(haproxy_config(f"127.0.0.1:{port}", replicas))
    log = (work / "haproxy.log").open("w")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited ({proc.returncode}); see {work}/haproxy.log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("haproxy did not listen within 10 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


@dataclass
class Cluster:
    url: str  # HAProxy's
    redis: RedisServer
    replicas: list[BackgroundServer]
    client_token: str
    admin_token: str
    log_dirs: list[Path]


@contextmanager
def local_cluster(
    registry: Path,
    state: Path,
    work: Path,
    *,
    replicas: int = 2,
    experiment: Path | None = None,
) -> Iterator[Cluster]:
    """Redis, ``replicas`` ``ranker serve`` processes on it (each its own port and log
    directory, as on separate machines, sharing one pair of tokens) and HAProxy in front,
    all on this machine; every process stopped by its PID at the end."""
    tokens = (secrets.token_urlsafe(16), secrets.token_urlsafe(16))
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(work / "redis", appendonly=True))
        import redis as redis_py  # the optional dependency, only here

        from serving.state_load import load_state

        client = redis_py.Redis.from_url(redis.url, decode_responses=True)
        load_state(client, state, progress=False)  # replicas start only once it is loaded
        client.close()
        servers = []
        for k in range(replicas):
            servers.append(
                stack.enter_context(
                    background_server(
                        registry,
                        state,
                        work / f"replica-{k + 1}",
                        experiment=experiment,
                        extra=["--store", redis.url],
                        tokens=tokens,
                    )
                )
            )
        addrs = [s.url.removeprefix("http://") for s in servers]
        url = stack.enter_context(haproxy(work / "haproxy", addrs))
        yield Cluster(
            url,
            redis,
            servers,
            *tokens,
            [work / f"replica-{k + 1}" for k in range(replicas)],
        )
