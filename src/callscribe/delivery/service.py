"""Starts and stops storage and delivery as one unit, in the order they depend on each other."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from callscribe.delivery.fanout import FanoutHub
from callscribe.delivery.outbox import RetryPolicy, WebhookDispatcher
from callscribe.delivery.persister import Persister
from callscribe.delivery.retention import RetentionSweeper
from callscribe.delivery.webhook import Signer, load_or_create_secret
from callscribe.logsafe import url_for_log
from callscribe.store import Store

if TYPE_CHECKING:
    from callscribe.services import Services

log = logging.getLogger(__name__)


async def start_delivery(services: Services) -> None:
    """Open the database (migrating it), then subscribe the fan-out hub and the persister to the
    bus, then start the webhook dispatcher and the retention sweep. Fills services.store, .fanout,
    .persister, .webhooks, .retention."""
    settings = services.settings
    store = Store(settings.resolved_database_url)
    await store.start()
    # Cluster mode: other nodes' calls are open in the shared database; the survivors' reaper
    # (callscribe.cluster.reaper) closes those whose node is gone, this one's included.
    interrupted = [] if settings.cluster else await store.db.write(store.calls.close_interrupted,
                                                                    datetime.now(timezone.utc))
    if interrupted:
        log.warning("%d call(s) left open by the last run are closed as interrupted", len(interrupted))
        for hook in services.on_interrupted:
            try:  # what a surface owes those calls must not keep the server from starting
                await store.db.write(hook, store.db, interrupted, datetime.now(timezone.utc))
            except Exception:
                log.exception("settling interrupted calls failed (%r)", hook)
    services.store = store
    if settings.cluster:
        from callscribe.cluster import setup as cluster_setup

        services.fanout = cluster_setup.fanout(services)
    else:
        services.fanout = FanoutHub(services.bus)
    services.fanout.start()
    if settings.webhook_url:
        signer = Signer(load_or_create_secret(settings))
        make: Callable[..., WebhookDispatcher] = WebhookDispatcher
        if settings.cluster:  # every node claims from the one outbox (SKIP LOCKED)
            from callscribe.cluster import setup as cluster_setup

            make = cluster_setup.dispatcher
        services.webhooks = make(store, settings.webhook_url, signer, services.metrics,
                                 policy=RetryPolicy.from_settings(settings))
    services.persister = Persister(services.bus, store, webhooks_enabled=services.webhooks is not None,
                                   formatters=services.formatters,
                                   on_outbox=services.webhooks.wake if services.webhooks else None,
                                   metrics=services.metrics)
    services.persister.start()
    if services.webhooks is not None and settings.webhook_url:
        await services.webhooks.start()
        log.info("webhooks: delivering to %s", url_for_log(settings.webhook_url))
    services.retention = None
    if settings.retention_days > 0:
        services.retention = RetentionSweeper(store, settings.data_dir, settings.retention_days, services.metrics)
        services.retention.start()


async def stop_delivery(services: Services) -> None:
    """Store what is still queued, stop sending and sweeping, close the database."""
    if services.retention is not None:
        await services.retention.stop()
    if services.persister is not None:
        await services.persister.stop()
    if services.webhooks is not None:
        await services.webhooks.stop()
    if services.fanout is not None:
        services.fanout.stop()
    if services.store is not None:
        await asyncio.get_running_loop().run_in_executor(None, services.store.close)
