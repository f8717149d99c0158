"""Which speaker each media track carries, per namespace.

Adapters name tracks in their protocol's own terms; the mapping to roles lives here because
start-streaming may change it per call (Twilio `trackMap`, SIPREC `mediaLineOrder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("customer", "agent")

# The tracks each namespace's adapter reports, in (customer, agent) order by default.
NAMESPACE_TRACKS: dict[str, tuple[str, str]] = {
    "twilio": ("inbound", "outbound"),
    "genesysaudiohook": ("external", "internal"),
    "siprec": ("0", "1"),
    "amazonconnect": ("from-customer", "to-customer"),
    "autotranscribe": ("customer", "agent"),  # ASAPP direct WebSocket: one connection per role
}


@dataclass(frozen=True)
class RoleParams:
    """The parts of start-streaming that decide roles."""

    twilio_track_map: dict[str, str] = field(default_factory=lambda: {"inbound": "customer", "outbound": "agent"})
    media_line_order: str = "CUSTOMER_FIRST"


def track_roles(namespace: str, params: RoleParams | None = None) -> dict[str, str]:
    """track name -> role for a namespace. Unknown namespaces name their tracks by role."""
    params = params or RoleParams()
    if namespace == "twilio":
        return {"inbound": params.twilio_track_map.get("inbound", "customer"),
                "outbound": params.twilio_track_map.get("outbound", "agent")}
    if namespace == "siprec":
        first, second = ("agent", "customer") if params.media_line_order == "AGENT_FIRST" else ("customer", "agent")
        return {"0": first, "1": second}
    tracks = NAMESPACE_TRACKS.get(namespace, ("customer", "agent"))
    return {tracks[0]: "customer", tracks[1]: "agent"}


def role_of(namespace: str, track: str, params: RoleParams | None = None) -> str | None:
    """The role of one track, or None when the track carries no known speaker."""
    role = track_roles(namespace, params).get(track)
    if role is None and track in ROLES:
        return track
    return role


def default_tracks(namespace: str) -> tuple[str, ...]:
    """The tracks a namespace's media is expected to carry (used for calls created before media)."""
    return NAMESPACE_TRACKS.get(namespace, ROLES)
