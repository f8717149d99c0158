"""Which node a handed-out stream URL names, when the URL belongs to a known call (an ASAPP direct
WebSocket URL with an `externalId`: each role of the call asks for its own URL, maybe of two
different nodes at once, and both legs must reach one node to be one call).

In order: the node the directory names for the call, while it is alive and not draining; else the
node an earlier URL of the call was placed on (a Redis key kept as long as a URL lives, set with NX
so that the first issuer's choice is the one every later issuer reads); else the open node (ready,
not draining, not full) that ranks first by rendezvous hash of the call over the open nodes, so
that issuers that see the same nodes choose alike even without Redis. With no open node, the
headroom choice (ClusterNode.placement_url). URLs with no call identity (Twilio's) keep that choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import redis.asyncio as aioredis

from callscribe.cluster.node import P, ClusterNode, _open

log = logging.getLogger(__name__)


def placed_key(tenant: str, namespace: str, guid: str) -> str:
    return P + "placed:" + json.dumps([tenant, namespace, guid], separators=(",", ":"))


def rendezvous(call: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The node that ranks first for `call` (highest-random-weight hashing): the same answer from
    the same set of nodes, and only the calls of a node that leaves or joins move."""
    return max(nodes, key=lambda n: hashlib.sha256(f"{call}\0{n.get('id')}".encode()).digest())


class CallPlacement:
    def __init__(self, node: ClusterNode, ttl_s: float) -> None:
        self.node = node
        self.ttl_s = ttl_s  # how long a handed-out URL may still be used to connect

    async def url_for(self, tenant: str, namespace: str, guid: str) -> str:
        """The public URL of the node that should take the media of this call."""
        peers = self.node.peers  # every node's last heartbeat, this one included: one view for all
        entry = await self.node.owner(tenant, namespace, guid)
        if entry is not None:
            holder = peers.get(str(entry.get("node")))
            # A live call's node takes its other legs (its admission decides, as on one node); an
            # ended call's node only while it is open.
            if holder is not None and not holder.get("draining") and (entry.get("live", True) or _open(holder)):
                return str(holder.get("url") or entry.get("url"))
        open_nodes = [p for p in peers.values() if _open(p) and p.get("url")]
        if not open_nodes:
            return self.node.placement_url()
        chosen = str(rendezvous(json.dumps([tenant, namespace, guid]), open_nodes)["url"])
        key = placed_key(tenant, namespace, guid)
        try:
            if await self.node.redis.set(key, chosen, nx=True, px=int(self.ttl_s * 1000)):
                return chosen
            earlier = await self.node.redis.get(key)
        except aioredis.RedisError as exc:
            log.warning("cluster: placement key unusable (%s); placing by hash alone", exc)
            return chosen
        if earlier and any(p.get("url") == earlier and not p.get("draining") for p in peers.values()):
            return str(earlier)
        try:  # the earlier choice left or is draining: this one stands for the next issuers
            await self.node.redis.set(key, chosen, px=int(self.ttl_s * 1000))
        except aioredis.RedisError:
            pass
        return chosen
