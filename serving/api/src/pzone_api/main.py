"""The FastAPI application: ``create_app()`` builds it from settings; nothing happens at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pzone.db.engine import make_engine
from pzone.storage import object_store_from_settings
from pzone_api.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(settings.sqlalchemy_url)
        app.state.store = object_store_from_settings(settings)
        try:
            yield
        finally:
            app.state.engine.dispose()

    app = FastAPI(
        title="P-ZONE API", version="0.1.0", lifespan=lifespan, docs_url="/docs", openapi_url="/openapi.json"
    )
    from pzone_api.api.routes import health

    app.include_router(health.router)
    # --- routers of the other resources are included below
    return app
