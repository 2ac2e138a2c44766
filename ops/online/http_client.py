"""A small HTTP client for tests against a real `ranker serve`: raw bodies and header bytes
allowed, a fresh connection per call (a killed worker cannot wedge the next call). A
response cut off (a worker killed mid-response) is a ``ConnectionError``, as a refused or
reset connection is, so callers that count failed calls catch ``OSError`` alone."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse


@dataclass
class Reply:
    status: int
    body: Any  # parsed JSON, or the text when it is not JSON
    headers: dict[str, str]

    @property
    def worker(self) -> str | None:
        return self.headers.get("x-ranker-worker")


class Http:
    def __init__(self, url: str, client_token: str | None = None, admin_token: str | None = None):
        u = urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.client_token, self.admin_token = client_token, admin_token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        auth: str | bytes | None = "client",
        timeout: float = 30.0,
    ) -> Reply:
        """``auth``: "client" or "admin" (the server's tokens), None, or a header value."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = raw if raw is not None else None if body is None else json.dumps(body).encode()
            conn.putrequest(method, path)
            conn.putheader("content-type", "application/json")
            header: str | bytes | None = auth
            if auth in ("client", "admin"):
                token = self.client_token if auth == "client" else self.admin_token
                header = f"Bearer {token}" if token else None
            if header:
                conn.putheader("authorization", header)
            conn.putheader("content-length", str(len(data or b"")))
            conn.endheaders(data)
            r = conn.getresponse()
            try:
                text = r.read()
            except http.client.HTTPException as e:  # e.g. the server died mid-response
                raise ConnectionError(f"{type(e).__name__}: {e}") from e
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = text.decode("utf-8", "replace")
            return Reply(r.status, parsed, {k.lower(): v for k, v in r.getheaders()})
        finally:
            conn.close()

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def wait(self, check: Any, timeout: float = 60.0, every: float = 0.2) -> float:
        """Seconds until ``check()`` is true; fails after ``timeout``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if check():
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(every)
        raise AssertionError(f"not true within {timeout} s: {check}")

    def each_worker(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        want: int = 200,
        workers: int = 2,
        timeout: float = 60.0,
        auth: str | bytes | None = "client",
    ) -> dict[str, Reply]:
        """One reply with status ``want`` from each of ``workers`` workers (by X-Ranker-Worker).

        Workers share one listening socket and the kernel picks which accepts a connection, so
        a few sequential calls can all land on one worker, and a worker being replaced takes
        seconds to load before it accepts at all: keep calling until every worker has answered,
        for up to ``timeout`` seconds."""
        seen: dict[str, Reply] = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                r = self.call(method, path, body, auth=auth)
            except OSError:
                r = None
            if r is not None and r.status == want and r.worker:
                seen[r.worker] = r
                if len(seen) == workers:
                    return seen
            time.sleep(0.02)
        raise AssertionError(
            f"{method} {path}: {want} from {sorted(seen)} only, not {workers} workers in {timeout} s"
        )
