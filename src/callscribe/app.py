"""Composition root: builds the ASGI app and starts the background services.

This is the only module that knows every part. The speech model loads in the background after the
listener is up, so /healthz answers at once and /readyz turns ready when the model is loaded.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from callscribe import __version__, logsafe
from callscribe.calls.events import EventBus
from callscribe.config import ApiKey, Settings
from callscribe.api import messages as messages_api, native as native_api
from callscribe.api import twilio_url as twilio_url_api
from callscribe.api.errors import install_error_handlers
from callscribe.ingest import twilio_endpoint as twilio_ingest
from callscribe.api import asapp as asapp_api
from callscribe.ingest import asapp_ws as asapp_ws_ingest
from callscribe.calls.registry import CallRegistry
from callscribe.delivery.service import start_delivery, stop_delivery
from callscribe.credentials import load_or_create_api_keys
from callscribe.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything the routes share. Filled in by the lifespan; read through `app.state.services`."""

    settings: Settings
    metrics: Metrics
    api_keys: list[ApiKey]
    bus: EventBus = field(default_factory=EventBus)
    engine: Any = None  # callscribe.asr.engine.SpeechEngine
    scheduler: Any = None  # callscribe.asr.scheduler.AsrScheduler
    registry: Any = None  # callscribe.calls.registry.CallRegistry
    store: Any = None  # callscribe.store (SQL repositories)
    webhooks: Any = None  # callscribe.delivery webhook outbox dispatcher
    persister: Any = None  # callscribe.delivery.persister.Persister
    fanout: Any = None  # callscribe.delivery.fanout.FanoutHub
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None


def _load_engine(settings: Settings):
    from callscribe.asr.engine import SpeechEngine

    return SpeechEngine.from_settings(settings)


def create_app(settings: Settings, *, engine: Any = None) -> FastAPI:
    """Build the app. Pass `engine` to share one loaded model between several apps (tests)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logsafe.install()
    services = Services(settings=settings, metrics=Metrics(), api_keys=load_or_create_api_keys(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        async def load() -> None:
            from callscribe.asr.scheduler import AsrScheduler

            try:
                services.engine = engine if engine is not None else await loop.run_in_executor(None, _load_engine, settings)
                services.scheduler = AsrScheduler.from_settings(services.engine, settings, metrics=services.metrics)
                services.scheduler.start()
                services.ready.set()
                log.info("speech model loaded: %s", services.engine.description)
            except Exception as exc:  # the service stays up and says why it is not ready
                services.load_error = f"{type(exc).__name__}: {exc}"
                log.exception("speech model failed to load")

        await start_delivery(services)  # storage first: nothing may be published before it listens
        # The registry exists before the model loads: media may connect (and is counted) meanwhile;
        # starts are refused with 503 until the scheduler is ready.
        services.registry = CallRegistry(
            services.bus, lambda: services.scheduler if services.ready.is_set() else None, settings.data_dir,
            languages=lambda: getattr(services.engine, "languages", None) if services.ready.is_set() else None,
            metrics=services.metrics)
        services.registry.start()
        loader = asyncio.create_task(load())
        try:
            yield
        finally:
            loader.cancel()
            await services.registry.close()  # ends calls while the scheduler can still drain their finals
            if services.scheduler is not None:
                await loop.run_in_executor(None, services.scheduler.stop)
            await stop_delivery(services)  # last: it stores what the parts above published on the way out

    app = FastAPI(title="callscribe", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = services
    install_error_handlers(app)
    app.include_router(native_api.router)
    app.include_router(messages_api.router)
    app.include_router(twilio_url_api.router)
    app.include_router(twilio_ingest.router)
    app.include_router(asapp_api.router)
    app.include_router(asapp_ws_ingest.router)
    from callscribe.api import dashboard as dashboard_api  # the page at / and the reads only it uses
    app.include_router(dashboard_api.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        if services.ready.is_set():
            return JSONResponse({"status": "ready", "model": services.engine.description})
        body = {"status": "loading" if services.load_error is None else "failed"}
        if services.load_error:
            body["error"] = services.load_error
        return JSONResponse(body, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
