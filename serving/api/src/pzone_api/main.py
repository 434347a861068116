"""The FastAPI application: ``create_app()`` builds it from settings; nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from pzone.db.engine import make_engine
from pzone.storage import object_store_from_settings
from pzone_api.processing import photo_queue_from_settings
from pzone_api.settings import Settings

# The web UI: plain HTML/CSS/JS shipped inside the package (nginx can serve the same folder in front of the API).
STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(settings.sqlalchemy_url)
        app.state.store = object_store_from_settings(settings)
        app.state.photo_queue = photo_queue_from_settings(settings, app.state.engine, app.state.store)
        retry = asyncio.create_task(_retry_verdicts(app))
        try:
            yield
        finally:
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
            await app.state.photo_queue.aclose()
            backends = getattr(app.state, "auth_backends", None)
            if backends is not None:
                await backends.aclose()
            app.state.engine.dispose()

    from pzone_api.api.errors import install_error_handlers
    from pzone_api.api.outages import UNAVAILABLE, install_outage_handlers

    app = FastAPI(
        title="P-ZONE API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        responses=UNAVAILABLE,
    )
    from pzone_api.api.routes import health

    app.include_router(health.router)
    # --- routers of the other resources are included below
    from pzone_api.api.routes import accuracy, auth, dashboard, devices, labels, objects, photos

    app.include_router(auth.router)
    app.include_router(photos.router)
    app.include_router(labels.router)
    app.include_router(objects.router)
    app.include_router(devices.router)
    app.include_router(dashboard.router)
    app.include_router(accuracy.router)
    _serve_ui(app)
    install_error_handlers(app)
    install_outage_handlers(app)
    from pzone_api.body_coalescing import CoalescedBody

    app.add_middleware(CoalescedBody)
    return app


def _serve_ui(app: FastAPI) -> None:
    """The web UI's static files at "/", for every HTTP request that no route matched.

    Not ``app.mount("/", ...)``: a mount at "/" matches every path, so any route added after it (a router included
    later, a test's own routes) would never be reached. As the router's fallback, every route wins, whenever added.
    """
    from fastapi.staticfiles import StaticFiles
    from starlette.types import Receive, Scope, Send

    ui = StaticFiles(directory=STATIC_DIR, html=True)
    not_found = app.router.default

    async def ui_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await (ui if scope["type"] == "http" else not_found)(scope, receive, send)

    app.router.default = ui_or_not_found


async def _retry_verdicts(app: FastAPI) -> None:
    """Background housekeeping: photos saved as "pending" get their verdict once the model tier answers again,
    direct uploads that never completed are completed when their bytes arrived and removed otherwise (here, not on
    every create: it keeps requests cheap), upload objects no photo waits for are deleted, and photos whose
    processing job was lost (a crashed photo worker) are enqueued again."""
    from pzone_api.photo_verdicts import retry_pending
    from pzone_api.processing import finish_or_purge_stale_uploads, requeue_stuck, sweep_stray_uploads

    settings: Settings = app.state.settings

    def purge() -> None:
        # twice the upload URL's lifetime: no PUT can still arrive for what is swept
        older_than = timedelta(seconds=settings.upload_url_expires_s * 2)
        finish_or_purge_stale_uploads(app.state.engine, app.state.store, app.state.photo_queue, older_than)
        sweep_stray_uploads(app.state.engine, app.state.store, older_than)

    while True:
        await asyncio.sleep(settings.verdict_retry_interval_s)
        try:
            await asyncio.to_thread(retry_pending, settings, app.state.engine, app.state.store)
            await asyncio.to_thread(purge)
            await asyncio.to_thread(
                requeue_stuck, app.state.engine, app.state.photo_queue, settings.processing_stuck_after_s
            )
        except Exception:  # keep retrying; the next pass may succeed
            logging.getLogger("pzone.api").exception("housekeeping pass failed")
