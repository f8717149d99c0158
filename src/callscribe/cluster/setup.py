"""How app.py turns a process into a cluster node: the parts are made here so that app.py and
delivery/service.py only ask `settings.cluster` and call these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callscribe.cluster.node import ClusterNode

if TYPE_CHECKING:
    from callscribe.delivery.fanout import FanoutHub
    from callscribe.delivery.outbox import WebhookDispatcher
    from callscribe.services import Services


def new_node(services: "Services") -> ClusterNode:
    from callscribe.cluster.token_uses import ClusterTokenUses

    assert services.settings.redis_url is not None
    services.token_uses = ClusterTokenUses(services.settings.redis_url)
    return ClusterNode(services.settings)


def registry_class() -> type:
    from callscribe.cluster.registry import ClusterRegistry

    return ClusterRegistry


def fanout(services: "Services") -> "FanoutHub":
    from callscribe.cluster.fanout import ClusterFanout

    assert services.cluster is not None
    return ClusterFanout(services.bus, services.cluster)


def dispatcher(*args: Any, **kwargs: Any) -> "WebhookDispatcher":
    from callscribe.cluster.outbox import ClaimingDispatcher

    return ClaimingDispatcher(*args, **kwargs)


def status(services: "Services") -> dict[str, Any]:
    """What this node's heartbeat says of it: ready, draining, full (no room for another two-party
    call: past CALLSCRIBE_NODE_MAX_LEGS, or the scheduler would refuse), and its open legs."""
    registry, scheduler = services.registry, services.scheduler
    legs = registry.open_legs() if registry is not None and hasattr(registry, "open_legs") else 0
    max_legs = services.settings.node_max_legs
    full = bool(max_legs and legs + 2 > max_legs)
    if not full and scheduler is not None and services.ready.is_set():
        full = not scheduler.admission(2).ok
    return {"ready": services.ready.is_set() and services.load_error is None,
            "draining": bool(registry is not None and registry.draining), "full": full, "legs": legs}


async def join(services: "Services", app: Any = None) -> None:
    """Once storage, delivery and the registry exist: attach them to the node and start it."""
    from callscribe import urls
    from callscribe.cluster.fanout import ClusterFanout
    from callscribe.cluster.placement import CallPlacement
    from callscribe.cluster.reaper import Reaper
    from callscribe.cluster.registry import ClusterRegistry

    node = services.cluster
    assert node is not None and isinstance(services.registry, ClusterRegistry)
    services.registry.attach(node)
    node.status = lambda: status(services)
    if isinstance(services.fanout, ClusterFanout) and services.persister is not None:
        services.fanout.flush = services.persister.flush
    node.on_tick.append(Reaper(node, services.get_store(), services.on_interrupted).tick)
    # Stream URLs of a known call name the node of that call (cluster.placement), others headroom.
    urls.set_placement(services.settings, node.placement_url, CallPlacement(node, urls.URL_TTL_S).url_for)
    # At SIGTERM, tell the others at once that this node is draining (placement, /readyz).
    services.drainers.add(node.beat)
    if app is not None:  # the 409-202 guard holds across nodes
        from callscribe.api.limits import limits_of
        from callscribe.cluster.in_flight import ClusterInFlight

        limits_of(app).in_flight = ClusterInFlight(node)
    await node.start(services.bus)


async def leave(services: "Services") -> None:
    """The last step of a node's shutdown, once its registry has closed its calls (until then the
    heartbeat names this node as theirs, so no other node takes them for lost): out of placement and
    the cluster, then the Redis clients closed."""
    from callscribe import urls
    from callscribe.cluster.token_uses import ClusterTokenUses

    if services.cluster is not None:
        urls.set_placement(services.settings, None)
        await services.cluster.stop()
    if isinstance(services.token_uses, ClusterTokenUses):
        await services.token_uses.aclose()


def readiness(services: "Services") -> str | None:
    """Why a ready node is out of rotation (full, draining), or None."""
    state = status(services)
    return "draining" if state["draining"] else "full" if state["full"] else None
