"""Native API: the tenant's calls, one call with its streams and recordings, recordings as WAV, and
live events over a WebSocket.

Auth is the same id/secret pair as every surface (ASAPP headers, Basic, or `Authorization: id:secret`);
a WebSocket may instead pass `?apiId=&apiSecret=`, since browsers cannot set headers on one. Errors
are in the ASAPP shape. Another tenant's call looks exactly like one that does not exist.

WS /v1/calls/{guid}/events sends each event of the call as one JSON text message (see
`event_json` below): partials and finals (`type` "partial"/"final") and state
changes (`type` "state"), each with the call's `seq`. `?since=N` first replays what has seq > N.
The socket closes with 1000 after the media-ended event; 4401 bad credentials, 4404 no such call,
4400 bad `since`; 1013 when the subscriber fell too far behind (reconnect with `since=` the last seq
received).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote
from typing import Any, Mapping

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from starlette.websockets import WebSocketState

from callscribe.api.auth import authenticate, credentials_from_headers
from callscribe.api.errors import ApiError
from callscribe.calls.events import CallEvent, CallStateEvent, StreamSummary, is_end
from callscribe.delivery.fanout import EventsUnavailable, SubscriberOverflow, subscribe_with_backlog
from callscribe.services import Services
from callscribe.store.repository import CallDetail, CallRecord, IntervalRecord, iso, jsonable

log = logging.getLogger(__name__)
router = APIRouter(tags=["native"])
_SEND_TIMEOUT_S = 10.0


def tenant_from(services: Services, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The caller's tenant, or None when the credentials are missing or wrong."""
    api_id, secret = credentials_from_headers(headers)
    if api_id is None and query is not None:
        api_id, secret = query.get("apiId"), query.get("apiSecret")
    key = authenticate(services.api_keys, api_id, secret)
    return key.tenant if key else None


def require_tenant(request: Request) -> tuple[Services, str]:
    services = request.app.state.services
    tenant = tenant_from(services, request.headers)
    if tenant is None:
        raise ApiError(401, "401-01", "Missing or invalid credentials")
    return services, tenant


async def _registry(services: Any, method: str, *args: Any) -> Any:
    """Ask the call registry for live state; None when it has no such method or fails."""
    # A cluster node's registry also answers for calls held by other nodes (callscribe.cluster).
    fn = getattr(services.registry, "cluster_" + method, None) or getattr(services.registry, method, None)
    if fn is None:
        return None
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        return jsonable(result)
    except Exception:
        log.exception("registry.%s failed", method)
        return None


# Wire shapes ------------------------------------------------------------------------------------


def call_json(c: CallRecord) -> dict[str, Any]:
    return {"callId": c.call_id, "guid": c.guid, "namespace": c.namespace, "state": c.state,
            "createdAt": iso(c.created_at), "endedAt": iso(c.ended_at), "lastSeq": c.last_seq}


def interval_json(i: IntervalRecord) -> dict[str, Any]:
    return {"streamId": i.stream_id, "participant": i.participant, "participantName": i.participant_name,
            "role": i.role, "externalId": i.external_id, "startedAt": iso(i.started_at),
            "stoppedAt": iso(i.stopped_at), "redactionOutput": i.redaction_output, "detailedToken": i.detailed_token,
            "audioRecordingAllowed": i.audio_recording_allowed, "params": i.params, "summary": i.summary.as_camel() if i.summary else None}


def detail_json(d: CallDetail) -> dict[str, Any]:
    return {**call_json(d.call), "streams": [interval_json(i) for i in d.intervals],
            "recordings": [{"participant": r.participant, "role": r.role, "streamId": r.stream_id,
                            "durationMs": r.duration_ms, "createdAt": iso(r.created_at)} for r in d.recordings]}


def event_json(event: CallEvent) -> dict[str, Any]:
    """The wire form of an event on WS /v1/calls/{guid}/events."""
    base = {"seq": event.seq, "callId": event.call.call_id, "guid": event.call.guid,
            "namespace": event.call.namespace, "createdAt": iso(event.created_at)}
    if isinstance(event, CallStateEvent):
        return {"type": "state", **base, "state": event.state, "data": jsonable(event.data)}
    out = {"type": event.kind, **base, "participant": event.participant, "role": event.role,
           "participantName": event.participant_name, "externalId": event.external_id,
           "streamId": event.stream_id, "utterance": event.utterance, "start": event.start_ms,
           "end": event.end_ms, "text": event.text}
    if event.unredacted_text is not None:
        out["unredactedText"] = event.unredacted_text
    if event.words is not None:
        out["words"] = [asdict(w) for w in event.words]
    return out


