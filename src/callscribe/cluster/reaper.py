"""A node's loss ends only its own calls: every node, at each heartbeat, looks in PostgreSQL for
calls still open whose directory entry is gone (their node stopped refreshing it: killed, or cut
off from Redis) and closes them as interrupted, as one node does at restart for its own. Their
stored finals stay, and their webhooks go on from the shared outbox. Several survivors may look at
once; the row locks (SKIP LOCKED) let one of them close each call."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

from callscribe.cluster import wire
from callscribe.cluster.node import P, ClusterNode, events_channel
from callscribe.store import Store

log = logging.getLogger(__name__)
REASON = "the node that held the call stopped"
LOOK_KEY = P + "reaper"


class Reaper:
    def __init__(self, node: ClusterNode, store: Store) -> None:
        self.node = node
        self.store = store

    async def tick(self) -> None:
        # One node looks per heartbeat period (a key with a TTL shorter than the period), not all.
        if not await self.node.redis.set(LOOK_KEY, self.node.id, nx=True, px=int(self.node.ttl_s * 1000 / 4 * 0.9)):
            return
        now = datetime.now(timezone.utc)
        # A call younger than two TTLs may not be in the directory yet (its node is registering it).
        candidates = await self.store.db.read(self.store.calls.open_calls, now - timedelta(seconds=2 * self.node.ttl_s))
        if not candidates:
            return
        entries = await self.node.entries([(c.tenant, c.namespace, c.guid) for c in candidates])
        orphans = [c.call_id for c, entry in zip(candidates, entries)
                   if entry is None or entry.get("call_id") != c.call_id]
        if not orphans:
            return
        events = await self.store.db.write(self.store.calls.interrupt_calls, orphans, now, REASON)
        for event in events:
            log.warning("call %s (%s): its node is gone; closed as interrupted", event.call.call_id, event.call.guid)
            await self.node.redis.publish(events_channel(event.call.call_id), json.dumps(wire.event_json(event)))
