// A call's live transcript: partials shown as provisional and replaced, finals fixed, call state
// changes as markers, all in the order they were said (offset into the call's media).
import { duration, h, maskedText, speakerOf, speakerSlot } from "./dom.js";

const MARKERS = {
  "media-connected": "Media connected",
  "streaming-started": "Transcription started",
  "streaming-stopped": "Transcription stopped",
  "media-ended": "Call ended",
};

export class Transcript {
  constructor(list, callStartIso) {
    this.list = list; // an <ol role="log">
    this.callStart = Date.parse(callStartIso);
    this.items = new Map(); // key -> {at, el, final}
    this.order = []; // keys sorted by `at`
  }

  /** Apply one event of WS /v1/calls/{guid}/events. */
  apply(ev) {
    if (ev.type === "partial" || ev.type === "final") this.utterance(ev);
    else if (ev.type === "state" && MARKERS[ev.state]) this.marker(ev);
  }

  utterance(ev) {
    const key = `u:${ev.streamId}:${ev.utterance}`;
    const known = this.items.get(key);
    if (known?.final) return; // finals are fixed
    if (ev.type === "partial" && !ev.text) {
      if (known) this.remove(key); // the utterance turned out to be noise
      return;
    }
    const speaker = speakerOf(ev);
    const final = ev.type === "final";
    const el = h("li", {
      class: `utt ${final ? "final" : "partial"} speaker-${speakerSlot(speaker)}`,
      dataset: { speaker, kind: ev.type, seq: ev.seq },
      // Provisional text changes many times a second: screen readers get the final only.
      "aria-hidden": final ? null : "true",
    },
    h("div", { class: "utt-meta" },
      h("span", { class: "who" }, speaker),
      h("span", { class: "at" }, duration(ev.start)),
      final ? null : h("span", { class: "provisional" }, "provisional")),
    h("p", { class: "text" }, maskedText(ev.text)));
    this.put(key, ev.start ?? 0, el, final);
  }

  marker(ev) {
    const key = `s:${ev.seq}`;
    if (this.items.has(key)) return;
    const at = Math.max(0, Date.parse(ev.createdAt) - this.callStart);
    const el = h("li", { class: `marker marker-${ev.state}`, dataset: { state: ev.state } },
      h("span", {}, `${MARKERS[ev.state]} · ${duration(at)}`));
    this.put(key, at, el, true);
  }

  put(key, at, el, final) {
    const known = this.items.get(key);
    if (known) {
      known.el.replaceWith(el);
      Object.assign(known, { el, final });
      return;
    }
    let i = this.order.length;
    while (i > 0 && this.items.get(this.order[i - 1]).at > at) i--;
    const before = i < this.order.length ? this.items.get(this.order[i]).el : null;
    this.order.splice(i, 0, key);
    this.items.set(key, { at, el, final });
    const stick = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.insertBefore(el, before);
    if (stick) this.list.scrollTop = this.list.scrollHeight; // follow the call unless the reader scrolled up
  }

  remove(key) {
    this.items.get(key)?.el.remove();
    this.items.delete(key);
    this.order = this.order.filter((k) => k !== key);
  }

  get empty() {
    return ![...this.items.keys()].some((k) => k.startsWith("u:"));
  }
}
