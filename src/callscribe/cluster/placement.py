"""Which node a handed-out stream URL names, when the URL belongs to a known call (an ASAPP direct
WebSocket URL with an `externalId`: each role of the call asks for its own URL, maybe of two
different nodes at once, and both legs must reach one node to be one call).

In order: the node the directory names for the call, while that node is alive (a live call's node
even while draining: its refusal is the answer, not a second call with the same guid elsewhere; an
ended call's node only while it is open); else the node an earlier URL of the call was placed on (a
Redis key kept, and refreshed on each use, as long as a URL lives: the first issuer's choice is the
one every later issuer reads); else the open node (ready, not draining, not full) that ranks first by
rendezvous hash of the call over the open nodes, so that issuers that see the same nodes choose alike
even without Redis. With no open node, the headroom choice (ClusterNode.placement_url). URLs with no
call identity (Twilio's) keep that choice.

Whether a named node is alive is read from its `node:<id>` key, not from this node's copy of the
peer list (refreshed only every TTL/4: a node that just joined is not in it yet), and an earlier
choice is replaced only by compare-and-set, so two issuers that both find it gone agree on one
replacement.
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


# KEYS[1] the placed key, ARGV[1] this issuer's choice, ARGV[2] the TTL: the value there (its TTL
# refreshed: a URL of it was just handed out again), else this choice, set.
_PLACE = """
local v = redis.call('get', KEYS[1])
if v then redis.call('pexpire', KEYS[1], ARGV[2]) return v end
redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
return ARGV[1]
"""
# ARGV[1] the earlier value found gone, ARGV[2] its replacement, ARGV[3] the TTL: replaced only while
# the key still holds the earlier value (or nothing); else the value another issuer put there.
_REPLACE = """
local v = redis.call('get', KEYS[1])
if v == false or v == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3]) return ARGV[2] end
redis.call('pexpire', KEYS[1], ARGV[3])
return v
"""


def _placed_value(node: dict[str, Any]) -> str:
    return json.dumps({"node": node.get("id"), "url": node.get("url")}, separators=(",", ":"))


class CallPlacement:
    def __init__(self, node: ClusterNode, ttl_s: float) -> None:
        self.node = node
        self.ttl_s = ttl_s  # how long a handed-out URL may still be used to connect

    async def _alive(self, node_id: Any) -> dict[str, Any] | None:
        """Node `node_id`'s own last heartbeat, read from Redis (None: gone)."""
        if not node_id:
            return None
        value = await self.node.redis.get(P + "node:" + str(node_id))
        return json.loads(value) if value else None

    async def url_for(self, tenant: str, namespace: str, guid: str) -> str:
        """The public URL of the node that should take the media of this call."""
        entry = await self.node.owner(tenant, namespace, guid)
        try:
            if entry is not None:
                holder = await self._alive(entry.get("node"))
                # A live call's node takes its other legs (its admission decides, as on one node,
                # draining included); an ended call's node only while it is open.
                if holder is not None and (entry.get("live", True) or _open(holder)):
                    return str(holder.get("url") or entry.get("url"))
        except aioredis.RedisError as exc:
            log.warning("cluster: node entry unreadable (%s); placing by hash alone", exc)
        open_nodes = [p for p in self.node.peers.values() if _open(p) and p.get("url")]
        if not open_nodes:
            return self.node.placement_url()
        ours = rendezvous(json.dumps([tenant, namespace, guid]), open_nodes)
        chosen = str(ours["url"])
        key, ttl_ms = placed_key(tenant, namespace, guid), int(self.ttl_s * 1000)
        try:
            value = str(await self.node.redis.eval(_PLACE, 1, key, _placed_value(ours), ttl_ms))
            for _ in range(3):  # each round: another issuer replaced a choice found gone meanwhile
                url, node_id = _parse(value)
                if url == chosen:
                    return chosen
                earlier = await self._alive(node_id) if node_id else None
                if earlier is not None and not earlier.get("draining"):
                    return url
                # Gone or draining: this choice stands for the next issuers, unless one replaced it first.
                value = str(await self.node.redis.eval(_REPLACE, 1, key, value, _placed_value(ours), ttl_ms))
            return _parse(value)[0] or chosen  # still changing hands: what the next issuers read
        except aioredis.RedisError as exc:
            log.warning("cluster: placement key unusable (%s); placing by hash alone", exc)
        return chosen


def _parse(value: str) -> tuple[str, str | None]:
    """(url, node id) of a placed key's value; one that is not ours has no id (it is replaced)."""
    try:
        data = json.loads(value)
    except ValueError:
        return value, None
    if not isinstance(data, dict):
        return value, None
    return str(data.get("url") or ""), (str(data["node"]) if data.get("node") else None)
