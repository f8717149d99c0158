// The engine view: admission, legs, queues, partials shed and final latency, polled every POLL_MS.
import { api, path } from "./api.js";
import { badge, clock, h, Poller, seconds } from "./dom.js";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const ADMISSION = { open: ["Accepting new streams", "on"], refusing: ["Refusing new streams", "bad"],
  loading: ["Model loading", "warn"], failed: ["Model failed to load", "bad"] };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

/** 0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5 ... at least `raw`. */
function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

function tile(label, value, note, id) {
  return h("div", { class: "tile", id },
    h("div", { class: "tile-label" }, label),
    h("div", { class: "tile-value" }, value),
    note ? h("div", { class: "tile-note" }, note) : null);
}

/** Final latency p50/p95 per step as two lines, with the deadline dashed; gaps where nothing was final. */
function chart(lat, deadlineS) {
  const W = 1100, H = 260, L = 52, R = 12, T = 14, B = 28;
  const pts = lat.series || [];
  const step = niceStep(Math.max(deadlineS, ...pts.map((p) => p.p95 || 0)) * 1.1 / 4);
  const top = step * Math.ceil((Math.max(deadlineS, ...pts.map((p) => p.p95 || 0)) * 1.1) / step);
  // The axis always spans the whole history; a young server has points only at its right end.
  const slots = Math.max(2, Math.round((lat.seriesS || 600) / (lat.stepS || 30)), pts.length);
  const x = (i) => L + ((slots - pts.length + i) / (slots - 1)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const line = (key, cls) => {
    let d = "", pen = false;
    pts.forEach((p, i) => {
      if (p[key] == null) return void (pen = false);
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`;
      pen = true;
    });
    const dots = pts.map((p, i) => p[key] == null ? null : svg("circle", { cx: x(i), cy: y(p[key]), r: 3.5, class: cls }));
    return [svg("path", { d, class: `line ${cls}` }), ...dots.filter(Boolean)];
  };
  const grid = [];
  for (let v = 0; v <= top + 1e-9; v += step) {
    grid.push(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, `${+v.toFixed(2)} s`));
  }
  const minutes = Math.round((slots * (lat.stepS || 30)) / 60);
  const labels = [
    svg("text", { x: L, y: H - 6, class: "axis" }, `${minutes} min ago`),
    svg("text", { x: (L + W - R) / 2, y: H - 6, class: "axis", "text-anchor": "middle" }, `${minutes / 2} min ago`),
    svg("text", { x: W - R, y: H - 6, class: "axis", "text-anchor": "end" }, "now")];
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": `Final latency p50 and p95 per ${lat.stepS} seconds over the last ${minutes} minutes; the table below has the values` },
  ...grid,
  svg("line", { x1: L, x2: W - R, y1: y(deadlineS), y2: y(deadlineS), class: "deadline" }),
  svg("text", { x: W - R, y: y(deadlineS) - 4, class: "axis deadline-label", "text-anchor": "end" }, "deadline"),
  ...line("p95", "p95"), ...line("p50", "p50"), ...labels,
  pts.some((p) => p.p50 != null) ? "" : svg("text", { x: (L + W - R) / 2, y: H / 2, class: "axis", "text-anchor": "middle" },
    "No finals in the last minutes"));
}

export class EngineView {
  constructor() {
    this.body = document.getElementById("engine-body");
    this.status = document.getElementById("engine-status");
    this.poller = new Poller(() => this.refresh(), POLL_MS);
    this.tableOpen = false;
  }

  async refresh() {
    try {
      const e = await api(path.engine());
      this.render(e);
      this.status.textContent = `updated ${clock(new Date().toISOString())} · figures are for the whole server`;
    } catch (err) {
      this.status.textContent = `Could not load: ${err.message}`;
    }
  }

  render(e) {
    const [admissionText, admissionKind] = ADMISSION[e.admission] || [e.admission, "off"];
    const lat = e.finalLatency || { series: [] };
    const deadline = e.finalDeadlineMs / 1000;
    const details = h("details", { class: "series", open: this.tableOpen, ontoggle: (ev) => (this.tableOpen = ev.target.open) },
      h("summary", {}, "Latency values"),
      h("table", { class: "compact" },
        h("thead", {}, h("tr", {}, ["Until", "Finals", "p50", "p95"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, [...(lat.series || [])].reverse().map((p) => h("tr", {},
          h("td", {}, clock(p.t)), h("td", { class: "num" }, p.count),
          h("td", { class: "num" }, seconds(p.p50)), h("td", { class: "num" }, seconds(p.p95)))))));
    this.body.replaceChildren(
      h("div", { class: "tiles" },
        tile("Admission", badge(admissionText, admissionKind), e.model || e.loadError, "engine-admission"),
        tile("Active legs", e.activeLegs, `${e.activeCalls} ${e.activeCalls === 1 ? "call" : "calls"} with media`, "engine-legs"),
        tile("Workers busy", e.workers == null ? "–" : `${e.busyWorkers} / ${e.workers}`,
          e.load == null ? null : `load ${(e.load * 100).toFixed(0)} %, finals ${(e.finalLoad * 100).toFixed(0)} %`),
        tile("Streams refused", e.streamsRefused, "for lack of capacity"),
        tile("Finals queued", e.queues.finals, "waiting for the model", "engine-finals-queue"),
        tile("Partials queued", e.queues.partials, "at most one per leg"),
        tile("Partials shed", e.partialsShed, "dropped or merged under load", "engine-shed"),
        tile("Webhooks waiting", e.queues.webhooks, "in the outbox")),
      h("section", { class: "panel", "aria-labelledby": "latency-title" },
        h("div", { class: "panel-head" },
          h("h2", { id: "latency-title" }, "End of speech to final text"),
          h("p", { class: "latency-now", id: "engine-latency" },
            h("span", { class: "key p50" }, `p50 ${seconds(lat.p50)}`),
            h("span", { class: "key p95" }, `p95 ${seconds(lat.p95)}`),
            h("span", { class: "muted" }, `last ${Math.round((lat.windowS || 0) / 60)} min, ${lat.count ?? 0} finals · deadline ${seconds(deadline, 1)}`))),
        chart(lat, deadline),
        details));
  }
}
