// The demo's network view (docs/demo.md, "The network view"): draws the snapshot the demo
// sends every second over server-sent events (/events) as SVG. No libraries.

const NS = "http://www.w3.org/2000/svg";
const COLOR = { upstream: "var(--origin)", edge: "var(--edge)", peer: "var(--peer)", seed: "#8888", cache: "var(--cache)" };
window.chorusView = { frames: 0, snapshot: null };

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function human(bytes) {
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(0)} kB`;
  return `${Math.round(bytes)} B`;
}

/** Where each node goes: a column per kind, spread down it. */
function layout(nodes) {
  const columns = { origin: 70, edge: 300, peer: 560, listener: 820 };
  // Peers sit low, so that the links from the edges to the listener pass above them.
  const bands = { origin: [40, 300], edge: [20, 300], peer: [130, 330], listener: [20, 300] };
  const byKind = {};
  for (const n of nodes) (byKind[n.kind] ||= []).push(n);
  const at = {};
  for (const [kind, list] of Object.entries(byKind)) {
    const [top, bottom] = bands[kind];
    list.forEach((n, i) => {
      at[n.id] = { x: columns[kind], y: top + ((i + 1) * (bottom - top)) / (list.length + 1) };
    });
  }
  return at;
}

function drawGraph(s) {
  const svg = document.getElementById("graph");
  const at = layout(s.nodes);
  const max = Math.max(1, ...s.links.map((l) => l.bytes));
  const g = el("g");
  for (const l of s.links) {
    const a = at[l.from];
    const b = at[l.to];
    if (!a || !b) continue;
    const width = l.bytes > 0 ? 1.5 + 10 * Math.sqrt(l.bytes / max) : 1;
    const mid = (a.x + b.x) / 2;
    const path = el("path", {
      d: `M${a.x},${a.y} C${mid},${a.y} ${mid},${b.y} ${b.x},${b.y}`,
      fill: "none",
      stroke: COLOR[l.kind],
      "stroke-width": width,
      "stroke-dasharray": l.kind === "seed" ? "4 4" : "none",
      "stroke-opacity": 0.8,
      class: "link",
      "data-kind": l.kind,
      "data-from": l.from,
      "data-to": l.to,
      "data-bytes": l.bytes,
    });
    g.append(path);
    if (l.bytes > 0) g.append(el("text", { x: mid, y: (a.y + b.y) / 2 - 6, "text-anchor": "middle" }, human(l.bytes)));
  }
  for (const n of s.nodes) {
    const p = at[n.id];
    const node = el("g", { class: "node", "data-id": n.id, "data-kind": n.kind, transform: `translate(${p.x},${p.y})` });
    const fill = { origin: "var(--origin)", edge: "var(--edge)", peer: "var(--peer)", listener: "#555" }[n.kind];
    node.append(el("circle", { r: 30, fill, "fill-opacity": 0.9 }));
    node.append(el("text", { y: 4, "text-anchor": "middle", style: "fill:#fff;font-weight:600;font-size:11px" }, n.id));
    const sent = s.sent[n.id];
    const sub = n.kind === "listener" ? `cache ${human(s.listener.bytes.cache)}` : sent != null ? `sent ${human(sent)}` : "";
    node.append(el("text", { y: 46, "text-anchor": "middle" }, sub));
    node.append(el("title", {}, `${n.id}: ${n.label}`));
    g.append(node);
  }
  svg.replaceChildren(g);
}

/** The plot area the two time charts share: the x position of time `t` over `history`, and
 * the axis line. */
const PLOT = { W: 380, X0: 35, Y0: 180 };
function timeAxis(history) {
  const t0 = history[0].t;
  const span = Math.max(1, history[history.length - 1].t - t0);
  return (t) => PLOT.X0 + ((t - t0) / span) * PLOT.W;
}
const axisLine = () => el("line", { x1: PLOT.X0, y1: PLOT.Y0, x2: PLOT.X0 + PLOT.W, y2: PLOT.Y0, stroke: "currentColor" });

/** A stacked area of the listener's cumulative bytes: cache, peers, edges. */
function drawStack(s) {
  const svg = document.getElementById("stack");
  const h = s.history;
  if (h.length < 2) return;
  const { X0, Y0 } = PLOT;
  const H = 170;
  const top = Math.max(1, ...h.map((p) => p.bytes.edge + p.bytes.peer + p.bytes.cache));
  const x = timeAxis(h);
  const y = (v) => Y0 - (v / top) * H;
  const g = el("g");
  const layers = [["cache", (p) => p.bytes.cache], ["peer", (p) => p.bytes.peer], ["edge", (p) => p.bytes.edge]];
  let below = h.map(() => 0);
  for (const [name, f] of layers) {
    const above = h.map((p, i) => below[i] + f(p));
    const pts = h.map((p, i) => `${x(p.t)},${y(above[i])}`).concat(h.map((p, i) => `${x(p.t)},${y(below[i])}`).reverse());
    g.append(el("polygon", { points: pts.join(" "), fill: COLOR[name], "fill-opacity": 0.8, class: "layer", "data-source": name }));
    below = above;
  }
  g.append(el("text", { x: X0, y: 12 }, `${human(top)} in all`));
  g.append(axisLine());
  svg.replaceChildren(g);
}

/** Buffer (seconds) and bitrate (kbit/s) over time, each scaled to its own maximum. */
function drawBuffer(s) {
  const svg = document.getElementById("buffer");
  const h = s.history;
  if (h.length < 2) return;
  const { X0, Y0 } = PLOT;
  const H = 160;
  const x = timeAxis(h);
  const g = el("g");
  const series = [
    ["buffer_s", "var(--peer)", "buffer", "s"],
    ["bitrate_kbps", "var(--edge)", "bitrate", "kbit/s"],
  ];
  series.forEach(([key, color, name, unit], i) => {
    const top = Math.max(1, ...h.map((p) => p[key]));
    const pts = h.map((p) => `${x(p.t)},${Y0 - (p[key] / top) * H}`).join(" ");
    g.append(el("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2 }));
    const last = h[h.length - 1][key];
    g.append(el("text", { x: X0 + i * 190, y: 12, style: `fill:${color}` }, `${name} ${last.toFixed(key === "buffer_s" ? 1 : 0)} ${unit}`));
  });
  g.append(axisLine());
  svg.replaceChildren(g);
}

function drawHits(s) {
  const svg = document.getElementById("hits");
  const g = el("g");
  s.edges.forEach((e, i) => {
    const all = e.hits + e.misses;
    const ratio = all > 0 ? e.hits / all : 0;
    const y = 15 + i * 45;
    g.append(el("text", { x: 0, y: y + 14 }, e.id));
    g.append(el("rect", { x: 60, y, width: 300, height: 20, fill: "#8883" }));
    g.append(el("rect", { x: 60, y, width: 300 * ratio, height: 20, fill: "var(--edge)", class: "hit", "data-edge": e.id, "data-ratio": ratio }));
    g.append(el("text", { x: 365, y: y + 14 }, all > 0 ? `${(100 * ratio).toFixed(0)}%` : "–"));
    g.append(el("text", { x: 60, y: y + 34, class: "sub" }, `${e.hits} hits, ${e.misses} misses`));
  });
  svg.replaceChildren(g);
}

function drawCurve(s) {
  const svg = document.getElementById("mrc");
  const W = 360, H = 160, X0 = 45, Y0 = 180;
  const all = s.edges.flatMap((e) => e.mrc.map(([size]) => size)).filter((v) => v > 0);
  const g = el("g");
  g.append(el("line", { x1: X0, y1: Y0, x2: X0 + W, y2: Y0, stroke: "currentColor" }));
  g.append(el("line", { x1: X0, y1: Y0, x2: X0, y2: Y0 - H, stroke: "currentColor" }));
  g.append(el("text", { x: 0, y: Y0 - H + 4 }, "100%"));
  g.append(el("text", { x: 10, y: Y0 + 4 }, "0%"));
  if (all.length > 0) {
    const lo = Math.log(Math.min(...all)), hi = Math.log(Math.max(...all));
    const x = (v) => X0 + ((Math.log(v) - lo) / Math.max(1e-9, hi - lo)) * W;
    s.edges.forEach((e, i) => {
      const pts = e.mrc.filter(([v]) => v > 0).map(([v, m]) => `${x(v)},${Y0 - m * H}`).join(" ");
      g.append(el("polyline", { points: pts, fill: "none", stroke: i === 0 ? "var(--edge)" : "var(--origin)", "stroke-width": 2 }));
      g.append(el("text", { x: X0 + W - 60, y: 20 + i * 16, style: `fill:${i === 0 ? "var(--edge)" : "var(--origin)"}` }, e.id));
    });
    g.append(el("text", { x: X0, y: Y0 + 16 }, human(Math.min(...all))));
    g.append(el("text", { x: X0 + W, y: Y0 + 16, "text-anchor": "end" }, human(Math.max(...all))));
  } else {
    g.append(el("text", { x: X0 + 10, y: Y0 - 60 }, "no curve yet (it fills in as chunks are requested)"));
  }
  svg.replaceChildren(g);
}

function draw(s) {
  window.chorusView.snapshot = s;
  window.chorusView.frames++;
  const l = s.listener;
  document.getElementById("status").textContent = l.track
    ? `listener: ${l.track} ${Math.floor(l.played_s)} / ${Math.floor(l.duration_s)} s, ${l.rendition}, buffer ${l.buffer_s.toFixed(1)} s, over ${l.protocol}; ${l.plays} plays done`
    : "waiting for the listener…";
  drawGraph(s);
  drawStack(s);
  drawBuffer(s);
  drawHits(s);
  drawCurve(s);
}

const events = new EventSource("events");
events.onmessage = (m) => draw(JSON.parse(m.data));
events.onerror = () => {
  document.getElementById("status").textContent = "the demo is not answering (stopped?); retrying…";
};
