// The call list: live and stored calls of the tenant, refreshed by polling, with search and a state filter.
import { api, path } from "./api.js";
import { badge, dateTime, duration, h, Poller, speakerOf } from "./dom.js";

const POLL_MS = 2000;
const DETAIL_LOOKUPS = 25; // ended calls whose participants are fetched once (the list has no legs for them)

// The call's media; whether it is being transcribed is shown beside it (transcriptionOf).
export const STATE_LABELS = {
  streaming: ["Live", "info"],
  connected: ["Live", "info"],
  pending: ["Waiting", "warn"],
  ended: ["Ended", "off"],
};
export const TRANSCRIPTION_KINDS = { On: "on", Paused: "warn", Off: "off" };

export function stateBadge(state) {
  const [label, kind] = STATE_LABELS[state] || [state || "unknown", "off"];
  return badge(label, kind);
}

/** The call's legs as [{speaker, externalId, redaction, streaming}], from the live snapshot or the stored streams. */
export function legsOf(call) {
  const live = call.live?.legs;
  const raw = live?.length ? live : (call.streams || []);
  const bySpeaker = new Map();
  for (const leg of raw) {
    bySpeaker.set(speakerOf(leg), {
      speaker: speakerOf(leg),
      externalId: leg.external_id ?? leg.externalId,
      redaction: leg.redaction_output ?? leg.redactionOutput,
      streaming: leg.streaming ?? leg.stoppedAt == null,
    });
  }
  return [...bySpeaker.values()];
}

/** "On", "Paused" (stopped while the media is still connected) or "Off". */
export function transcriptionOf(call) {
  if (call.state === "streaming") return "On";
  if (call.state === "ended") return "Off";
  const intervals = call.live?.intervals ?? (call.streams || []).length;
  return intervals ? "Paused" : "Off";
}

export class CallList {
  constructor({ onChange } = {}) {
    this.rows = document.getElementById("call-rows");
    this.status = document.getElementById("calls-status");
    this.empty = document.getElementById("calls-empty");
    this.search = document.getElementById("search-guid");
    this.stateFilter = document.getElementById("filter-state");
    this.calls = [];
    this.details = new Map(); // callId -> stored detail of an ended call (it no longer changes)
    this.selected = null;
    this.onChange = onChange;
    this.poller = new Poller(() => this.refresh(), POLL_MS);
    this.search.addEventListener("input", () => this.render());
    this.stateFilter.addEventListener("change", () => this.render());
    document.getElementById("call-filters").addEventListener("submit", (e) => e.preventDefault());
  }

  async refresh() {
    try {
      const data = await api(path.calls());
      this.calls = data.calls || [];
      this.status.textContent = `${this.calls.filter((c) => c.active).length} live · ${this.calls.length} shown`;
      await this.fillDetails();
      this.render();
      this.onChange?.(this.calls);
    } catch (err) {
      this.status.textContent = `Could not load calls: ${err.message}`;
    }
  }

  async fillDetails() {
    const missing = this.calls.filter((c) => !c.live && !this.details.has(c.callId)).slice(0, DETAIL_LOOKUPS);
    await Promise.all(missing.map(async (c) => {
      try {
        const d = await api(path.call(c.guid));
        // Only an ended call's detail is final; a namesake may have replaced it, so match the id.
        if (d.callId === c.callId) this.details.set(c.callId, { streams: d.streams || [] });
      } catch {
        /* shown without participants */
      }
    }));
  }

  select(guid) {
    this.selected = guid;
    this.render();
  }

  visible() {
    const q = this.search.value.trim().toLowerCase();
    const state = this.stateFilter.value;
    return this.calls.filter((c) => (!q || String(c.guid).toLowerCase().includes(q)) && (!state || c.state === state));
  }

  render() {
    const rows = this.visible().map((c) => this.row(c));
    this.rows.replaceChildren(...rows);
    this.empty.hidden = rows.length > 0;
  }

  row(call) {
    const full = { ...call, ...(this.details.get(call.callId) || {}) };
    const legs = legsOf(full);
    const end = call.endedAt ? Date.parse(call.endedAt) : Date.now();
    const modes = [...new Set(legs.map((l) => l.redaction).filter(Boolean))];
    const transcription = transcriptionOf(full);
    const current = this.selected === call.guid;
    return h("tr", { class: current ? "selected" : "", "aria-current": current ? "true" : null, dataset: { guid: call.guid } },
      h("td", {},
        h("a", { href: `#/calls/${encodeURIComponent(call.guid)}`, class: "guid" }, call.guid),
        h("div", { class: "sub" }, `${call.namespace || "–"} · ${dateTime(call.createdAt)}`)),
      h("td", {}, stateBadge(call.state)),
      h("td", {}, badge(transcription, TRANSCRIPTION_KINDS[transcription])),
      h("td", {}, legs.length
        ? legs.map((l) => h("span", { class: "chip", title: l.externalId ? `external id ${l.externalId}` : null }, l.speaker))
        : h("span", { class: "muted" }, "–")),
      h("td", { class: "num" }, duration(end - Date.parse(call.createdAt))),
      h("td", {}, modes.length ? modes.join(", ").replaceAll("_", "_\u200b") : h("span", { class: "muted" }, "–")));
  }
}
