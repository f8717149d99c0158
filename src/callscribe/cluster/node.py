"""One node of a cluster: its identity, heartbeat, the call directory, and request/reply to peers.

Redis keys (all under `callscribe:`), every one with a TTL of CALLSCRIBE_CLUSTER_TTL_S that the
heartbeat (every quarter of it) refreshes, so a dead node's entries are gone within the TTL:
- `node:<id>`: {"id", "url", "ready", "draining", "full", "legs"}; `nodes` is the set of ids seen.
- `call:<tenant,namespace,guid>` and `guid:<tenant,guid>`: {"node", "call_id", "url", "namespace",
  "live"} for every call the node's registry holds: live (media connected or ending), or ended and
  kept for a late stop ("live": false; a start does not wait on that node for it; written only
  while the key is missing or still this node's). A closing registry takes its calls' entries out.
Channels: `rpc:<id>` takes requests {"id", "from", "op", "args"}; `reply:<id>` takes answers
{"id", "ok"} or {"id", "error"}; `events:<call_id>` carries a call's events to other nodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import redis.asyncio as aioredis

from callscribe.calls.events import CallEvent, CallStateEvent, EventBus
from callscribe.cluster import secrets as shared_secrets
from callscribe.cluster import wire

if TYPE_CHECKING:
    from callscribe.config import Settings

log = logging.getLogger(__name__)
P = "callscribe:"
Handler = Callable[[dict[str, Any]], Awaitable[Any]]
SERVE_GRACE_S = 30.0  # at leave, how long the requests being served may take to answer
LEAVE_STEP_S = 3.0  # each Redis step of leaving (a Redis that does not answer must not hang the exit)


def call_key(tenant: str, namespace: str, guid: str) -> str:
    return P + "call:" + json.dumps([tenant, namespace, guid], separators=(",", ":"))


def guid_key(tenant: str, guid: str) -> str:
    return P + "guid:" + json.dumps([tenant, guid], separators=(",", ":"))


def events_channel(call_id: str) -> str:
    return P + "events:" + call_id


class RemoteError(Exception):
    """A peer did not answer (gone, or too slow)."""


class NotListening(RemoteError):
    """No node took the request: the peer has left (or is not subscribed)."""


# KEYS: a call's directory keys (call, guid); ARGV[1] this node's id, ARGV[2] the entry, ARGV[3] the
# TTL: each key written only while it is missing or this node's, in one step, so an ended call's
# entry never replaces the one another node just wrote for the guid.
_PUT_IF_MINE = """
for _, key in ipairs(KEYS) do
  local v = redis.call('get', key)
  local ok = not v
  if v then
    local decoded, entry = pcall(cjson.decode, v)
    ok = decoded and type(entry) == 'table' and entry['node'] == ARGV[1]
  end
  if ok then redis.call('set', key, ARGV[2], 'px', ARGV[3]) end
end
return 1
"""
# The same keys removed, each only while it is this node's (ARGV[1]).
_DELETE_IF_MINE = """
for _, key in ipairs(KEYS) do
  local v = redis.call('get', key)
  if v then
    local decoded, entry = pcall(cjson.decode, v)
    if decoded and type(entry) == 'table' and entry['node'] == ARGV[1] then redis.call('del', key) end
  end
