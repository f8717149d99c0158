"""The dashboard: the static page at `/` (files under callscribe/web, no build step), and the two
reads it needs that the native API does not have: the engine's state and a call's webhook deliveries.

- GET /                               the page (it signs in with an API key pair kept in sessionStorage)
- GET /ui/{file}                      its scripts and styles
- GET /v1/engine                      active legs, admission, queues, partials shed, final latency
                                      p50/p95 over the last minutes (and per 30 s for a chart)
- GET /v1/calls/{guid}/deliveries     the call's webhook deliveries (delivered, pending, retrying, dead)

The two JSON routes authenticate like the native API (ASAPP headers, Basic or `Authorization:
id:secret`). The engine is shared by every tenant, so its figures are process-wide.

Latency over time: a sampler reads the cumulative final-latency histogram every SAMPLE_S while the
app runs; the quantiles of a window come from the difference of two samples, interpolated inside
the buckets the way Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections import deque
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from importlib import resources
from typing import Any, AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse

from callscribe.api.auth import authenticate, credentials_from_headers
from callscribe.store.deliveries import call_deliveries

SAMPLE_S = 5.0
KEEP_S = 15 * 60.0
WINDOW_S = 5 * 60.0  # the headline p50/p95
SERIES_S = 10 * 60.0  # the chart
STEP_S = 30.0  # one chart point

WEB_DIR = resources.files("callscribe") / "web"
_ASSET = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$")
_MEDIA_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml", "html": "text/html"}
# The page loads only its own files and talks only to this server (WebSockets included).
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; connect-src 'self'; media-src 'self' blob:; "
                                "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
}


# Final latency over time ---------------------------------------------------------------------------


Snapshot = tuple[float, list[float]]  # (monotonic time, cumulative count per bucket, +Inf last)


def histogram_counts(histogram: Any) -> tuple[list[float], list[float]]:
    """(upper bounds, cumulative counts) of an unlabelled prometheus_client Histogram; +Inf last."""
    bounds, counts = [], []
    for metric in histogram.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                bounds.append(float(s.labels["le"]))
                counts.append(s.value)
    return bounds, counts


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile of cumulative bucket counts, linear inside a bucket; None with no observations."""
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    i = bisect.bisect_left(counts, rank)
    if bounds[i] == float("inf"):
        return bounds[-2] if len(bounds) > 1 else None  # beyond the last finite bound: say that bound
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    inside = counts[i] - below
    return lower + (bounds[i] - lower) * ((rank - below) / inside if inside else 1.0)


class LatencyHistory:
    """Samples of the final-latency histogram over the last KEEP_S; quantiles over any window in it."""

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.bounds, _ = histogram_counts(histogram)
        self.samples: deque[Snapshot] = deque(maxlen=int(KEEP_S / SAMPLE_S) + 2)
        self.sample()

    def current(self) -> Snapshot:
        return time.monotonic(), histogram_counts(self.histogram)[1]

    def sample(self) -> None:
        self.samples.append(self.current())

    def _at(self, when: float) -> Snapshot:
        """The newest sample taken at or before `when` (else the oldest: the app is younger than that).
        There is always one: the first is taken when the history is made."""
        best = None
        for snap in self.samples:
            if snap[0] > when:
                break
            best = snap
        return best or self.samples[0]

    def window(self, start: Snapshot, end: Snapshot) -> dict:
        delta = [b - a for a, b in zip(start[1], end[1])]
        return {"p50": quantile(0.5, self.bounds, delta), "p95": quantile(0.95, self.bounds, delta),
                "count": int(delta[-1]) if delta else 0}

    def report(self) -> dict:
        """The last WINDOW_S now, and one point per STEP_S over the last SERIES_S (oldest first)."""
        now = self.current()  # not kept: how often the page asks must not shorten the history
        series = []
        wall = time.time()
        for k in range(int(SERIES_S / STEP_S), 0, -1):
            start, end = now[0] - k * STEP_S, now[0] - (k - 1) * STEP_S
            if self.samples[0][0] >= end:
                continue  # before the app started
            point = self.window(self._at(start), now if k == 1 else self._at(end))
            point["t"] = datetime.fromtimestamp(wall - (k - 1) * STEP_S, timezone.utc).isoformat(timespec="seconds")
            series.append(point)
        return {"windowS": WINDOW_S, **self.window(self._at(now[0] - WINDOW_S), now), "stepS": STEP_S,
                "seriesS": SERIES_S, "series": series}