def _live_json(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """The registry's snapshot, its leg summaries in this API's form."""
    if snapshot is None:
        return None
    for leg in snapshot.get("legs", []):
        s = leg.get("summary")
        if isinstance(s, dict) and "total_audio_bytes" in s:
            leg["summary"] = StreamSummary(**s).as_camel()
    return snapshot


def _call_id_of(snapshot: dict[str, Any] | None) -> str | None:
    if not snapshot:
        return None
    call_id = snapshot.get("call_id") or snapshot.get("callId")
    return str(call_id) if call_id else None


def _iso(value: Any) -> str | None:
    """A registry timestamp in the store's ISO form, so the two sort together."""
    try:
        return iso(datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(timezone.utc))
    except ValueError:
        return None if value is None else str(value)


def _merge(stored: dict | None, live: dict | None) -> dict:
    """A stored call overlaid with the registry's live snapshot (which may be all there is yet)."""
    out = dict(stored or {})
    if live:
        out.setdefault("callId", _call_id_of(live))
        out.setdefault("guid", live.get("guid"))
        out.setdefault("namespace", live.get("namespace"))
        if "createdAt" not in out:
            out["createdAt"] = _iso(live.get("created_at") or live.get("createdAt"))
        out["state"] = live.get("state", out.get("state"))
    out["active"] = live is not None
    out["live"] = live
    return out


@router.get("/v1/calls")
async def list_calls(request: Request, limit: int = Query(50, ge=1, le=500)) -> dict:
    services, tenant = require_tenant(request)
    stored = [call_json(c) for c in await services.get_store().db.read(services.get_store().calls.list_calls, tenant, limit)]
    live = [_live_json(s) for s in await _registry(services, "list_calls", tenant) or []]
    live_by_id = {_call_id_of(s): s for s in live if isinstance(s, dict)}
    calls = [_merge(c, live_by_id.pop(c["callId"], None)) for c in stored]
    calls += [_merge(None, s) for s in live_by_id.values()]
    calls.sort(key=lambda c: c.get("createdAt") or "", reverse=True)
    return {"calls": calls[:limit]}


@router.get("/v1/calls/{guid}")
async def get_call(request: Request, guid: str) -> dict:
    services, tenant = require_tenant(request)
    live = _live_json(await _registry(services, "get_call", tenant, guid))  # the live call wins over older namesakes
    detail = await services.get_store().db.read(services.get_store().calls.call_detail, tenant, guid, _call_id_of(live))
    stored = detail_json(detail) if detail is not None else None
    if stored is None and live is None:
        raise ApiError(404, "404-01", "No such call")
    out = _merge(stored, live)
    out.setdefault("streams", [])
    for rec in out.setdefault("recordings", []):
        rec["url"] = f"/v1/calls/{quote(guid, safe='')}/recordings/{rec['streamId']}/{quote(rec['participant'], safe='')}.wav"
    legs: dict[str, dict] = {}
    for s in out["streams"]:  # the latest interval of each participant names its leg
        legs[s["participant"]] = {"participant": s["participant"], "role": s["role"], "externalId": s["externalId"],
                                  "streamId": s["streamId"], "streaming": s["stoppedAt"] is None}
    out["legs"] = (live or {}).get("legs") or list(legs.values())
    return out


@router.get("/v1/calls/{guid}/recordings/{stream_id}/{participant}.wav")
async def get_recording(request: Request, guid: str, stream_id: str, participant: str) -> FileResponse:
    services, tenant = require_tenant(request)
    rel = await services.get_store().db.read(services.get_store().calls.recording_path, tenant, guid, stream_id, participant)
    data_dir = Path(services.settings.data_dir).resolve()
    path = (data_dir / rel).resolve() if rel else None
    if path is None or not path.is_relative_to(data_dir) or not path.is_file():
        raise ApiError(404, "404-01", "No such recording")
    return FileResponse(path, media_type="audio/wav", filename=f"{guid}-{participant}-{stream_id}.wav")


async def _resolve_call_id(services: Services, tenant: str, guid: str) -> str | None:
    """The live call with this guid, else the newest stored one."""
    call_id = _call_id_of(await _registry(services, "get_call", tenant, guid))
    if call_id:
        return call_id
    await services.get_persister().flush()  # a call whose first events are still on their way to the store
    stored = await services.get_store().db.read(services.get_store().calls.find_call, tenant, guid)
    return stored.call_id if stored else None


@router.websocket("/v1/calls/{guid}/events")
async def call_events(ws: WebSocket, guid: str) -> None:
    services = ws.app.state.services
    await ws.accept()  # accept first, so the client sees why it is closed
    tenant = tenant_from(services, ws.headers, ws.query_params)
    if tenant is None:
        return await ws.close(4401, "missing or invalid credentials")
    try:
        since = int(ws.query_params.get("since", "0"))
    except ValueError:
        return await ws.close(4400, "since must be an integer")
    call_id = await _resolve_call_id(services, tenant, guid)
    if call_id is None:
        return await ws.close(4404, "no such call")

    hub = services.fanout
    try:
        sub, backlog = await subscribe_with_backlog(hub, services.store, services.persister.flush, call_id, since)
    except EventsUnavailable as exc:
        return await ws.close(1013, f"{exc}; reconnect with since={since}")
    watcher = asyncio.create_task(_wait_disconnect(ws))
    last = since
    try:
        while True:
            for event in backlog:
                ending = is_end(event)
                # Already sent (backlog and live overlap on purpose), except the end: a call closed for
                # its lost node is marked above the stored seqs only, which partials sent live may pass.
                if event.seq <= last and not ending:
                    continue
                await asyncio.wait_for(ws.send_json(event_json(event)), _SEND_TIMEOUT_S)
                last = max(last, event.seq)
                if ending:
                    return await ws.close(1000, "call ended")
            next_batch = asyncio.create_task(sub.next_batch())
            done, _ = await asyncio.wait({next_batch, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                next_batch.cancel()
                return
            backlog = next_batch.result()
    except SubscriberOverflow:
        await ws.close(1013, f"{sub.reason}; reconnect with since={last}")
    except asyncio.TimeoutError:
        await ws.close(1013, f"send timed out; reconnect with since={last}")
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away mid-send
    finally:
        hub.unsubscribe(sub)
        watcher.cancel()
        if ws.client_state == WebSocketState.CONNECTED and ws.application_state == WebSocketState.CONNECTED:
            try:
                await ws.close(1001)
            except RuntimeError:
                pass


async def _wait_disconnect(ws: WebSocket) -> None:
    """Returns when the client disconnects; anything the client sends is ignored."""
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    except (RuntimeError, WebSocketDisconnect):
        return
