"""A server in the background for the demo and the benchmarks: started, awaited, always stopped."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BackgroundServer:
    url: str
    client_token: str  # for /v1/events and user histories
    admin_token: str  # for reloads
    pid: int  # the server's main process (uvicorn's supervisor with several workers)


@contextmanager
def background_server(
    registry: Path,
    state: Path,
    log_dir: Path,
    *,
    experiment: Path | None = None,
    workers: int = 1,
    extra: list[str] | None = None,
    ready_timeout: float = 180.0,
    port: int | None = None,
    tokens: tuple[str, str] | None = None,
) -> Iterator[BackgroundServer]:
    """``ranker serve`` in a child process, with fresh client and admin tokens (or the given
    ``tokens``, client then admin: replicas behind one load balancer share theirs); yields it
    once /readyz answers 200."""
    port = port or free_port()
    client, admin = tokens or (secrets.token_urlsafe(16), secrets.token_urlsafe(16))
    env_tokens = {"RANKER_CLIENT_TOKEN": client, "RANKER_ADMIN_TOKEN": admin}
    cmd = [
        sys.executable,
        "-m",
        "ops.cli",
        "serve",
        "--registry",
        str(registry),
        "--state",
        str(state),
        "--log-dir",
        str(log_dir),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        *(["--experiment", str(experiment)] if experiment else []),
        *(extra or []),
    ]
    log_dir.mkdir(parents=True, exist_ok=True)
    err = (log_dir / "server.stderr").open("w")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=err,
        start_new_session=True,
        env={**os.environ, **env_tokens},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited ({proc.returncode}); see {log_dir / 'server.stderr'}"
                )
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"the server was not ready within {ready_timeout:.0f} s")
            time.sleep(0.3)
        yield BackgroundServer(url, client, admin, proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the workers too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err.close()
