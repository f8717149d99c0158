"""The SIPREC recording server (SRS): SIP over UDP and TCP on CALLSCRIBE_SIP_HOST/PORT, in the app's
event loop, for the sources in CALLSCRIBE_SIPREC_ALLOW (CIDR=tenant).

Server transactions are kept as far as an SRS needs them: 100 Trying at once, the last response
re-sent for a retransmitted request, the INVITE's 200 re-sent over UDP until its ACK, CANCEL of an
INVITE still in progress answered 487. Each INVITE with `+sip.src` or `Require: siprec` becomes a
call of namespace `siprec` whose tracks are its m-lines ("0", "1", ... in offer order).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import ssl
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, cast

from callscribe.calls.media import MAX_GUID, MediaRefused, valid_id
from callscribe.config import SiprecSource
from callscribe.ingest.siprec import sdp
from callscribe.ingest.siprec.message import (
    MAX_MESSAGE_BYTES,
    SipError,
    SipMessage,
    parse,
    response,
    serialize,
    split_stream,
    tag_of,
)
from callscribe.ingest.siprec.metadata import Metadata, parse_metadata, split_body
from callscribe.ingest.siprec.session import Dialog, PortPool, RecordingSession, Send

if TYPE_CHECKING:
    from callscribe.services import Services

log = logging.getLogger(__name__)

NAMESPACE = "siprec"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"
ACCEPT = "application/sdp, application/rs-metadata+xml, application/rs-metadata, multipart/mixed"
SUPPORTED = {"siprec", "timer", "100rel"}
ROLE_ORDER = ("customer", "agent")  # CUSTOMER_FIRST; ASAPP's siprecParams.mediaLineOrder can swap them
MIN_SE = 90
T1, T2, TIMER_H = 0.5, 4.0, 32.0
CACHE_S = 32.0


def _reason(text: str) -> str:
    return "".join(c for c in text if c.isprintable())[:120] or "Error"


class SiprecServer:
    def __init__(self, services: Services):
        self.services = services
        settings = services.settings
        self.settings = settings
        self.allow: list[SiprecSource] = settings.parsed_siprec_allow
        self.ucid_headers = [h.strip().lower() for h in settings.siprec_ucid_headers.split(",") if h.strip()]
        self.pool = PortPool(*settings.rtp_port_range)
        self.sessions: dict[str, RecordingSession] = {}  # by Call-ID
        self.pending: dict[str, tuple[SipMessage, Send]] = {}  # INVITE branch -> request not yet answered
        self.cancelled: set[str] = set()
        self.responses: OrderedDict[tuple[str, str, str], tuple[bytes, float]] = OrderedDict()
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.port = 0
        self.tls: asyncio.base_events.Server | None = None
        self.listen_ports: dict[str, int] = {}  # transport -> our port, for Contact and Via
        self.host = settings.sip_host  # the address put in Contact and SDP (the route's own when wildcard)
        self.watchdog: asyncio.Task | None = None

    # lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.sip_port == 0:
            return
        loop = asyncio.get_running_loop()
        host, port = self.settings.sip_host, self.settings.sip_port
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
            self.udp = transport
            self.tcp = await asyncio.start_server(self._tcp_client, host, port, limit=MAX_MESSAGE_BYTES)
        except OSError as exc:
            if self.udp is not None:
                self.udp.close()
                self.udp = None
            # One line naming the settings, as for a bad value (port 0 turns SIPREC off).
            raise OSError(f"CALLSCRIBE_SIP_HOST/CALLSCRIBE_SIP_PORT: cannot listen on {host}:{port} "
                          f"({exc.strerror or exc})") from None
        self.port = port
        self.listen_ports = {"UDP": port, "TCP": port}
        if self.settings.sip_tls_cert and self.settings.sip_tls_port:
            await self._start_tls(host)
        self.watchdog = loop.create_task(self._watch())
        log.info("SIPREC listening on %s:%d (UDP, TCP%s)", host, port,
                 f"; TLS on {self.settings.sip_tls_port}" if self.tls else "")

    async def _start_tls(self, host: str) -> None:
        """SIP over TLS (SBCs recording to a remote SRS) on CALLSCRIBE_SIP_TLS_PORT."""
        settings = self.settings
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(settings.sip_tls_cert), str(settings.sip_tls_key or settings.sip_tls_cert))
            self.tls = await asyncio.start_server(
                lambda r, w: self._tcp_client(r, w, "TLS"), host, settings.sip_tls_port, ssl=context,
                limit=MAX_MESSAGE_BYTES, ssl_handshake_timeout=10)
        except (OSError, ssl.SSLError) as exc:
            await self.stop()
            raise OSError(f"CALLSCRIBE_SIP_TLS_CERT/_KEY/_PORT: cannot serve SIP over TLS on "
                          f"{host}:{settings.sip_tls_port} ({getattr(exc, 'strerror', None) or exc})") from None
        self.listen_ports["TLS"] = settings.sip_tls_port

    async def stop(self) -> None:
        if self.udp is None:
            return
        if self.watchdog is not None:
            self.watchdog.cancel()
        for session in list(self.sessions.values()):
            await self._end(session, "shutdown", bye=True)
        for task in list(self.tasks):
            task.cancel()
        self.udp.close()
        self.udp = None
        for server in (self.tcp, self.tls):
            if server is not None:
                server.close()
                await server.wait_closed()

    # transports -----------------------------------------------------------------------------------

    def tenant_of(self, host: str) -> str | None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        return next((s.tenant for s in self.allow if ip.version == s.network.version and ip in s.network), None)

    def received(self, data: bytes, send: Send, peer: tuple[str, int], transport: str) -> None:
        try:
            msg = parse(data)
        except SipError as exc:
            log.debug("SIP: dropped an unreadable message from %s: %s", peer[0], exc.reason)
            return
        task = asyncio.get_running_loop().create_task(self._dispatch(msg, send, peer, transport))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          transport: str = "TCP") -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        if self.tenant_of(peer[0]) is None:  # no connection held open for a source not allowed
            writer.close()
            return
        buffer = bytearray()

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                while (data := split_stream(buffer)) is not None:
                    self.received(data, send, (peer[0], peer[1]), transport)
        except SipError as exc:
            log.info("SIP over TCP from %s: closing an unframeable stream: %s", peer[0], exc.reason)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    # requests -------------------------------------------------------------------------------------

    async def _dispatch(self, msg: SipMessage, send: Send, peer: tuple[str, int], transport: str) -> None:
        if not msg.is_request:
            return  # answers to our BYEs: nothing to do
        method = msg.method
        tenant = self.tenant_of(peer[0])
        if method == "ACK":
            session = self.sessions.get(msg.call_id)
            if session is not None:
                session.acked.set()
            return
        key = (msg.call_id, msg.branch, method)
        cached = self.responses.get(key)
        if cached is not None:
            send(cached[0])  # a retransmission: the same answer again
            return
        if method == "INVITE" and msg.branch in self.pending:
            send(response(msg, 100, "Trying"))
            return

        def reply(status: int, reason: str, **kw: Any) -> None:
            data = response(msg, status, reason, **kw)
            if status >= 200:
                self.responses[key] = (data, time.monotonic() + CACHE_S)
                while self.responses and (len(self.responses) > 5000 or
                                          next(iter(self.responses.values()))[1] < time.monotonic()):
                    self.responses.popitem(last=False)
            send(data)

        if tenant is None:
            reply(403, "Forbidden (source not in CALLSCRIBE_SIPREC_ALLOW)")
            return
        session = self.sessions.get(msg.call_id)
        if session is not None and session.tenant != tenant:
            session = None  # another tenant's SBC cannot reach into this dialog
        try:
            if method == "OPTIONS":
                reply(200, "OK", headers=[("allow", ALLOW), ("accept", ACCEPT), ("supported", "siprec, timer")])
            elif method == "INVITE":
                if tag_of(msg.get("to")) and session is not None:
                    self._reinvite(session, msg, reply)
                elif tag_of(msg.get("to")):
                    reply(481, "Call/Transaction Does Not Exist")
                else:
                    await self._invite(msg, send, reply, tenant, peer, transport)
            elif method == "UPDATE":
                if session is None:
                    reply(481, "Call/Transaction Does Not Exist")
                else:
                    self._reinvite(session, msg, reply)
            elif method == "BYE":
                if session is None:
                    reply(481, "Call/Transaction Does Not Exist")
                else:
                    reply(200, "OK")
                    await self._end(session, "bye")
            elif method == "CANCEL":
                self._cancel(msg, reply)
            else:
                reply(405, "Method Not Allowed", headers=[("allow", ALLOW)])
        except SipError as exc:
            reply(exc.status, _reason(exc.reason), headers=exc.headers)
        except Exception:  # a bug must cost this request only, never the listener or other calls
            log.exception("SIPREC: %s from %s failed", method, peer[0])
            reply(500, "Server Internal Error")

    def _cancel(self, msg: SipMessage, reply: Any) -> None:
        pending = self.pending.pop(msg.branch, None)
        if pending is None:
            reply(481, "Call/Transaction Does Not Exist")
            return
        invite, send = pending
        self.cancelled.add(msg.branch)
        reply(200, "OK")
        data = response(invite, 487, "Request Terminated", to_tag=secrets.token_hex(6))
        self.responses[(invite.call_id, invite.branch, "INVITE")] = (data, time.monotonic() + CACHE_S)
        send(data)

    def _check_invite(self, msg: SipMessage) -> tuple[sdp.Offer, Metadata | None, int]:
        contact = msg.get("contact").lower()
        required = msg.tokens("require")
        if "+sip.src" not in contact and "siprec" not in required:
            raise SipError(488, "Not Acceptable Here (only SIPREC recording sessions: +sip.src or Require: siprec)")
        unsupported = required - SUPPORTED
        if unsupported:
            raise SipError(420, "Bad Extension", [("unsupported", ", ".join(sorted(unsupported)))])
        offer, meta = self._body(msg, need_sdp=True)
        assert offer is not None
        expires = 0
        if msg.get("session-expires"):
            value = msg.get("session-expires").split(";")[0].strip()
            if not value.isdigit():
                raise SipError(400, "Bad Session-Expires")
            expires = int(value)
            if expires < MIN_SE:
                raise SipError(422, "Session Interval Too Small", [("min-se", str(MIN_SE))])
        return offer, meta, expires

    def _body(self, msg: SipMessage, need_sdp: bool) -> tuple[sdp.Offer | None, Metadata | None]:
        parts = split_body(msg.get("content-type", "application/sdp"), msg.body)
        offer = meta = None
        for part in parts:
            if part.content_type == "application/sdp" and offer is None:
                offer = sdp.parse_sdp(part.body)
            elif part.content_type in ("application/rs-metadata+xml", "application/rs-metadata") and meta is None:
                meta = parse_metadata(part.body)
        if offer is None and need_sdp:
            raise SipError(488, "Not Acceptable Here (no SDP offer)")
        return offer, meta

    def _guid(self, msg: SipMessage) -> tuple[str, str]:
        for name in self.ucid_headers:
            value = msg.get(name).split(";")[0].strip()
            if valid_id(value, MAX_GUID) and " " not in value:
                return value, value
        return msg.call_id, ""

    def _local_host(self, peer: tuple[str, int]) -> str:
        host = self.settings.sip_host
        if host not in ("0.0.0.0", "::", ""):
            return host
        with socket.socket(socket.AF_INET6 if ":" in peer[0] else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer[0], peer[1] or 9))  # picks the route's source address; sends nothing
            return s.getsockname()[0]

    async def _invite(self, msg: SipMessage, send: Send, reply: Any, tenant: str, peer: tuple[str, int],
                      transport: str) -> None:
        send(response(msg, 100, "Trying"))
        if msg.call_id in self.sessions:
            raise SipError(482, "Loop Detected")
        offer, meta, expires = self._check_invite(msg)
        accepted = [m.index for m in offer.media if m.choose() is not None]
        if not accepted:
            if any("SAVP" in m.proto.upper() for m in offer.media):
                raise SipError(488, "Not Acceptable Here (SRTP is not supported)")
            raise SipError(488, "Not Acceptable Here (no audio stream in PCMU or PCMA)")
        guid, ucid = self._guid(msg)
        host = self._local_host(peer)
        target = msg.get("contact").partition("<")[2].partition(">")[0] or msg.get("contact").split(";")[0]
        local_tag = secrets.token_hex(6)
        dialog = Dialog(msg.call_id, local_tag, msg.get("from"), f"{msg.get('to')};tag={local_tag}",
                        target or msg.uri, transport, send)
        session = RecordingSession(tenant=tenant, guid=guid, dialog=dialog, offer=offer, metadata=meta,
                                   session_expires=expires)
        self.pending[msg.branch] = (msg, send)
        try:
            bound = await self.pool.bind(self.settings.sip_host, len(accepted), lambda i: session.make_receiver(
                accepted[i], lambda ip: self.tenant_of(ip) == tenant))
            if bound is None:
                raise SipError(503, "Service Unavailable (no free RTP ports)")
            session.first_port, pairs = bound
            for i, (receiver, rtcp) in enumerate(pairs):
                session.ports[accepted[i]] = session.first_port + 2 * i
                session.receivers[accepted[i]] = receiver
                session.rtcp.append(rtcp)
            self.sessions[msg.call_id] = session
            registry = self.services.registry
            if registry is None:
                raise SipError(503, "Service Unavailable")
            try:
                session.media = await registry.media_connected(
                    tenant=tenant, namespace=NAMESPACE, guid=guid, tracks=session.tracks(ROLE_ORDER),
                    source=f"siprec:{peer[0]}", metadata=session.metadata_view(msg.call_id, ucid))
            except MediaRefused as exc:
                raise SipError(503 if exc.capacity else 403, _reason(exc.reason)) from None
            if session.ended:  # a BYE overtook the answer
                self.pending.pop(msg.branch, None)
                await session.media.end("bye")
                return
        except BaseException:
            self.pending.pop(msg.branch, None)
            self.cancelled.discard(msg.branch)
            await self._end(session, "refused")
            raise
        if msg.branch in self.cancelled or self.pending.pop(msg.branch, None) is None:
            self.cancelled.discard(msg.branch)
            await self._end(session, "cancelled")
            return
        headers = [self._contact(host, transport), ("allow", ALLOW), ("supported", "siprec, timer"),
                   ("content-type", "application/sdp")]
        if expires:
            headers += [("session-expires", f"{expires};refresher=uac"), ("require", "timer")]
        body = session.answer_sdp(host)
        reply(200, "OK", to_tag=local_tag, headers=headers, body=body)
        self.host = host
        log.info("SIPREC call %s from %s: %d stream(s) on ports %d..", guid, peer[0], len(accepted), session.first_port)
        if transport == "UDP":
            self._retransmit(session, response(msg, 200, "OK", to_tag=local_tag, headers=headers, body=body))

    def _contact(self, host: str, transport: str) -> tuple[str, str]:
        port = self.listen_ports.get(transport, self.port)
        return "contact", f"<sip:srs@{host}:{port};transport={transport.lower()}>;+sip.srs"

    def _retransmit(self, session: RecordingSession, data: bytes) -> None:
        async def again() -> None:
            interval, waited = T1, 0.0
            while waited < TIMER_H and not session.ended:
                try:
                    await asyncio.wait_for(session.acked.wait(), interval)
                    return
                except TimeoutError:
                    waited += interval
                    interval = min(interval * 2, T2)
                    session.dialog.send(data)

        task = asyncio.get_running_loop().create_task(again())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _reinvite(self, session: RecordingSession, msg: SipMessage, reply: Any) -> None:
        """A re-INVITE or UPDATE: new SDP (a=inactive or port 0 is a hold, sendonly again a resume), new metadata,
        or a session refresh. The m-lines keep their ports; added ones are refused (port 0)."""
        offer, meta = self._body(msg, need_sdp=False)
        session.refreshed = time.monotonic()
        if meta is not None:
            session.metadata = meta
        if offer is not None:
            if len(offer.media) < len(session.offer.media):
                raise SipError(488, "Not Acceptable Here (m-lines cannot be removed)")
            held = {m.index for m in offer.media
                    if m.index in session.ports and (m.direction in ("inactive", "recvonly") or m.port == 0)}
            for index in held - session.held:
                self._event(session, "hold", index)
            for index in session.held - held:
                self._event(session, "resume", index)
                session.receivers[index].relatch()
            session.held = held
            offer.media = [m if m.index in session.ports else _refused(m) for m in offer.media]
            session.offer = offer
            session.sdp_version += 1
        headers = [self._contact(self.host, session.dialog.via_transport), ("content-type", "application/sdp")]
        if session.session_expires:
            headers += [("session-expires", f"{session.session_expires};refresher=uac"), ("require", "timer")]
        body = session.answer_sdp(self.host) if offer is not None or msg.method == "INVITE" else b""
        if not body:
            headers = headers[:1]
        reply(200, "OK", to_tag=session.dialog.local_tag, headers=headers, body=body)

    def _event(self, session: RecordingSession, name: str, index: int) -> None:
        if session.media is not None:
            task = asyncio.get_running_loop().create_task(session.media.event(name, {"track": str(index)}))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _end(self, session: RecordingSession, reason: str, *, bye: bool = False) -> None:
        if self.sessions.get(session.dialog.call_id) is session:
            del self.sessions[session.dialog.call_id]
        if session.first_port and not session.ended:
            self.pool.release(session.first_port, len(session.receivers))
        if bye and not session.ended:
            self._send_bye(session)
        await session.close(reason)

    def _send_bye(self, session: RecordingSession) -> None:
        d = session.dialog
        d.cseq += 1
        via = f"SIP/2.0/{d.via_transport} {self.host}:{self.listen_ports.get(d.via_transport, self.port)}" \
              f";branch=z9hG4bK{secrets.token_hex(8)};rport"
        d.send(serialize(f"BYE {d.remote_target} SIP/2.0", [
            ("via", via), ("max-forwards", "70"), ("from", d.local_to), ("to", d.remote_from),
            ("call-id", d.call_id), ("cseq", f"{d.cseq} BYE")]))

    async def _watch(self) -> None:
        """Ends calls whose RTP stopped (not on hold) or whose session timer ran out, with a BYE."""
        while True:
            await asyncio.sleep(1.0)
            for session in list(self.sessions.values()):
                if session.media is None or session.ended:
                    continue
                reason = ""
                if session.idle_s() > self.settings.siprec_rtp_timeout_s:
                    reason = "rtp-timeout"
                elif session.session_expires and time.monotonic() - session.refreshed > session.session_expires:
                    reason = "session-expired"
                if reason:
                    log.info("SIPREC call %s: %s", session.guid, reason)
                    await self._end(session, reason, bye=True)


def _refused(m: sdp.MediaLine) -> sdp.MediaLine:
    m.port = 0
    return m


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: SiprecServer):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if self.transport is None or data.strip(b"\r\n") == b"":
            return  # keep-alive CRLFs
        transport = self.transport
        self.server.received(data, lambda out: transport.sendto(out, addr), (addr[0], addr[1]), "UDP")

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from an earlier send to a peer that went away


async def start(services: Services) -> SiprecServer:
    """Start the SIPREC listener (nothing when CALLSCRIBE_SIP_PORT is 0); stop it with `stop()`."""
    server = SiprecServer(services)
    await server.start()
    return server
