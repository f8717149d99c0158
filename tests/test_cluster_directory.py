"""Placement and directory entries when the nodes' views differ: ClusterRegistry and ClusterNode
instances (several "nodes" in one event loop, as in test_cluster_routing) against a real redis-server.

- An issuer whose peer list has not seen a node join yet keeps the earlier issuer's choice of it.
- Issuers that find an earlier choice gone agree on one replacement.
- A live call's node is named for its other legs even while it drains, and whatever the issuer's list.
- The placed key lives on as long as URLs of it are handed out.
- A heartbeat keeps an ended call's entry only while no other node wrote the guid's.
- The entries of the calls a closing registry ends leave the directory; a start for one is then the
  400-203 wait, also when the directory still names a node that listens to nothing.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from callscribe.calls.registry import CallNotFound
from callscribe.cluster.node import call_key, guid_key
from callscribe.cluster.placement import CallPlacement, placed_key, rendezvous
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)
from test_cluster_routing import Peer, beat, in_directory, peers
from test_registry import TWILIO, params, redactor  # noqa: F401 (fixture)

TTL_S = 300.0  # the URL lifetime the placements below are given


def guid_choosing(view: dict, name: str, prefix: str) -> str:
    """A guid whose rendezvous choice over the peer list `view` is node `name`."""
    for i in range(1000):
        guid = f"{prefix}-{i}"
        if rendezvous(json.dumps(["acme", "twilio", guid]), list(view.values()))["id"] == name:
            return guid
    raise AssertionError("no such guid")


async def test_an_issuer_that_has_not_seen_a_node_join_keeps_the_earlier_choice_of_it(tmp_path, redis_url):
    async with peers(tmp_path, redis_url, "a", "b", "c") as nodes:
        d = Peer("d", tmp_path, redis_url)
        await d.node.beat()  # d joins; a's peer list has it, b's not yet (refreshed every TTL/4)
        await nodes["a"].node.beat()
        assert "d" in nodes["a"].node.peers and "d" not in nodes["b"].node.peers
        try:
            guid = guid_choosing(nodes["a"].node.peers, "d", "joined")
            customer = await CallPlacement(nodes["a"].node, TTL_S).url_for("acme", "twilio", guid)
            agent = await CallPlacement(nodes["b"].node, TTL_S).url_for("acme", "twilio", guid)
            assert customer == agent == d.url
        finally:
            await d.node.redis.aclose()


async def test_issuers_that_find_the_earlier_choice_gone_agree_on_its_replacement(tmp_path, redis_url):
    async with peers(tmp_path, redis_url, "a", "b", "c") as nodes:
        a, b = nodes["a"].node, nodes["b"].node
        b.peers = {k: v for k, v in b.peers.items() if k != "c"}  # the views differ (c not yet seen by b)
        guids = []
        for i in range(40):  # calls whose hash choice differs between the two views
            guid = f"gone-{i}"
            call = json.dumps(["acme", "twilio", guid])
            if rendezvous(call, list(a.peers.values()))["id"] != rendezvous(call, list(b.peers.values()))["id"]:
                guids.append(guid)
        assert guids
        for guid in guids:  # an earlier URL of each named a node that has since left
            await a.redis.set(placed_key("acme", "twilio", guid), json.dumps({"node": "x", "url": "http://x.test"}),
                              px=int(TTL_S * 1000))
        pa, pb = CallPlacement(a, TTL_S), CallPlacement(b, TTL_S)
        # Both issuers at once, for every such call.
        chosen = await asyncio.gather(*(asyncio.gather(pa.url_for("acme", "twilio", g), pb.url_for("acme", "twilio", g))
                                        for g in guids))
        for guid, (first, second) in zip(guids, chosen):
            assert first == second != "http://x.test", (guid, first, second)
            assert json.loads(await a.redis.get(placed_key("acme", "twilio", guid)))["url"] == first


async def test_a_live_calls_node_is_named_for_its_other_legs_while_draining(tmp_path, redis_url, redactor):
    async with peers(tmp_path, redis_url, "a", "b", "c") as nodes:
        await nodes["b"].registry.media_connected(tenant="acme", namespace="twilio", guid="held", tracks=TWILIO,
                                                  source="test")
        await in_directory(nodes["b"], "held")
        nodes["b"].registry.draining = True  # SIGTERM'd: its refusal answers the other leg
        await beat(nodes)
        nodes["c"].node.peers.pop("b")  # and an issuer whose list does not have it
        for n in ("a", "c"):
            assert await CallPlacement(nodes[n].node, TTL_S).url_for("acme", "twilio", "held") == nodes["b"].url
        # A call that ended there goes to an open node instead.
        media = await nodes["a"].registry.media_connected(tenant="acme", namespace="twilio", guid="ended",
                                                          tracks=TWILIO, source="test")
        await in_directory(nodes["a"], "ended")
        await media.end("hangup")
        nodes["a"].registry.draining = True
        await beat(nodes)
        assert (await nodes["c"].node.owner("acme", "twilio", "ended"))["live"] is False
        assert await CallPlacement(nodes["c"].node, TTL_S).url_for("acme", "twilio", "ended") == nodes["c"].url


async def test_the_placed_key_is_refreshed_each_time_a_url_of_it_is_handed_out(tmp_path, redis_url):
    async with peers(tmp_path, redis_url, "a", "b") as nodes:
        place = CallPlacement(nodes["a"].node, TTL_S)
        first = await place.url_for("acme", "twilio", "asked-twice")
        key = placed_key("acme", "twilio", "asked-twice")
        await nodes["a"].node.redis.pexpire(key, 1000)  # as if the first URL was handed out long ago
        assert await CallPlacement(nodes["b"].node, TTL_S).url_for("acme", "twilio", "asked-twice") == first
        assert await nodes["a"].node.redis.pttl(key) > 1000


async def test_a_heartbeat_keeps_an_ended_calls_entry_only_while_the_guid_is_its_own(tmp_path, redis_url, redactor):
    import redis

    async with peers(tmp_path, redis_url, "a", "c") as nodes:
        a, c = nodes["a"], nodes["c"]
        media = await a.registry.media_connected(tenant="acme", namespace="twilio", guid="moved", tracks=TWILIO,
                                                 source="test")
        await in_directory(a, "moved")
        await media.end("hangup")
        await a.node.beat()  # its own: marked ended
        assert (await a.node.owner("acme", "twilio", "moved"))["live"] is False

        # The media comes back on C while A's beat is under way (after A looked, before it wrote).
        theirs = json.dumps({"node": "c", "call_id": "c-moved", "url": c.url, "namespace": "twilio", "live": True})
        put_call = a.node._put_call

        def c_registers_meanwhile(pipe, *args, **kwargs):
            with redis.Redis.from_url(redis_url) as other:
                other.set(call_key("acme", "twilio", "moved"), theirs, px=30_000)
                other.set(guid_key("acme", "moved"), theirs, px=30_000)
            return put_call(pipe, *args, **kwargs)

        a.node._put_call = c_registers_meanwhile
        await a.node.beat()
        a.node._put_call = put_call
        for key in (call_key("acme", "twilio", "moved"), guid_key("acme", "moved")):
            assert json.loads(await a.node.redis.get(key)) == json.loads(theirs)
        # Once C's entries are gone, A's (still held) ended call has its entry again.
        await a.node.redis.delete(call_key("acme", "twilio", "moved"), guid_key("acme", "moved"))
        await a.node.beat()
        entry = await c.node.owner("acme", "twilio", "moved")
        assert entry is not None and entry["node"] == "a" and entry["live"] is False


async def test_a_closed_registrys_entries_leave_the_directory(tmp_path, redis_url, redactor):
    async with peers(tmp_path, redis_url, "a", "b", "c") as nodes:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        await a.registry.media_connected(tenant="acme", namespace="twilio", guid="closing", tracks=TWILIO,
                                         source="test")
        ended = await a.registry.media_connected(tenant="acme", namespace="twilio", guid="taken", tracks=TWILIO,
                                                 source="test")
        await in_directory(a, "closing")
        await in_directory(a, "taken")
        await ended.end("hangup")
        await c.registry.media_connected(tenant="acme", namespace="twilio", guid="taken", tracks=TWILIO, source="test")
        await in_directory(c, "taken")  # its media came back on C; A still holds the ended call

        await a.registry.close()  # shutdown
        assert await b.node.owner("acme", "twilio", "closing") is None
        assert await b.node.owner("acme", None, "closing") is None
        assert (await b.node.owner("acme", "twilio", "taken"))["node"] == "c"  # not A's to remove
        with pytest.raises(CallNotFound):  # the 400-203 answer, not a wait on A
            await b.registry.start_streaming("acme", "twilio", "closing", params())


async def test_a_start_for_a_call_of_a_node_that_listens_to_nothing_is_the_400_203_wait(tmp_path, redis_url,
                                                                                          redactor):
    async with peers(tmp_path, redis_url, "b") as nodes:
        b = nodes["b"]
        # The directory (and b's peer list, not refreshed yet) still names a node that has left.
        entry = json.dumps({"node": "left", "call_id": "c-left", "url": "http://left.test", "namespace": "twilio",
                            "live": True})
        await b.node.redis.set(call_key("acme", "twilio", "g-left"), entry, ex=30)
        b.node.peers["left"] = {"id": "left", "url": "http://left.test"}
        with pytest.raises(CallNotFound):
            await b.registry.start_streaming("acme", "twilio", "g-left", params(), wait_s=0.3)
        # ... and its media arriving on b meanwhile is started there.
        pending = asyncio.create_task(b.registry.start_streaming("acme", "twilio", "g-left", params(), wait_s=60.0))
        await b.registry.media_connected(tenant="acme", namespace="twilio", guid="g-left", tracks=TWILIO, source="test")
        legs = await asyncio.wait_for(pending, 60.0)
        assert set(legs) == {"customer", "agent"}
