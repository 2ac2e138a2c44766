"""The FastAPI app: ``create_app()`` builds it; models and state load in the lifespan.

uvicorn --factory serving.app:create_app     # settings from RANKER_* variables
ranker serve --registry R --state S          # sets them, runs uvicorn (several workers)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving import errors
from serving.routers import events, health, models, rank, users
from serving.service import Service
from serving.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or get_settings()
        app.state.service = Service(s)
        log.info(
            "ready: models %s, default %s",
            sorted(app.state.service.models.models),
            app.state.service.models.default,
        )
        try:
            yield
        finally:
            app.state.service.close()
            app.state.service = None

    app = FastAPI(
        title="ranker",
        version="0.1.0",
        summary="Search ranking: a Transformer ranker and a LightGBM baseline, served from ONNX.",
        lifespan=lifespan,
    )
    errors.install(app)
    for router in (rank.router, events.router, models.router, users.router, health.router):
        app.include_router(router)
    known = settings or _maybe_settings()
    app.add_middleware(errors.BodyLimit, max_bytes=known.max_body_bytes if known else 8 * 2**20)
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    return app


def _maybe_settings() -> Settings | None:
    try:
        return get_settings()
    except RuntimeError:
        return None
