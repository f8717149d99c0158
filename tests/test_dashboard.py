"""The dashboard at `/` in a real browser: Debian's Chromium, headless, driven by Playwright.

- The page, fed by scripted call events (no speech model): sign-in with a wrong key is refused and
  with a right one shows the tenant's calls only; a call's partials are shown provisional and
  replaced by the final, masks stay visible, webhook deliveries are listed.
- A real call (slow): streamdouble plays a synthesised two-party Twilio call into the app with the
  real speech model; the call appears in the list, its words appear attributed to the right
  participant, the card number read in it is masked, a stop pressed on the page pauses transcription
  and the page says so. Screenshots of the call view and the engine view are written to
  test-output/dashboard/ (the path is printed).

Every wait is for a condition (Playwright's expect, with generous timeouts); nothing is timed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from playwright.sync_api import expect, sync_playwright

from callscribe.testing import speech
from callscribe.testing.wav import write_wav
from e2e_helpers import Secret, leaks_in
from servers import wait_until
# The served app with the real model and its webhook receiver, as the Twilio call tests have them.
from test_twilio_calls import (assert_roles, by_role, control, finish, start_body,  # noqa: F401 (fixtures)
                               stream_url, streamdouble, twilio_app, webhook)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "dashboard"
WAIT_MS = 60_000  # a hang guard for each condition, never a timing assertion
LONG_WAIT_MS = 180_000


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"the page threw: {errors}"


def screenshot(pg, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def sign_in(pg, url: str, api_id: str, secret: str) -> None:
    pg.goto(url + "/")
    pg.get_by_label("API id").fill(api_id)
    pg.get_by_label("API secret").fill(secret)
    pg.get_by_role("button", name="Sign in").click()


def transcript_lines(pg) -> list[tuple[str, str, str]]:
    """(speaker, kind, text) of every utterance on the page."""
    return [(li.get_attribute("data-speaker"), li.get_attribute("data-kind"), li.locator(".text").inner_text())
            for li in pg.locator("#transcript li.utt").all()]


# The page with scripted events ------------------------------------------------------------------------


def test_sign_in_list_and_live_transcript(start_app, call_script, webhook, page):
    app = start_app(webhook_url=webhook.url)
    mine, theirs = call_script("dash-acme-1"), call_script("dash-globex-1", tenant="globex")
    app.publish(mine.state("media-connected"), mine.started(), theirs.state("media-connected"))
    app.flush()

    # A wrong key is refused and nothing is kept.
    sign_in(page, app.url, "ka", "not-the-secret")
    expect(page.get_by_role("alert")).to_contain_text("refused", timeout=WAIT_MS)
    expect(page.locator("#calls-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    page.get_by_label("API secret").fill("sa")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#tenant-name")).to_have_text("acme", timeout=WAIT_MS)
    row = page.locator("#call-rows tr", has_text="dash-acme-1")
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_contain_text("On")
    expect(page.locator("#call-rows")).not_to_contain_text("dash-globex-1")  # another tenant's call

    # Keyboard: the call opens from its link.
    row.get_by_role("link", name="dash-acme-1").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#call-title")).to_contain_text("dash-acme-1", timeout=WAIT_MS)
    expect(page.locator("#events-status")).to_have_text("live", timeout=WAIT_MS)

    # A partial is provisional; its final replaces it; masks are shown as masks.
    app.publish(mine.utterance("customer", "my card number is four one", kind="partial"))
    partial = page.locator('#transcript li[data-kind="partial"]')
    expect(partial).to_contain_text("my card number is four one", timeout=WAIT_MS)
    expect(partial).to_contain_text("provisional")
    app.publish(mine.utterance("customer", "my card number is #### #### #### ####"),
                mine.utterance("agent", "thank you, and the expiry date?"))
    expect(page.locator('#transcript li[data-kind="final"]')).to_have_count(2, timeout=WAIT_MS)
    expect(partial).to_have_count(0)
    assert transcript_lines(page) == [("customer", "final", "my card number is #### #### #### ####"),
                                      ("agent", "final", "thank you, and the expiry date?")]
    expect(page.locator("#transcript .mask").first).to_have_text("#### #### #### ####")

    # Both finals went out as webhooks, and the call view lists them as delivered.
    wait_until(lambda: len(webhook.transcripts("dash-acme-1")) == 2, "two webhooks")
    deliveries = page.get_by_role("region", name="Webhook deliveries")
    expect(deliveries).to_contain_text("2 delivered", timeout=WAIT_MS)
    screenshot(page, "scripted-call")
    page.set_viewport_size({"width": 1366, "height": 768})  # a small laptop: side panels go below
    screenshot(page, "scripted-call-1366")

    # Search and the state filter narrow the list.
    page.get_by_role("link", name="Calls").click()
    page.get_by_label("Search by guid").fill("no-such")
    expect(page.locator("#calls-empty")).to_be_visible()
    page.get_by_label("Search by guid").fill("acme")
    page.get_by_label("State").select_option("ended")
    expect(page.locator("#calls-empty")).to_be_visible()
    page.get_by_label("State").select_option("streaming")
    expect(row).to_be_visible()

    # Signing out forgets the key.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API id")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_speaker_is_the_participant_when_there_is_one(start_app, page):
    """Legs are becoming participant-keyed: the page names the participant, else the role."""
    app = start_app()
    page.goto(app.url + "/")
    got = page.evaluate("""async () => {
        const { speakerOf } = await import("/ui/dom.js");
        return [speakerOf({ participant: "p-7", role: "customer" }), speakerOf({ role: "agent" })];
    }""")
    assert got == ["p-7", "agent"]


def test_deliveries_that_fail_are_listed_as_retrying(start_app, call_script):
    app = start_app(webhook_url="http://127.0.0.1:9/hook")  # nothing listens there
    call = call_script("dash-retry-1")
    app.publish(call.state("media-connected"), call.started(), call.utterance("agent", "hello there"))
    acme, globex = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}, {"asapp-api-id": "kb", "asapp-api-secret": "sb"}
    url = app.url + "/v1/calls/dash-retry-1/deliveries"
    body = wait_until(lambda: (r := httpx.get(url, headers=acme).json())["counts"]["retrying"] == 1 and r,
                      "a failed attempt")
    (row,) = body["deliveries"]
    assert row["status"] == "retrying" and row["attempts"] >= 1 and row["lastError"]
    assert row["role"] == "agent" and row["text"] == "hello there" and row["sequence"] == call.seq
    assert httpx.get(url, headers=globex).status_code == 404  # another tenant's call does not exist


def test_latency_quantiles_interpolate_inside_buckets():
    from callscribe.api.dashboard import quantile

    bounds = [0.5, 1.0, 2.0, float("inf")]
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [0, 4, 4, 4]) == 0.75  # all four in (0.5, 1]: the middle of it
    assert quantile(0.95, bounds, [2, 2, 2, 4]) == 2.0  # beyond the last bound: that bound


def test_latency_history_counts_finals_per_window(monkeypatch):
    from callscribe.api import dashboard
    from callscribe.metrics import Metrics

    clock = [1000.0]
    monkeypatch.setattr(dashboard.time, "monotonic", lambda: clock[0])
    hist = Metrics().final_latency
    history = dashboard.LatencyHistory(hist)
    for _ in range(3):
        hist.observe(0.6)
    clock[0] += dashboard.STEP_S
    history.sample()
    clock[0] += dashboard.STEP_S
    hist.observe(2.5)  # after the last sample: counted all the same
    report = history.report()
    assert report["count"] == 4
    assert [p["count"] for p in report["series"]] == [3, 1]
    assert 0.5 < report["series"][0]["p50"] <= 0.75 and 2.0 < report["series"][1]["p95"] <= 3.0


def test_engine_endpoint_needs_a_key(start_app):
    app = start_app()
    assert httpx.get(app.url + "/v1/engine").status_code == 401
    assert httpx.get(app.url + "/v1/engine", headers={"asapp-api-id": "ka", "asapp-api-secret": "x"}).status_code == 401
    r = httpx.get(app.url + "/v1/engine", headers={"asapp-api-id": "kb", "asapp-api-secret": "sb"})
    assert r.status_code == 200 and r.json()["tenant"] == "globex"
    assert httpx.get(app.url + "/v1/calls/x/deliveries", headers={"asapp-api-id": "kb", "asapp-api-secret": "sb"}
                     ).status_code == 404
    page = httpx.get(app.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(app.url + "/ui/main.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(app.url + "/ui/..%2Fapp.py").status_code == 404


# A real call --------------------------------------------------------------------------------------------

CARD = Secret("card", "4916385271402869",
              "four nine one six, three eight five two, seven one four zero, two eight six nine", (4, 4, 4, 4))
SCRIPT = [
    ("agent", "Thank you for calling Northwind billing. How would you like to pay today?"),
    ("customer", f"By credit card. My card number is {CARD.spoken}."),
    ("agent", "Thank you, that is all I need."),
]
# Said after a long silence, by when the page has stopped transcription: it must never appear.
TAIL = ("customer", "Wonderful, have a lovely weekend.")
TAIL_GAP_S = 12.0
AGENT_WORDS = {"northwind", "billing", "pay"}
CUSTOMER_WORDS = {"credit", "card", "number"}
TAIL_WORDS = {"wonderful", "lovely", "weekend"}


@pytest.fixture(scope="module")
def call_wavs(tmp_path_factory) -> tuple[Path, Path]:
    """The scripted call, then silence and the tail, as two 8 kHz telephone WAVs (customer, agent)."""
    import numpy as np

    head = speech.build_call(SCRIPT, gap_s=1.5, voices=speech.VOICES)
    tail = speech.build_call([TAIL], gap_s=1.5, lead_s=TAIL_GAP_S, voices=speech.VOICES)
    out = tmp_path_factory.mktemp("dashboard-audio")
    paths = []
    for role in ("customer", "agent"):
        audio = np.concatenate([head.tracks[role], tail.tracks[role]])
        write_wav(out / f"{role}.wav", speech.mulaw_to_pcm16(speech.telephony(audio)), 8000)
        paths.append(out / f"{role}.wav")
    return paths[0], paths[1]


@pytest.mark.slow
def test_live_twilio_call_in_the_browser(twilio_app, webhook, call_wavs, page):
    customer_wav, agent_wav = call_wavs
    guid = "dash-live-1"
    sign_in(page, twilio_app.url, "tw", "wrong-secret")
    expect(page.get_by_role("alert")).to_contain_text("refused", timeout=WAIT_MS)
    sign_in(page, twilio_app.url, "tw", "tw-secret")
    expect(page.locator("#tenant-name")).to_have_text("acme", timeout=WAIT_MS)

    # The contact centre starts transcription (it waits for the media) and the stream plays the call.
    started: list[httpx.Response] = []
    body = start_body(guid, autotranscribeParams={"audioRecordingAllowed": True})
    starter = threading.Thread(target=lambda: started.append(control(twilio_app, "start-streaming", body)))
    starter.start()
    proc = streamdouble(stream_url(twilio_app), customer_wav, agent_wav, f"guid={guid}")
    try:
        row = page.locator("#call-rows tr", has_text=guid)
        expect(row).to_be_visible(timeout=WAIT_MS)
        starter.join(120)
        assert started and started[0].status_code == 200, started and started[0].text
        # The engine while the call is transcribed, in a second tab (which signs in on its own).
        engine_tab = page.context.new_page()
        sign_in(engine_tab, twilio_app.url, "tw", "tw-secret")
        engine_tab.get_by_role("link", name="Engine").click()
        expect(engine_tab.locator("#engine-legs .tile-value")).to_have_text("2", timeout=WAIT_MS)
        screenshot(engine_tab, "engine-view-live")
        engine_tab.close()
        row.get_by_role("link", name=guid).click()
        expect(page.locator("#call-title")).to_contain_text(guid, timeout=WAIT_MS)

        # The card number, read by the customer, arrives masked on the customer's side.
        masked = page.locator('#transcript li[data-kind="final"][data-speaker="customer"] .mask')
        expect(masked.first).to_be_visible(timeout=LONG_WAIT_MS)
        expect(page.locator('#transcript li[data-kind="final"][data-speaker="agent"]').first
               ).to_contain_text("Northwind", ignore_case=True, timeout=WAIT_MS)

        # Stop from the page: the page shows transcription paused, with the interval's summary.
        page.get_by_role("button", name="Stop transcription").click()
        expect(page.locator("#control-message")).to_contain_text("Transcription paused", timeout=LONG_WAIT_MS)
        expect(page.locator("#call-transcription")).to_have_text("Paused", timeout=WAIT_MS)
        expect(page.locator('#transcript li[data-state="streaming-stopped"]')).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_role("button", name="Resume transcription")).to_be_visible()
        expect(row).to_contain_text("Paused", timeout=WAIT_MS)
        # The paused interval's recordings play in the page (fetched with the key, played from a blob).
        recordings = page.get_by_role("region", name="Recordings")
        expect(recordings.get_by_role("button", name="Load and play")).to_have_count(2, timeout=WAIT_MS)
        recordings.get_by_role("button", name="Load and play").first.click()
        page.wait_for_function("() => document.querySelector('audio')?.readyState >= 1", timeout=WAIT_MS)
        screenshot(page, "call-view")
    finally:
        report = finish(proc)
    assert report["frames_dropped"] == 0

    # The call ends (the page marks it); what was said after the stop never reached the page.
    expect(page.locator('#transcript li[data-state="media-ended"]')).to_be_visible(timeout=LONG_WAIT_MS)
    expect(page.locator("#call-state")).to_have_text("Ended", timeout=WAIT_MS)
    lines = transcript_lines(page)
    assert all(kind == "final" for _, kind, _ in lines), lines
    heard = by_role([(speaker, text) for speaker, _, text in lines])  # a speaker other than the two fails
    assert_roles(heard, customer=CUSTOMER_WORDS, agent=AGENT_WORDS)
    assert not (heard["agent"] | heard["customer"]) & TAIL_WORDS, heard
    page_text = page.locator("#transcript").inner_text()
    assert not leaks_in(page_text, [CARD]), page_text
    expect(page.get_by_role("region", name="Webhook deliveries")).to_contain_text("delivered", timeout=WAIT_MS)
    screenshot(page, "call-view-ended")

    # The engine view: admission, legs, queues and the finals' latency from this call.
    page.get_by_role("link", name="Engine").click()
    expect(page.locator("#engine-admission")).to_contain_text("Accepting new streams", timeout=WAIT_MS)
    expect(page.locator("#engine-latency")).to_contain_text("p95", timeout=WAIT_MS)
    expect(page.locator("#engine-latency")).not_to_contain_text(" 0 finals", timeout=WAIT_MS)
    expect(page.locator("svg.chart path.p50")).to_have_count(1)
    screenshot(page, "engine-view")