@asynccontextmanager
async def _sampling(app: FastAPI) -> AsyncIterator[None]:
    history = LatencyHistory(app.state.services.metrics.final_latency)
    app.state.latency_history = history

    async def run() -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            history.sample()

    task = asyncio.create_task(run(), name="callscribe-latency-sampler")
    try:
        yield
    finally:
        task.cancel()


router = APIRouter(tags=["dashboard"], lifespan=_sampling)


# Page and assets -----------------------------------------------------------------------------------


def _web_file(name: str) -> FileResponse:
    path = WEB_DIR / name
    if not path.is_file():
        raise HTTPException(404)
    return FileResponse(str(path), media_type=_MEDIA_TYPES[name.rsplit(".", 1)[1]], headers=_PAGE_HEADERS)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return _web_file("index.html")


@router.get("/ui/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if not _ASSET.match(name):
        raise HTTPException(404)
    return _web_file(name)


# JSON reads ----------------------------------------------------------------------------------------


def _tenant(request: Request) -> tuple[Any, str]:
    services = request.app.state.services
    key = authenticate(services.api_keys, *credentials_from_headers(request.headers))
    if key is None:
        raise HTTPException(401, "Missing or invalid credentials")
    return services, key.tenant


def _sample_value(metrics: Any, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


@router.get("/v1/engine")
async def engine_state(request: Request) -> dict:
    """The engine now: what the dashboard's engine view shows (figures are for the whole process)."""
    services, tenant = _tenant(request)
    scheduler, metrics = services.scheduler, services.metrics
    ready = services.ready.is_set() and scheduler is not None
    stats = scheduler.stats() if ready else {}
    if not ready:
        admission = "failed" if services.load_error else "loading"
    else:
        admission = "open" if scheduler.can_admit(1) else "refusing"
    history: LatencyHistory | None = getattr(request.app.state, "latency_history", None)
    return {
        "tenant": tenant,
        "ready": ready,
        "model": getattr(services.engine, "description", None) if ready else None,
        "loadError": services.load_error,
        "admission": admission,
        "activeLegs": stats.get("active_legs", 0),
        "activeCalls": int(_sample_value(metrics, "callscribe_active_calls")),
        "workers": stats.get("workers"),
        "busyWorkers": stats.get("busy_workers"),
        "load": stats.get("load"),
        "finalLoad": stats.get("final_load"),
        "queues": {"finals": stats.get("finals_queued", 0), "partials": stats.get("partials_queued", 0),
                   "webhooks": int(_sample_value(metrics, "callscribe_webhook_backlog"))},
        "partialsShed": int(_sample_value(metrics, "callscribe_partials_dropped_total")),
        "streamsRefused": int(_sample_value(metrics, "callscribe_streams_refused_total")),
        "finalDeadlineMs": services.settings.final_deadline_ms,
        "finalLatency": history.report() if history else None,
    }


@router.get("/v1/calls/{guid}/deliveries")
async def deliveries(request: Request, guid: str, callId: str | None = None) -> dict:  # noqa: N803 (wire name)
    """Webhook deliveries of the tenant's newest call with this guid (or of `callId`)."""
    services, tenant = _tenant(request)
    rows = await services.store.db.read(call_deliveries, services.store.db, tenant, guid, callId)
    if rows is None:
        raise HTTPException(404, "No such call")
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("delivered", "pending", "retrying", "dead")}
    return {"webhookConfigured": bool(services.settings.webhook_url), "counts": counts, "deliveries": rows}
