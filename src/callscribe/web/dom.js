// Small DOM and formatting helpers shared by the views.

/** An element: h("td", {class: "x", onclick: fn}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Text with each run of '#' (what redaction leaves) marked so masks are visible as such. */
export function maskedText(text) {
  const frag = document.createDocumentFragment();
  // A masked number keeps its separators ("#### ####", "# # #"): one mark for the whole run reads better.
  for (const part of String(text).split(/(#+(?:[ ,.\/-]{1,2}#+)*)/)) {
    if (!part) continue;
    if (part.startsWith("#")) frag.append(h("span", { class: "mask", title: "masked by redaction" }, part));
    else frag.append(part);
  }
  return frag;
}

/** Who spoke: the participant id when the server sends one, else the role. */
export function speakerOf(item) {
  return item.participant ?? item.role ?? item.name ?? "unknown";
}

export function duration(ms) {
  if (ms == null || !isFinite(ms) || ms < 0) return "–";
  const s = Math.floor(ms / 1000);
  const hms = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const mm = String(hms[1]).padStart(2, "0"), ss = String(hms[2]).padStart(2, "0");
  return hms[0] ? `${hms[0]}:${mm}:${ss}` : `${hms[1]}:${ss}`;
}

export function clock(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

export function dateTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const today = d.toDateString() === new Date().toDateString();
  return today ? clock(iso) : `${d.toLocaleDateString()} ${clock(iso)}`;
}

export function seconds(value, digits = 2) {
  return value == null ? "–" : `${Number(value).toFixed(digits)} s`;
}

/** A speaker's colour slot (0..3), stable for a name within the page. */
const slots = new Map();
export function speakerSlot(name) {
  if (!slots.has(name)) {
    const fixed = { customer: 0, agent: 1 }[name];
    slots.set(name, fixed ?? (2 + (slots.size % 2)));
  }
  return slots.get(name);
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

/** Runs `fn` at once and then `ms` after each run ends, from start() until stop(). */
export class Poller {
  constructor(fn, ms) {
    this.fn = fn;
    this.ms = ms;
    this.timer = null;
    this.generation = 0; // a run still in flight when stopped must not schedule another
  }

  start() {
    if (this.timer !== null) return;
    const generation = ++this.generation;
    const tick = async () => {
      await this.fn();
      if (generation === this.generation) this.timer = setTimeout(tick, this.ms);
    };
    this.timer = setTimeout(tick, 0);
  }

  stop() {
    this.generation++;
    clearTimeout(this.timer);
    this.timer = null;
  }
}
