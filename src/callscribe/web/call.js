// One call: header and controls, the live transcript, stream intervals, recordings, webhook deliveries.
import { api, blobUrl, eventsSocket, path } from "./api.js";
import { legsOf, stateBadge, transcriptionOf, TRANSCRIPTION_KINDS } from "./calls.js";
import { badge, clock, dateTime, duration, h, maskedText, speakerOf, speakerSlot } from "./dom.js";
import { Transcript } from "./transcript.js";

const ASAPP_NAMESPACES = new Set(["siprec", "twilio", "amazonconnect", "genesysaudiohook"]);
const REDACTION_OUTPUTS = ["redacted", "unredacted", "redacted_and_unredacted"];
const DETAIL_POLL_MS = 4000;
const DELIVERY_ROWS = 100;

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export class CallView {
  constructor(guid, pane, { onUnauthorized, onStateChange }) {
    this.guid = guid;
    this.pane = pane;
    this.onUnauthorized = onUnauthorized;
    this.onStateChange = onStateChange; // the call list refreshes at once rather than at its next poll
    this.detail = null;
    this.lastSeq = 0;
    this.ws = null;
    this.closed = false;
    this.retry = 0;
    this.timers = [];
    this.blobs = [];
  }

  async open() {
    this.pane.replaceChildren(h("p", { class: "muted empty" }, "Loading call…"));
    try {
      this.detail = await api(path.call(this.guid));
    } catch (err) {
      this.pane.replaceChildren(h("p", { class: "error empty", role: "alert" },
        err.status === 404 ? `No call ${this.guid} for this tenant.` : `Could not load the call: ${err.message}`));
      return;
    }
    if (this.closed) return;
    this.build();
    this.renderDetail();
    this.connect();
    this.every(DETAIL_POLL_MS, () => this.refresh());
    this.every(1000, () => this.tick());
    this.loadDeliveries();
  }

  close() {
    this.closed = true;
    this.timers.forEach(clearInterval);
    this.ws?.close();
    this.blobs.forEach((u) => URL.revokeObjectURL(u));
  }

  every(ms, fn) {
    this.timers.push(setInterval(fn, ms));
  }

  // Layout ------------------------------------------------------------------------------------------

  build() {
    const d = this.detail;
    this.el = {
      state: h("span", { id: "call-state" }),
      transcription: h("span", { id: "call-transcription" }),
      duration: h("span", { class: "num" }),
      redaction: h("span"),
      controls: h("div", { class: "controls" }),
      controlMsg: h("p", { id: "control-message", class: "control-message", role: "status" }),
      transcript: h("ol", { id: "transcript", class: "transcript", role: "log", "aria-label": "Transcript",
        tabindex: "0" }),
      transcriptEmpty: h("p", { class: "muted", id: "transcript-empty" }, "No words yet."),
      legend: h("ul", { class: "legend", "aria-label": "Participants" }),
      streams: h("div"),
      recordings: h("div"),
      deliveries: h("div"),
      live: h("span", { class: "muted", id: "events-status", "aria-live": "polite" }),
    };
    this.transcript = new Transcript(this.el.transcript, d.createdAt);
    const section = (title, id, ...body) =>
      h("section", { class: "panel", "aria-labelledby": id }, h("h3", { id }, title), ...body);
    this.pane.replaceChildren(h("article", { class: "call", "aria-labelledby": "call-title" },
      h("header", { class: "call-head" },
        h("div", { class: "call-title-row" },
          h("h2", { id: "call-title" }, h("span", { class: "visually-hidden" }, "Call "), d.guid),
          this.el.live),
        h("p", { class: "sub" }, `${d.namespace || "–"} · call id ${d.callId || "–"} · started ${dateTime(d.createdAt)}`),
        h("dl", { class: "facts" },
          h("div", {}, h("dt", {}, "Media"), h("dd", {}, this.el.state)),
          h("div", {}, h("dt", {}, "Transcription"), h("dd", {}, this.el.transcription)),
          h("div", {}, h("dt", {}, "Duration"), h("dd", {}, this.el.duration)),
          h("div", {}, h("dt", {}, "Redaction"), h("dd", {}, this.el.redaction))),
        this.el.controls, this.el.controlMsg),
      h("div", { class: "call-body" },
        h("section", { class: "panel transcript-panel", "aria-labelledby": "transcript-title" },
          h("div", { class: "panel-head" }, h("h3", { id: "transcript-title" }, "Transcript"), this.el.legend),
          this.el.transcriptEmpty, this.el.transcript,
          h("p", { class: "hint" }, "Grey italic lines are provisional and will be replaced; ",
            h("span", { class: "mask" }, "###"), " marks characters masked by redaction.")),
        h("div", { class: "side" },
          section("Stream intervals", "streams-title", this.el.streams),
          section("Recordings", "recordings-title", this.el.recordings),
          section("Webhook deliveries", "deliveries-title", this.el.deliveries)))));
  }

  // Live events -------------------------------------------------------------------------------------

  connect() {
    if (this.closed) return;
    const ws = (this.ws = eventsSocket(this.guid, this.lastSeq));
    ws.onopen = () => {
      this.retry = 0;
      this.el.live.textContent = "live";
    };
    ws.onmessage = (m) => this.onEvent(JSON.parse(m.data));
    ws.onclose = (e) => {
      if (this.closed) return;
      if (e.code === 1000) {
        this.el.live.textContent = "";
        return; // the call ended: everything has been sent
      }
      if (e.code === 4401) return this.onUnauthorized();
      if (e.code === 4404 || e.code === 4400) {
        this.el.live.textContent = "no live events";
        return;
      }
      // Too slow, network or server restart: pick up where we were; nothing is missed.
      this.el.live.textContent = "reconnecting…";
      this.retry = Math.min(this.retry + 1, 5);
      setTimeout(() => this.connect(), 500 * this.retry);
    };
  }

  onEvent(ev) {
    if (typeof ev.seq === "number") this.lastSeq = Math.max(this.lastSeq, ev.seq);
    this.transcript.apply(ev);
    this.el.transcriptEmpty.hidden = !this.transcript.empty;
    if (ev.type === "state") {
      this.refresh();
      setTimeout(() => this.refresh(), 1000); // the stored intervals may lag the live event a little
      this.onStateChange?.();
    }
    if (ev.type === "final") this.legend(ev);
  }

  // Detail ------------------------------------------------------------------------------------------

  async refresh() {
    if (this.refreshing || this.closed) return;
    this.refreshing = true;
    try {
      const d = await api(path.call(this.guid));
      if (!this.closed) {
        this.detail = d;
        this.renderDetail();
        this.loadDeliveries();
      }
    } catch {
      /* the next poll tries again */
    } finally {
      this.refreshing = false;
    }
  }

  tick() {
    const d = this.detail;
    const end = d.endedAt ? Date.parse(d.endedAt) : Date.now();
    this.el.duration.textContent = duration(end - Date.parse(d.createdAt));
  }

  renderDetail() {
    const d = this.detail;
    const legs = legsOf(d);
    const transcription = transcriptionOf(d);
    this.el.state.replaceChildren(stateBadge(d.state));
    this.el.transcription.replaceChildren(badge(transcription, TRANSCRIPTION_KINDS[transcription]));
    this.el.transcription.dataset.value = transcription;
    const modes = [...new Set(legs.map((l) => l.redaction).filter(Boolean))];
    this.el.redaction.textContent = modes.join(", ") || "–";
    this.tick();
    legs.forEach((l) => this.legend(l));
    this.renderControls(legs);
    this.renderStreams();
    this.renderRecordings();
  }

  legend(item) {
    const name = item.speaker ?? speakerOf(item);
    if (this.el.legend.querySelector(`[data-speaker="${CSS.escape(name)}"]`)) return;
    this.el.legend.append(h("li", { class: `chip speaker-${speakerSlot(name)}`, dataset: { speaker: name } }, name));
  }

  // Start / stop ------------------------------------------------------------------------------------

  renderControls(legs) {
    const d = this.detail;
    const box = this.el.controls;
    if (!ASAPP_NAMESPACES.has(d.namespace) || d.state === "ended") {
      if (box.dataset.mode !== "none" && d.state === "ended") this.el.controlMsg.textContent = "";
      box.replaceChildren();
      box.dataset.mode = "none";
      return;
    }
    const mode = d.state === "streaming" ? "stop" : "start";
    if (box.dataset.mode === mode) return; // keep what the user is typing
    box.dataset.mode = mode;
    if (mode === "stop") {
      box.replaceChildren(h("button", { type: "button", class: "danger", id: "stop-transcription",
        onclick: (e) => this.stop(e.currentTarget) }, "Stop transcription"));
      return;
    }
    // ASAPP calls have the participants "customer" and "agent", whether legs are keyed by role or participant.
    const last = (who) => [...(d.streams || [])].reverse().find((s) => speakerOf(s) === who || s.role === who);
    const prev = (d.streams || []).at(-1) || {};
    const field = (id, label, input) => h("div", { class: "field" }, h("label", { for: id }, label), input);
    const form = h("form", { class: "start-form", "aria-label": "Start transcription" },
      field("start-customer", "Customer id", h("input", { id: "start-customer", name: "customerId", required: true,
        value: last("customer")?.externalId || "customer" })),
      field("start-agent", "Agent id", h("input", { id: "start-agent", name: "agentId", required: true,
        value: last("agent")?.externalId || "agent" })),
      field("start-redaction", "Redaction", h("select", { id: "start-redaction", name: "redactionOutput" },
        REDACTION_OUTPUTS.map((v) => h("option", { value: v, selected: v === (prev.redactionOutput || "redacted") }, v)))),
      h("div", { class: "field check" },
        h("input", { id: "start-recording", type: "checkbox", name: "record", checked: !!prev.audioRecordingAllowed }),
        h("label", { for: "start-recording" }, "Record audio")),
      h("button", { type: "submit", class: "primary", id: "start-transcription" },
        (d.streams || []).length ? "Resume transcription" : "Start transcription"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.start(form);
    });
    box.replaceChildren(form);
  }

  async control(op, body, button) {
    button.disabled = true;
    this.el.controlMsg.className = "control-message";
    this.el.controlMsg.textContent = op === "stop-streaming" ? "Stopping…" : "Starting…";
    try {
      const answer = await api(path.control(op), { method: "POST", body });
      return answer;
    } catch (err) {
      this.el.controlMsg.className = "control-message error";
      this.el.controlMsg.textContent = `Refused: ${err.message}`;
      return null;
    } finally {
      button.disabled = false;
      this.el.controls.dataset.mode = ""; // redraw from the call's new state
      await this.refresh();
    }
  }

  async stop(button) {
    const answer = await this.control("stop-streaming", { namespace: this.detail.namespace, guid: this.guid }, button);
    if (!answer) return;
    const parts = Object.entries(answer.autotranscribeResponse || {}).map(([who, leg]) =>
      `${who}: ${duration(leg.summary?.audioDurationMs)} of audio, ${plural(leg.summary?.transcripts ?? 0, "final")}`);
    this.el.controlMsg.textContent = `Transcription paused. ${parts.join("; ")}.`;
  }

  async start(form) {
    const f = new FormData(form);
    const body = {
      namespace: this.detail.namespace, guid: this.guid,
      customerId: f.get("customerId"), agentId: f.get("agentId"),
      autotranscribeParams: { redactionOutput: f.get("redactionOutput"), audioRecordingAllowed: f.get("record") === "on" },
    };
    const answer = await this.control("start-streaming", body, form.querySelector("button"));
    if (!answer) return;
    this.el.controlMsg.textContent = answer.isOk ? "Transcription started." : `Not started: ${answer.errorMessage}`;
  }

  // Side panels -------------------------------------------------------------------------------------

  renderStreams() {
    const streams = this.detail.streams || [];
    const live = new Map((this.detail.live?.legs || []).map((l) => [l.stream_id, l]));
    if (!streams.length) {
      this.el.streams.replaceChildren(h("p", { class: "muted" }, "Transcription has not been started."));
      return;
    }
    this.el.streams.replaceChildren(h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, ["Participant", "Interval", "Audio", "Finals"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, streams.map((s) => {
        const leg = live.get(s.streamId);
        const summary = s.summary || leg?.summary;
        const stopped = s.stoppedAt ? clock(s.stoppedAt) : leg?.streaming === false ? "stopped" : badge("open", "on");
        return h("tr", {},
          h("td", { title: `stream ${s.streamId}` }, speakerOf(s)),
          h("td", { class: "num" }, clock(s.startedAt), " – ", stopped),
          h("td", { class: "num" }, summary ? duration(summary.audioDurationMs) : "–"),
          h("td", { class: "num" }, summary ? summary.transcripts : "–"));
      }))));
  }

  renderRecordings() {
    const recs = this.detail.recordings || [];
    const key = recs.map((r) => r.url).join();
    if (this.recordingsKey === key) return; // do not reset a player that is playing
    this.recordingsKey = key;
    if (!recs.length) {
      const allowed = (this.detail.streams || []).some((s) => s.audioRecordingAllowed);
      this.el.recordings.replaceChildren(h("p", { class: "muted" },
        allowed ? "Recordings appear when their interval ends." : "Recording was not allowed for this call."));
      return;
    }
    this.el.recordings.replaceChildren(h("ul", { class: "recordings" }, recs.map((r) => {
      const slot = h("div", { class: "player" });
      const button = h("button", { type: "button", class: "quiet", onclick: async () => {
        button.disabled = true;
        try {
          const url = await blobUrl(r.url);
          this.blobs.push(url);
          const audio = h("audio", { controls: true, src: url, "aria-label": `Recording of ${speakerOf(r)}` });
          slot.replaceChildren(audio);
          audio.play().catch(() => {});
        } catch (err) {
          slot.replaceChildren(h("span", { class: "error" }, `Could not load: ${err.message}`));
        }
      } }, "Load and play");
      slot.append(button);
      return h("li", {}, h("span", {}, `${speakerOf(r)} · ${duration(r.durationMs)} · ${clock(r.createdAt)}`), slot);
    })));
  }

  async loadDeliveries() {
    let data;
    try {
      data = await api(path.deliveries(this.guid, this.detail.callId));
    } catch (err) {
      this.el.deliveries.replaceChildren(h("p", { class: "error" }, `Could not load deliveries: ${err.message}`));
      return;
    }
    if (this.closed) return;
    const rows = data.deliveries;
    if (!rows.length) {
      this.el.deliveries.replaceChildren(h("p", { class: "muted" },
        data.webhookConfigured ? "No webhook deliveries for this call yet." : "No webhook URL is configured."));
      return;
    }
    const kinds = { delivered: "on", pending: "info", retrying: "warn", dead: "bad" };
    this.el.deliveries.replaceChildren(
      h("p", { class: "counts" }, Object.entries(data.counts).map(([k, n]) => badge(`${n} ${k}`, n ? kinds[k] : "off"))),
      h("table", { class: "compact" },
        h("thead", {}, h("tr", {}, ["#", "Participant", "Status", "Text"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows.slice(-DELIVERY_ROWS).reverse().map((r) => h("tr", {},
          h("td", { class: "num" }, r.sequence ?? "–"),
          h("td", {}, speakerOf(r)),
          h("td", { title: r.lastError || (r.deliveredAt ? `delivered ${dateTime(r.deliveredAt)}` : "") },
            badge(r.status, kinds[r.status]), r.attempts > 1 ? h("span", { class: "muted" }, ` ${r.attempts} tries`) : null),
          h("td", { class: "clip", title: r.text || "" }, maskedText(r.text || "")))))));
  }
}
