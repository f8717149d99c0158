"""Composition root: builds the ASGI app and starts the background services.

This is the only module that knows every part. The speech model loads in the background after the
listener is up, so /healthz answers at once and /readyz turns ready when the model is loaded.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from callscribe import __version__, heap, logsafe
from callscribe.api import asapp as asapp_api
from callscribe.api import asapp_wire
from callscribe.api import asapp_ws_url as asapp_ws_url_api
from callscribe.api import chime as chime_api
from callscribe.api import chime_wire
from callscribe.api import chime_ws
from callscribe.api.chime_book import MeetingBook
from callscribe.api import memories as memories_api
from callscribe.api import memories_wire
from callscribe.api import messages as messages_api
from callscribe.api import native as native_api
from callscribe.api import twilio_url as twilio_url_api
from callscribe.api import dashboard as dashboard_api
from callscribe.api import listen as listen_api
from callscribe.api import listen_wire
from callscribe.api import deliveries as deliveries_api
from callscribe.api.auth import bearer_matches
from callscribe.api.errors import install_error_handlers
from callscribe.api.limits import AuthFailureThrottle
from callscribe.calls.registry import CallRegistry
from callscribe.config import Settings
from callscribe.credentials import load_or_create_api_keys
from callscribe.delivery.service import start_delivery, stop_delivery
from callscribe.ingest import asapp_ws as asapp_ws_ingest
from callscribe.ingest import audiohook as audiohook_ingest
from callscribe.ingest import chime_pcm as chime_pcm_ingest
from callscribe.ingest import memories_ws as memories_ws_ingest
from callscribe.ingest import listen as listen_ingest
from callscribe.ingest import siprec as siprec_ingest
from callscribe.ingest import twilio_endpoint as twilio_ingest
from callscribe.ingest import webrtc_endpoint as webrtc_ingest
from callscribe.ingest.kvs.puller import amazon_connect_sources
from callscribe.ingest.limits import ConnectionLimits
from callscribe.ingest.url import UrlSourceMaker
from callscribe.metrics import Metrics

from callscribe.services import Services

if TYPE_CHECKING:
    from callscribe.asr.engine import SpeechEngine

log = logging.getLogger(__name__)


def _load_engine(settings: Settings) -> "SpeechEngine":
    from callscribe.asr.engine import SpeechEngine

    return SpeechEngine.from_settings(settings)


def create_app(settings: Settings, *, engine: "SpeechEngine | None" = None) -> FastAPI:
    """Build the app. Pass `engine` to share one loaded model between several apps (tests)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logsafe.install()
    memories_tasks = memories_api.TaskBook()
    services = Services(settings=settings, metrics=Metrics(), api_keys=load_or_create_api_keys(settings),
                        formatters={asapp_wire.SURFACE: asapp_wire.webhook,
                                    memories_wire.SURFACE: memories_wire.formatter(memories_tasks.media_ms,
                                                                                   memories_tasks.segment_sent),
                                    listen_wire.SURFACE: listen_wire.webhook,
                                    chime_wire.SURFACE: chime_wire.webhook},
                        connections=ConnectionLimits(settings.max_connections, settings.max_connections_per_source,
                                                     settings.max_unstarted_connections))
    services.sources["amazonconnect"] = amazon_connect_sources(settings, services.metrics.kvs_lag.observe)
    services.url_sources = UrlSourceMaker()
    memories_tasks.watch(services.bus)
    services.on_interrupted.append(memories_wire.recover)
    chime_meetings = MeetingBook(settings.data_dir, services)  # meetings outlive restarts (a file in the data dir)
    services.media_grants.register(chime_meetings.resolve)  # JoinToken -> that attendee in that meeting's call

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

        sip = await siprec_ingest.start(services)  # binds first: a busy SIP port stops start-up cleanly
        if settings.cluster:  # one node of several (docs/cluster.md); joins once the registry exists
            from callscribe.cluster import setup as cluster_setup

            services.cluster = cluster_setup.new_node(services)
        await start_delivery(services)  # storage first: nothing may be published before it listens
        # The registry exists before the model loads: media may connect (and is counted) meanwhile;
        # starts are refused with 503 until the scheduler is ready.
        registry_cls = cluster_setup.registry_class() if settings.cluster else CallRegistry
        services.registry = registry_cls(
            services.bus, lambda: services.scheduler if services.ready.is_set() else None, settings.data_dir,
            languages=lambda: getattr(services.engine, "languages", None) if services.ready.is_set() else None,
            metrics=services.metrics, max_recording_s=settings.max_recording_s, max_call_s=settings.max_call_s)
        services.registry.start()
        if settings.cluster:
            await cluster_setup.join(services, app)
        chime_meetings.begin()
        loader = asyncio.create_task(load())
        trimmer = asyncio.create_task(heap.trim_every())
        try:
            yield
        finally:
            loader.cancel()
            trimmer.cancel()
            await chime_meetings.close()
            await sip.stop()
            services.registry.draining = True  # no new legs or media while the calls close
            try:
                await services.registry.close()  # ends calls while the scheduler can still drain their finals
            finally:  # a call that failed to close must not keep the rest of shutdown from running
                if settings.cluster:  # only now: while the calls closed, the heartbeat still named this node
                    await cluster_setup.leave(services)
                if services.scheduler is not None:
                    await loop.run_in_executor(None, services.scheduler.stop)
                await stop_delivery(services)  # last: it stores what the parts above published on the way out

    app = FastAPI(title="callscribe", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = services
    app.state.memories_tasks = memories_tasks
    app.state.chime_meetings = chime_meetings
    shapes = install_error_handlers(app, [(prefix, asapp_wire.error_shape) for prefix in asapp_wire.PATH_PREFIXES]
                                    + [(prefix, memories_wire.error_shape) for prefix in memories_wire.PATH_PREFIXES]
                                    + [(prefix, listen_wire.error_shape) for prefix in listen_wire.PATH_PREFIXES]
                                    + [(prefix, chime_wire.error_shape) for prefix in chime_wire.PATH_PREFIXES])
    app.add_middleware(AuthFailureThrottle, per_minute=settings.auth_failures_per_minute, shapes=shapes)
    for router in (native_api.router, messages_api.router, twilio_url_api.router, asapp_api.router,
                   asapp_ws_url_api.router, deliveries_api.router, dashboard_api.router, twilio_ingest.router,
                   asapp_ws_ingest.router, audiohook_ingest.router, memories_api.router, memories_ws_ingest.router,
                   listen_ingest.router, listen_api.router, chime_api.router, chime_ws.router, chime_pcm_ingest.router,
                   webrtc_ingest.router):
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        if services.persister is not None and not services.persister.store_healthy:
            return JSONResponse({"status": "store-unavailable"}, status_code=503)
        if services.ready.is_set() and services.engine is not None:
            if settings.cluster:  # a full or draining node is out of the balancer's rotation
                from callscribe.cluster import setup as cluster_setup

                out = cluster_setup.readiness(services)
                if out is not None:
                    return JSONResponse({"status": out, "model": services.engine.description}, status_code=503)
            return JSONResponse({"status": "ready", "model": services.engine.description})
        body = {"status": "loading" if services.load_error is None else "failed"}
        if services.load_error:
            body["error"] = services.load_error
        return JSONResponse(body, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if settings.metrics_token and not bearer_matches(request.headers, settings.metrics_token):
            return shapes.response(request.url.path, 401, None, "Unauthorized", headers={"WWW-Authenticate": "Bearer"})
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
