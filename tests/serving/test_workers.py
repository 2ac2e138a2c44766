"""Several worker processes share one state: an event posted to one is seen by the other,
and a reload reaches both. Real uvicorn processes over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ops.online.server_proc import background_server, free_port

TOKEN = "test-admin-token"
CLIENT = "test-client-token"


def _call(
    port: int, path: str, body: object | None = None, token: str | None = None
) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET"
    )
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
            )
        try:
            if _call(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError("server not ready")


@contextmanager
def _servers(cmds: list[list[str]], env: dict[str, str], ports: list[int]) -> Iterator[None]:
    procs = [
        subprocess.Popen(
            c, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for c in cmds
    ]
    try:
        for port, proc in zip(ports, procs, strict=False):
            _wait_ready(port, proc)
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_two_workers_share_events_and_reloads(
    small_registry: Path, small_lists: Path, tmp_path: Path
) -> None:
    env = {
        "RANKER_REGISTRY": str(small_registry),
        "RANKER_STATE": str(small_lists / "state"),
        "RANKER_LOG_DIR": str(tmp_path / "logs"),
        "RANKER_ADMIN_TOKEN": TOKEN,
        "RANKER_CLIENT_TOKEN": CLIENT,
        "RANKER_WORKERS": "2",
    }
    a, b = free_port(), free_port()

    def cmd(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "serving.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]

    with _servers([cmd(a), cmd(b)], env, [a, b]):
        status, ranked = _call(
            a,
            "/v1/rank",
            {
                "user_id": "shared-user",
                "query": "hotpot",
                "candidates": [{"item_id": "i001"}, {"item_id": "i002"}],
            },
        )
        assert status == 200
        event = {
            "type": "click",
            "request_id": ranked["request_id"],
            "user_id": "shared-user",
            "item_id": "i002",
            "position": 2,
        }
        accepted = (200, {"accepted": 1, "duplicates": 0})
        assert _call(a, "/v1/events", {"events": [event]}, token=CLIENT) == accepted
        status, hist = _call(b, "/v1/users/shared-user/history", token=CLIENT)
        assert status == 200 and [h["item_id"] for h in hist["history"]] == ["i002"]
        # A reload through one worker reaches the other.
        assert _call(b, "/v1/models")[1]["generation"] == 0
        assert _call(a, "/v1/models/reload", {}, token=TOKEN)[0] == 200
        assert _call(b, "/v1/models")[1]["generation"] == 1


def test_ranker_serve_runs_several_workers(
    small_registry: Path, small_lists: Path, tmp_path: Path
) -> None:
    with background_server(
        small_registry, small_lists / "state", tmp_path / "logs", workers=2
    ) as server:
        port = int(server.url.rsplit(":", 1)[1])
        for i in range(6):
            status, out = _call(
                port,
                "/v1/rank",
                {"user_id": f"u{i}", "query": "tea", "candidates": [{"item_id": "x"}]},
            )
            assert status == 200 and out["model"] == "transformer"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("ranker_requests_total{")
        )
        assert total == 6  # aggregated over both workers
