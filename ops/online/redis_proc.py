"""A real ``redis-server`` on a free local port, for the tests, benchmarks and demos that need
one: started, awaited, stopped by its PID."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.online.server_proc import free_port


@dataclass(frozen=True)
class RedisServer:
    url: str  # redis://127.0.0.1:PORT/0
    port: int
    pid: int


def redis_available() -> str | None:
    """None when ``redis-server`` can run here, else why not (for a skip reason)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    return None


@contextmanager
def redis_server(
    data_dir: Path, *, appendonly: bool = False, port: int | None = None
) -> Iterator[RedisServer]:
    """``redis-server`` with its files in ``data_dir``; with ``appendonly``, every write is
    fsynced to the AOF before Redis answers (``appendfsync always``), so a restart loses no
    acknowledged write. ``port``: a given one (a restart on the same port)."""
    data_dir = data_dir.resolve()  # Redis changes into --dir: a relative log path would move
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    cmd += ["--save", "", "--daemonize", "no", "--logfile", str(data_dir / "redis.log")]
    cmd += ["--appendonly", "yes" if appendonly else "no", "--appendfsync", "always"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, proc)
        yield RedisServer(f"redis://127.0.0.1:{port}/0", port, proc.pid)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; a process already gone is reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    import redis  # the optional dependency, only here

    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            if client.ping():
                client.close()
                return
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"redis-server on port {port} did not answer within {timeout} s")
