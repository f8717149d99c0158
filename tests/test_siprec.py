"""SIPREC end to end and the recorder's parsers.

SIPp (Debian `sip-tester`) is the recording client: a multipart INVITE with two m-lines and RFC 7865
metadata, a pcap of two synthesised voices (the customer's on m-line 0, the agent's on m-line 1)
replayed to the recorder's answered ports, hold and resume by re-INVITE, BYE. The control plane is
ASAPP's start-streaming; transcripts are read back with GET messages.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from servers import HANG_GUARD_S, running_app, wait_until
from siprec_peer import free_port, run_sipp, scenario, write_pcap

from callscribe.config import load_settings
from callscribe.testing import speech

HEADERS = {"asapp-api-id": "sr", "asapp-api-secret": "sr-secret"}
SCRIPT = [
    ("agent", "Thank you for calling Northwind support. How can I help you today?"),
    ("customer", "Hello, I would like to check the status of my order please."),
    ("agent", "Of course. Your parcel left our warehouse this morning."),
]
AGENT_WORDS = {"northwind", "support", "parcel", "warehouse", "morning"}
CUSTOMER_WORDS = {"status", "order", "hello"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def call_streams():
    """8 kHz mu-law of the customer's side and of the agent's side of SCRIPT."""
    call = speech.build_call(SCRIPT, gap_s=1.0, voices=speech.VOICES)
    return [speech.telephony(call.tracks["customer"]), speech.telephony(call.tracks["agent"])]


@pytest.fixture
def siprec_app(engine, tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", sip_port=free_port(), rtp_ports="42000-42999", siprec_allow="127.0.0.0/8=acme",
                             api_keys="sr:sr-secret:acme", start_wait_for_media_s=30, siprec_rtp_timeout_s=20)
    with running_app(settings, engine=engine) as server:
        yield server


def _messages(server, guid: str) -> list[dict]:
    r = httpx.get(f"{server.url}/conversation/v1/conversation/messages", params={"externalId": guid},
                  headers=HEADERS)
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.mark.slow
@pytest.mark.parametrize(("transport", "order"), [("UDP", "CUSTOMER_FIRST"), ("TCP", "AGENT_FIRST")])
def test_sipp_recording_two_voices_on_their_roles(siprec_app, call_streams, tmp_path, transport, order):
    """mediaLineOrder AGENT_FIRST: the SRC puts the agent on the first m-line, and the roles follow."""
    guid = f"ucid-{transport.lower()}-1"
    pcap = tmp_path / "call.pcap"
    play_ms = write_pcap(pcap, call_streams if order == "CUSTOMER_FIRST" else call_streams[::-1])
    xml = tmp_path / "uac_siprec.xml"
    xml.write_text(scenario(pcap, play_ms + 500, guid))
    started: list[httpx.Response] = []
    body = {"namespace": "siprec", "guid": guid, "customerId": "cust-1", "agentId": "agent-1",
            "siprecParams": {"mediaLineOrder": order}}
    starter = threading.Thread(target=lambda: started.append(httpx.post(
        f"{siprec_app.url}/mg-autotranscribe/v1/start-streaming", json=body, headers=HEADERS,
        timeout=HANG_GUARD_S)))
    starter.start()  # waits for the media that SIPp is about to bring
    time.sleep(0.3)
    media_port = 46000 + 2 * (free_port() % 400)
    proc = run_sipp(xml, siprec_app.settings.sip_port, transport, media_port, tmp_path)
    starter.join(HANG_GUARD_S)
    assert proc.returncode == 0, f"SIPp exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n" + \
        "\n".join(p.read_text()[-4000:] for p in tmp_path.glob("*.log"))
    assert started[0].status_code == 200, started[0].text
    assert set(started[0].json()["autotranscribeResponse"]) == {"customer", "agent"}

    def heard() -> dict[str, set[str]] | None:
        out: dict[str, set[str]] = {"customer": set(), "agent": set()}
        for item in _messages(siprec_app, guid):
            out[item["sender"]["role"]] |= words(item["text"])
        return out if len(out["agent"] & AGENT_WORDS) >= 3 and len(out["customer"] & CUSTOMER_WORDS) >= 2 else None

    got = wait_until(heard, "transcripts of both roles")
    assert not got["customer"] & AGENT_WORDS, got
    assert not got["agent"] & CUSTOMER_WORDS, got

    async def view():
        return siprec_app.services.registry.get_call("acme", guid, "siprec")

    snap = wait_until(lambda: (v := siprec_app.run(view())) and v["media"] == "ended" and v, "BYE ends the media")
    names = [e["name"] for e in snap["protocol_events"]]
    assert "hold" in names and "resume" in names, names
