"""A node's loss ends only its own calls: at each heartbeat period one node (whichever takes a
short-lived key first) looks in PostgreSQL for calls still open whose directory entry is gone (their
node stopped refreshing it: killed, or cut off from Redis) and, once an entry has stayed away for a
whole TTL, closes those calls as interrupted, as one node does at restart for its own. Their stored
finals stay, and their webhooks go on from the shared outbox. The row locks (SKIP LOCKED) make a
call closed once even if two nodes look at once. With the default TTL of 10 s a lost node's calls
read interrupted within about 2.5 TTLs."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

from callscribe.cluster import wire
from callscribe.cluster.node import P, ClusterNode, events_channel
from callscribe.store import Store
from callscribe.store.db import Database

log = logging.getLogger(__name__)
REASON = "the node that held the call stopped"
LOOK_KEY = P + "reaper"
MISSING = P + "missing:"


class Reaper:
    def __init__(self, node: ClusterNode, store: Store,
                 on_interrupted: Sequence[Callable[[Database, list[str], datetime], object]] = ()) -> None:
        self.node = node
        self.store = store
        self.on_interrupted = on_interrupted  # services.on_interrupted: what surfaces owe those calls

    async def tick(self) -> None:
        # One node looks per heartbeat period (a key with a TTL shorter than the period), not all.
        if not await self.node.redis.set(LOOK_KEY, self.node.id, nx=True, px=int(self.node.ttl_s * 1000 / 4 * 0.9)):
            return
        now = datetime.now(timezone.utc)
        # A call younger than a TTL may not be in the directory yet (its node is registering it).
        candidates = await self.store.db.read(self.store.calls.open_calls, now - timedelta(seconds=self.node.ttl_s))
        if not candidates:
            return
        entries = await self.node.entries([(c.tenant, c.namespace, c.guid) for c in candidates])
        missing: list[str] = []
        present: list[str] = []
        for c, entry in zip(candidates, entries):
            (missing if entry is None or entry.get("call_id") != c.call_id else present).append(c.call_id)
        orphans = await self.missing_for_a_ttl(missing, present)
        if not orphans:
            return
        events = await self.store.db.write(self.store.calls.interrupt_calls, orphans, now, REASON)
        for event in events:
            log.warning("call %s (%s): its node is gone; closed as interrupted", event.call.call_id, event.call.guid)
            await self.node.redis.publish(events_channel(event.call.call_id), json.dumps(wire.event_json(event)))
        # As one node does at start for its own (delivery.service): e.g. a memories task's unsent
        # segments and end callback. Only the calls this node closed, so each is settled once.
        closed = [event.call.call_id for event in events]
        for hook in self.on_interrupted if closed else ():
            try:
                await self.store.db.write(hook, self.store.db, closed, now)
            except Exception:
                log.exception("settling interrupted calls failed (%r)", hook)

    async def missing_for_a_ttl(self, missing: list[str], present: list[str]) -> list[str]:
        """Those of `missing` first seen missing at least a TTL ago. A call is only orphaned when its
        entry stays away for a whole TTL: after a Redis restart (everything gone at once) every live
        node puts its calls back within a quarter of it. The first sighting is a Redis key (any node
        may look next) whose age is read from its own PTTL, so no two nodes' clocks are compared;
        it is deleted once the entry is back (`present`), so two short absences never add up."""
        if not missing and not present:
            return []
        ttl_ms = int(self.node.ttl_s * 4000)
        async with self.node.redis.pipeline(transaction=False) as pipe:
            if present:
                pipe.delete(*[MISSING + c for c in present])
            for call_id in missing:
                pipe.set(MISSING + call_id, "1", nx=True, px=ttl_ms)
            for call_id in missing:
                pipe.pttl(MISSING + call_id)
            results = await pipe.execute()
        pttls = results[len(results) - len(missing):] if missing else []
        need_ms = int(self.node.ttl_s * 1000)
        # age = ttl_ms - pttl; a key that has vanished in between (pttl < 0) is not yet a TTL old
        return [c for c, left in zip(missing, pttls) if left >= 0 and ttl_ms - int(left) >= need_ms]
