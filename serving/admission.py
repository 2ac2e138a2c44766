"""Load shedding: a bounded number of requests in flight per worker, and a deadline.

Requests beyond ``max_in_flight`` are answered at once with 503 and ``Retry-After`` instead
of queueing without bound behind the thread pool; each admitted request carries a deadline
(``deadline_ms`` after it arrived), and one that is still waiting when it passes gets a 503
too (``Service.rank`` checks it before featurising and before inference). A client retrying
after a 503 then meets a server that is working on requests someone still waits for.
"""

from __future__ import annotations

import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import metrics
from serving.errors import send_json

LIMITED = ("/v1/rank", "/v1/events")  # the expensive ones; health checks always answer
ARRIVAL = "ranker_t0"  # scope keys: when the request arrived (perf_counter seconds)
DEADLINE = "ranker_deadline"
WORKER = b"x-ranker-worker"  # every response names the process that answered it


class Admission:
    def __init__(self, app: ASGIApp, max_in_flight: int, deadline_ms: float):
        self.app = app
        self.max_in_flight = max_in_flight
        self.deadline_s = deadline_ms / 1000.0
        self.in_flight = 0  # the event loop is one thread: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope[ARRIVAL] = t0
        pid = str(os.getpid()).encode()

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (WORKER, pid)]
            await send(message)

        if scope.get("path") not in LIMITED:
            await self.app(scope, receive, named)
            return
        if self.in_flight >= self.max_in_flight:
            metrics.SHED.labels("busy").inc()
            metrics.ERRORS.labels(scope["path"], "503").inc()
            await _busy(named, self.in_flight)
            return
        scope[DEADLINE] = t0 + self.deadline_s
        self.in_flight += 1
        try:
            await self.app(scope, receive, named)
        finally:
            self.in_flight -= 1


async def _busy(send: Send, in_flight: int) -> None:
    await send_json(
        send,
        503,
        {"error": f"server busy ({in_flight} requests in flight on this worker); retry shortly"},
        [(b"retry-after", b"1")],
    )