end
return 1
"""


class ClusterNode:
    def __init__(self, settings: "Settings") -> None:
        assert settings.redis_url is not None
        self.id = settings.node_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
        self.url = settings.resolved_public_url
        self.ttl_s = settings.cluster_ttl_s
        self.max_legs = settings.node_max_legs
        self.redis_url = settings.redis_url
        self.redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
        self.peers: dict[str, dict[str, Any]] = {}  # every live node's last heartbeat, this one included
        self.handlers: dict[str, Handler] = {}
        # What the heartbeat reports and refreshes; filled in by the app (see cluster.setup).
        self.status: Callable[[], dict[str, Any]] = lambda: {}
        self.held_calls: Callable[[], list[tuple[str, str, str, str, bool]]] = lambda: []
        self.on_tick: list[Callable[[], Awaitable[None]]] = []
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._rpc_pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._serving: set[asyncio.Task[None]] = set()  # requests being carried out (kept referenced)
        self._outgoing: asyncio.Queue[CallEvent] = asyncio.Queue(maxsize=10000)
        self._unsubscribe: Callable[[], None] | None = None
        self._split_secrets: set[str] = set()  # generated secrets whose Redis value is not this node's
        self._beating = asyncio.Lock()
        self._stopping = False  # set by stop(): the loops end, so no beat puts the node back after it left

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, bus: EventBus) -> None:
        try:
            self._rpc_pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            await self._rpc_pubsub.subscribe(P + "rpc:" + self.id, P + "reply:" + self.id)
            await self.beat()
        except aioredis.RedisError as exc:
            raise RuntimeError(f"CALLSCRIBE_REDIS_URL: cannot reach Redis ({type(exc).__name__}: {exc})") from None
        self._unsubscribe = bus.subscribe(self._on_event)
        self._tasks = [asyncio.create_task(self._listen(), name="cluster-rpc"),
                       asyncio.create_task(self._heartbeat(), name="cluster-heartbeat"),
                       asyncio.create_task(self._ticks(), name="cluster-ticks"),
                       asyncio.create_task(self._publish_events(), name="cluster-events")]
        log.info("cluster: node %s (%s) joined; %d node(s) alive", self.id, self.url, len(self.peers))

    async def stop(self) -> None:
        """Leave the cluster (after the registry closed this node's calls, see cluster.setup.leave):
        answer the requests being served, share the last events, stop the heartbeat, drop this
        node's entry, close the client. Every step is bounded: a Redis that does not answer (this
        client has no socket timeout) must not hold up the process's exit."""
        # The requests being served first (e.g. a forwarded stop collecting its finals: the asking node
        # waits for its reply), while this node still beats and listens.
        deadline = time.monotonic() + SERVE_GRACE_S
        while self._serving and time.monotonic() < deadline:
            await asyncio.wait(set(self._serving), timeout=deadline - time.monotonic())
        if self._serving:
            log.warning("cluster: %d request(s) still being served when leaving", len(self._serving))
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._tasks:  # the calls just closed here: their last events reach the other nodes first
            try:
                async with asyncio.timeout(10.0):
                    await self._outgoing.join()
            except TimeoutError:
                log.warning("cluster: %d event(s) not shared before leaving", self._outgoing.qsize())
        self._stopping = True  # the loops end, even those whose cancel redis-py swallows: no beat after the DEL
        for task in self._tasks:
            task.cancel()
        # Bounded: a cancel that lands inside a redis-py command can be swallowed there (the loops
        # then end at their next look at _stopping).
        _, stuck = await asyncio.wait(self._tasks, timeout=5.0) if self._tasks else (set(), set())
        if stuck:
            log.warning("cluster: %s did not stop", ", ".join(sorted(t.get_name() for t in stuck)))
        await _bounded("leave the cluster", self.redis.delete(P + "node:" + self.id))  # out of placement at once
        if self._rpc_pubsub is not None:
            await _bounded("close the request channel", self._rpc_pubsub.aclose())
        await _bounded("close the Redis client", self.redis.aclose())

    # -- heartbeat and directory --------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.ttl_s / 4)
            if self._stopping:
                return
            try:
                # Bounded, so one stuck beat cannot keep this node's entries from the next ones.
                async with asyncio.timeout(self.ttl_s / 4):
                    await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away (or too slow): entries expire; keep trying
                log.warning("cluster heartbeat failed: %s", exc or type(exc).__name__)

    async def _ticks(self) -> None:
        """The periodic work beside the heartbeat (the reaper), in a task of its own: it waits on the
        database, and a slow database must not stop this node's heartbeat (others would reap its calls)."""
        while not self._stopping:
            await asyncio.sleep(self.ttl_s / 4)
            for tick in list(self.on_tick) if not self._stopping else []:
                try:
                    await tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("cluster periodic task failed: %s", exc or type(exc).__name__)

    async def beat(self) -> None:
        """Refresh this node's entry and its calls' directory entries and the generated secrets it
        uses (put back if Redis lost them, see secrets.py), and read the peers'."""
        async with self._beating:  # forget() waits for it
            await self._beat()

    async def _beat(self) -> None:
        me = {"id": self.id, "url": self.url, "at": time.time(), **self.status()}
        held = self.held_calls()
        ttl_ms = int(self.ttl_s * 1000)
        held_secrets = sorted(shared_secrets.held(self.redis_url).items())
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(P + "node:" + self.id, json.dumps(me), px=ttl_ms)
            pipe.sadd(P + "nodes", self.id)
            for t, n, g, c, live in held:
                # an ended call keeps its entry only while no other node took its guid
                self._put_call(pipe, t, n, g, c, ttl_ms, live=live)
            for name, value in held_secrets:
                pipe.set(shared_secrets.PREFIX + name, value, nx=True)
                pipe.get(shared_secrets.PREFIX + name)
            results = await pipe.execute()
        if held_secrets:
            gets = results[len(results) - 2 * len(held_secrets) + 1::2]  # each SET NX is followed by its GET
            self._check_secrets(held_secrets, gets)
        await self._read_peers()

    def _check_secrets(self, held: list[tuple[str, str]], stored: list[Any]) -> None:
        """Log (once per split, naming the setting, never the values) a generated secret whose
        Redis value differs from this node's: Redis lost it and another node made a new one."""
        for (name, value), now in zip(held, stored):
            if now == value:
                self._split_secrets.discard(name)
            elif name not in self._split_secrets:
                self._split_secrets.add(name)
                log.error("cluster: the shared %s secret in Redis is not the one this node uses (Redis lost it and "
                          "another node generated a new one): what one signs the other refuses. Set %s to the "
                          "same value on every node and restart them", name,
                          shared_secrets.SETTING.get(name, "it"))

    def _put_call(self, pipe: Any, tenant: str, namespace: str, guid: str, call_id: str, ttl_ms: int,
                  live: bool = True) -> None:
        value = json.dumps({"node": self.id, "call_id": call_id, "url": self.url, "namespace": namespace,
                            "live": live})
        if live:  # the media is here: this node's entry, whoever's was there
            pipe.set(call_key(tenant, namespace, guid), value, px=ttl_ms)
            pipe.set(guid_key(tenant, guid), value, px=ttl_ms)
        else:
            pipe.eval(_PUT_IF_MINE, 2, call_key(tenant, namespace, guid), guid_key(tenant, guid), self.id, value, ttl_ms)
        pipe.set(P + "callid:" + call_id, self.id, px=ttl_ms)

    async def forget(self, calls: list[tuple[str, str, str, str]]) -> None:
        """Take these calls' entries (tenant, namespace, guid, call_id) out of the directory, where
        they are still this node's: the registry closed them (shutdown), so no start or stop waits
        on this node for them. After the beat in progress, if any, so that it cannot put them back."""
        if not calls:
            return
        async with self._beating:
            async with self.redis.pipeline(transaction=False) as pipe:
                for t, n, g, c in calls:
                    pipe.eval(_DELETE_IF_MINE, 2, call_key(t, n, g), guid_key(t, g), self.id)
                    pipe.delete(P + "callid:" + c)
                await pipe.execute()

    async def _read_peers(self) -> None:
        ids = sorted(str(i) for i in await self.redis.smembers(P + "nodes"))
        values = await self.redis.mget([P + "node:" + i for i in ids]) if ids else []
        peers = {}
        for node_id, value in zip(ids, values):
            if value is None:
                await self.redis.srem(P + "nodes", node_id)  # gone; it adds itself back if it returns
            else:
                peers[node_id] = json.loads(value)
        self.peers = peers

    async def register(self, tenant: str, namespace: str, guid: str, call_id: str) -> None:
        """Put a call in the directory at once (its media just connected here)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            self._put_call(pipe, tenant, namespace, guid, call_id, int(self.ttl_s * 1000))
            await pipe.execute()

    async def owner(self, tenant: str, namespace: str | None, guid: str) -> dict[str, Any] | None:
        """The directory entry of a call ({"node", "call_id", "url", "namespace", "live"}), any node's; None
        also when Redis cannot be asked (this node then answers for its own calls only)."""
        try:
            value = await self.redis.get(call_key(tenant, namespace, guid) if namespace is not None
                                         else guid_key(tenant, guid))
        except aioredis.RedisError as exc:
            log.warning("cluster: directory unreadable (%s); answering for this node's calls only", exc)
            return None
        return json.loads(value) if value else None

    async def owner_of_call(self, call_id: str) -> str | None:
        """The node that holds the call with this id, if any node does."""
        try:
            node_id = await self.redis.get(P + "callid:" + call_id)
        except aioredis.RedisError as exc:
            log.warning("cluster: directory unreadable (%s)", exc)
            return None
        return str(node_id) if node_id else None

    async def entries(self, keys: list[tuple[str, str, str]]) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        values = await self.redis.mget([call_key(*k) for k in keys])
        return [json.loads(v) if v else None for v in values]

    # -- events out ----------------------------------------------------------------------------------

    def _on_event(self, event: CallEvent) -> None:
        try:
            self._outgoing.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("cluster: event queue full; seq %s of call %s not shared", event.seq, event.call.call_id)

    async def _publish_events(self) -> None:
        while True:
            batch = [await self._outgoing.get()]
            while not self._outgoing.empty() and len(batch) < 500:
                batch.append(self._outgoing.get_nowait())
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for event in batch:
                        if isinstance(event, CallStateEvent) and event.state == "media-connected":
                            ref = event.call
                            self._put_call(pipe, ref.tenant, ref.namespace, ref.guid, ref.call_id,
                                           int(self.ttl_s * 1000))
                        pipe.publish(events_channel(event.call.call_id), json.dumps(wire.event_json(event)))
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: could not share %d event(s): %s", len(batch), exc)
            finally:
                for _ in batch:  # stop() waits for these
                    self._outgoing.task_done()
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # redis-py swallowed the cancel mid-command
                raise asyncio.CancelledError

    # -- request/reply ---------------------------------------------------------------------------------

    async def call(self, node_id: str, op: str, args: dict[str, Any], timeout_s: float) -> Any:
        """Run `op` on node `node_id` and return its answer; raises the registry error it raised, or
        RemoteError when the node is gone or does not answer in `timeout_s`."""
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            heard = await self.redis.publish(P + "rpc:" + node_id, json.dumps(
                {"id": request_id, "from": self.id, "op": op, "args": args}))
            if not heard:
                raise NotListening(f"node {node_id} is not listening")
            async with asyncio.timeout(timeout_s):
                answer = await future
        except TimeoutError:
            raise RemoteError(f"node {node_id} did not answer {op} in {timeout_s:.0f} s") from None
        except aioredis.RedisError as exc:
            raise RemoteError(f"Redis: {type(exc).__name__}: {exc}") from None
        finally:
            self._pending.pop(request_id, None)
        if "error" in answer:
            raise wire.error_from(answer["error"])
        return answer.get("ok")

    async def _listen(self) -> None:
        while not self._stopping:  # it serves while stop() waits for the requests being served
            try:
                message = await self._rpc_pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: request channel failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                data = json.loads(message["data"])
            except ValueError:
                continue
            if message["channel"].endswith(":reply:" + self.id):
                future = self._pending.get(data.get("id"))
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                task = asyncio.create_task(self._serve(data))
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)

    async def _serve(self, request: dict[str, Any]) -> None:
        handler = self.handlers.get(str(request.get("op")))
        answer: dict[str, Any] = {"id": request.get("id")}
        try:
            if handler is None:
                raise RemoteError(f"unknown operation {request.get('op')!r}")
            answer["ok"] = await handler(request.get("args") or {})
        except Exception as exc:
            if type(exc).__name__ not in wire.ERRORS:
                log.exception("cluster: %s for node %s failed", request.get("op"), request.get("from"))
            answer = {"id": request.get("id"), "error": wire.error_json(exc)}
        try:
            await self.redis.publish(P + "reply:" + str(request.get("from")), json.dumps(answer))
        except Exception as exc:
            log.warning("cluster: could not answer node %s: %s", request.get("from"), exc)

    # -- placement ---------------------------------------------------------------------------------------

    def placement_url(self) -> str:
        """The public URL of a node with headroom: this one when it has room, else the live, ready,
        not draining node with the fewest legs; this one when none has room."""
        me = {"id": self.id, "url": self.url, **self.status()}
        if _open(me):
            return self.url
        others = [p for p in self.peers.values() if p.get("id") != self.id and _open(p)]
        if not others:
            return self.url
        return str(min(others, key=lambda p: (p.get("legs", 0), p.get("id", ""))).get("url") or self.url)


async def _bounded(what: str, step: Awaitable[Any]) -> None:
    """One step of leaving, given LEAVE_STEP_S; a failure or a Redis that does not answer is logged."""
    try:
        async with asyncio.timeout(LEAVE_STEP_S):
            await step
    except Exception as exc:
        log.warning("cluster: could not %s: %s", what, exc or type(exc).__name__)


def _open(node: dict[str, Any]) -> bool:
    return bool(node.get("ready")) and not node.get("draining") and not node.get("full")
