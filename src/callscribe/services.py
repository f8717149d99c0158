"""What the routes and adapters share: one `Services` per app, filled in by the app's lifespan
(app.py, the composition root) and read through `app.state.services`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Awaitable, Callable

from callscribe.calls.events import EventBus
from callscribe.calls.media import MediaGrants, SourceFactory, UrlSources
from callscribe.config import ApiKey, Settings
from callscribe.delivery.webhook import Formatter
from callscribe.metrics import Metrics
from callscribe.tokens import TokenUses

if TYPE_CHECKING:
    from callscribe.asr.engine import SpeechEngine
    from callscribe.asr.scheduler import AsrScheduler
    from callscribe.calls.registry import CallRegistry
    from callscribe.cluster.node import ClusterNode
    from callscribe.delivery.fanout import FanoutHub
    from callscribe.delivery.outbox import WebhookDispatcher
    from callscribe.delivery.persister import Persister
    from callscribe.delivery.retention import RetentionSweeper
    from callscribe.ingest.limits import ConnectionLimits
    from callscribe.store import Store
    from callscribe.store.db import Database


@dataclass
class Services:
    """Everything the routes and adapters share."""

    settings: Settings
    metrics: Metrics
    api_keys: list[ApiKey]
    bus: EventBus = field(default_factory=EventBus)
    # Each control surface's webhook formatter, by the surface name its streams carry.
    formatters: dict[str, Formatter] = field(default_factory=dict)
    # Run at start on the store's writer thread with (database, call ids a dead process left open,
    # now), before webhooks go out: a surface's chance to store what those calls still owe.
    on_interrupted: list[Callable[[Database, list[str], datetime], object]] = field(default_factory=list)
    # The pulled source each namespace's start may name (Amazon Connect's Kinesis Video streams).
    sources: dict[str, SourceFactory] = field(default_factory=dict)
    url_sources: UrlSources | None = None  # pulls of stream URLs (memories.ai-style tasks)
    # Join tokens -> whose audio a WebRTC or PCM connection carries (a meeting's attendees).
    media_grants: MediaGrants = field(default_factory=MediaGrants)
    engine: SpeechEngine | None = None
    scheduler: AsrScheduler | None = None
    registry: CallRegistry | None = None
    store: Store | None = None
    webhooks: WebhookDispatcher | None = None
    persister: Persister | None = None
    fanout: FanoutHub | None = None
    retention: RetentionSweeper | None = None
    connections: ConnectionLimits | None = None  # media sockets held (ingest/limits.py)
    token_uses: TokenUses = field(default_factory=TokenUses)  # stream tokens bound at first use
    # Sockets that have something to tell their peer before a shutdown closes them (ASAPP's 5001).
    drainers: set[Callable[[], Awaitable[None]]] = field(default_factory=set)
    cluster: ClusterNode | None = None  # set when CALLSCRIBE_REDIS_URL makes this process a cluster node
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None



    # The parts the lifespan starts before the first request; typed accessors for routes.

    async def drain(self) -> None:
        """SIGTERM: refuse new legs and media, and let sockets tell their peers, before the
        server closes every connection (their calls' last utterances are then decoded and stored)."""
        if self.registry is not None:
            self.registry.draining = True
        await asyncio.gather(*(drain() for drain in list(self.drainers)), return_exceptions=True)

    def get_store(self) -> Store:
        if self.store is None:
            raise RuntimeError("storage is not started")
        return self.store

    def get_persister(self) -> Persister:
        if self.persister is None:
            raise RuntimeError("storage is not started")
        return self.persister
