"""The FastAPI app: ``create_app()`` builds it; models and state load in the lifespan.

uvicorn --factory serving.app:create_app     # settings from RANKER_* variables
ranker serve --registry R --state S          # sets them, runs uvicorn (several workers)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving import errors, openapi
from serving.admission import Admission
from serving.routers import events, health, models, rank, users
from serving.service import Service
from serving.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(s)
        app.state.service = service
        service.maintenance.start()
        try:
            yield
        finally:
            app.state.service = None
            service.close()

    app = FastAPI(
        title="ranker",
        version="0.1.0",
        summary="Search ranking: a Transformer ranker and a LightGBM baseline, served from ONNX.",
        lifespan=lifespan,
    )
    errors.install(app)
    openapi.install(app)
    for router in (rank.router, events.router, models.router, users.router, health.router):
        app.include_router(router)
    app.add_middleware(errors.BodyLimit, max_bytes=s.max_body_bytes)
    # Outermost: stamps the arrival time and sheds load before any body is read.
    app.add_middleware(Admission, max_in_flight=s.max_in_flight, deadline_ms=s.deadline_ms)
    return app
