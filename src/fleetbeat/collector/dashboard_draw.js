// The dashboard's pictures: inline SVG built here, no library, nothing from another host
// (the collector may run on a network with no Internet at all).
// Shared helpers first; then the state strip, the fleet's stacked bars, the loss bars.
const STATES = ["down", "missing", "late", "up", "offline"];
const RANK = {down: 0, missing: 1, late: 2, up: 3, offline: 4};  // worst first
const SVG_NS = "http://www.w3.org/2000/svg";  // a name, not an address: nothing is loaded
const $ = (id) => document.getElementById(id);

// Bidi overrides and invisible characters, shown as what they are: a sender's tag
// "\u202egnp.exe" must not read "exe.png", nor "barn\u200b" pass for "barn".
const HIDDEN_CHARS = /[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;
function shown(text) {
  return String(text).replace(HIDDEN_CHARS,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = shown(text);  // never innerHTML: ids and tags are data
  return e;
}
function svg(tag, attrs, title) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (title) { const t = document.createElementNS(SVG_NS, "title"); t.textContent = title; e.append(t); }
  return e;
}
function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const s = Math.max(0, seconds);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function span(seconds) {  // a duration: "3 h 20 min"
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  const min = Math.round(s / 60), h = Math.floor(min / 60), m = min % 60;
  if (s < 172800) return h + " h" + (m ? " " + m + " min" : "");
  const hours = Math.round(s / 3600);
  return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
}
function pct(v) {
  if (v === null || v === undefined) return "–";
  return (v === 0 || v >= 10 ? v.toFixed(0) : v.toFixed(1)) + " %";
}
function availText(v) {  // availability: two decimals, as the API gives it
  return v === null || v === undefined ? "–" : v.toFixed(2) + " %";
}
function availClass(v) {
  if (v === null || v === undefined) return "muted";
  return v >= 99.9 ? "av-good" : v >= 99 ? "av-fair" : "av-bad";
}
function clock(t, withDay) {  // local time of an epoch second
  const o = {hour: "2-digit", minute: "2-digit", hour12: false};
  if (withDay) { o.month = "short"; o.day = "numeric"; }
  return new Date(t * 1000).toLocaleString("en-GB", o);
}
function reasonText(r) { return r ? String(r).replace(/_/g, " ") : ""; }
function stateClass(s) { return s in RANK ? "s-" + s : "s-other"; }

// One row of state segments [[from, to, state, reason], ...] over [since, until] as
// rects of `width` x `height` px; each with a <title>: from – to, state, reason. Runs of
// segments narrower than a pixel merge into one rect in the worst state among them (a
// flapping device stays a few hundred rects, and a 10 s "down" still shows as a pixel).
function drawStrip(segs, since, until, width, height, withDay) {
  const root = svg("svg", {class: "strip", width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", "shape-rendering": "crispEdges"});
  root.append(svg("rect", {class: "s-none", x: 0, y: 0, width, height, rx: 2},
                  "no state known"));
  const scale = width / Math.max(1, until - since);
  const runs = [];
  let cur = null;
  for (const [from, to, state, reason] of segs) {
    const a = Math.max(from, since), b = Math.min(to, until);
    if (!(b > a)) continue;
    const x0 = (a - since) * scale, x1 = (b - since) * scale;
    if (cur && cur.state === state && x0 - cur.x1 < 0.5) {  // a state going on (new reason)
      cur.x1 = x1; cur.to = b;
      continue;
    }
    if (cur && cur.x1 - cur.x0 < 1 && x1 - x0 < 1 && x0 - cur.x1 < 0.5) {  // both under a pixel
      cur.x1 = x1; cur.to = b; cur.parts.push([a, state, reason]);
      if ((RANK[state] ?? 9) < (RANK[cur.state] ?? 9)) cur.state = state;
      continue;
    }
    cur = {x0, x1, from: a, to: b, state, reason, parts: [[a, state, reason]]};
    runs.push(cur);
  }
  for (const r of runs) {
    const w = Math.max(1, r.x1 - r.x0);
    const x = Math.min(r.x0, width - w);  // a last pixel still shows (the state now)
    const when = clock(r.from, withDay) + " – " + clock(r.to, withDay) + " (" + span(r.to - r.from) + ")";
    const said = (p) => p[1] + (p[2] ? ": " + reasonText(p[2]) : "");
    const what = r.parts.length === 1 ? said(r.parts[0])
      : r.parts.slice(0, 6).map((p) => clock(p[0], withDay) + " " + said(p)).join("\n") +
        (r.parts.length > 6 ? "\n… " + (r.parts.length - 6) + " more changes" : "");
    const rect = svg("rect", {class: stateClass(r.state), x: x.toFixed(2), y: 0,
                              width: Math.min(w + 0.5, width - x).toFixed(2),  // overlap: no seams
                              height}, when + "\n" + what);
    rect.dataset.state = r.state;
    root.append(rect);
  }
  return root;
}

// Tick labels along a time axis: every `step` seconds on the local clock.
function timeTicks(g, since, until, x, y, step, withDay, right) {
  const d = new Date(since * 1000);
  d.setMinutes(0, 0, 0);
  if (step >= 86400) d.setHours(0); else d.setHours(d.getHours() - d.getHours() % (step / 3600));
  for (let t = d.getTime() / 1000; t <= until; t += step) {
    if (t < since) continue;
    const px = x(t);
    g.append(svg("line", {class: "grid", x1: px, x2: px, y1: y - 4, y2: y}));
    if (right !== undefined && px > right - (withDay ? 70 : 16)) continue;  // no label cut off
    const label = svg("text", {x: px, y: y + 11, "text-anchor": withDay ? "start" : "middle"});
    label.textContent = withDay ? new Date(t * 1000).toLocaleDateString("en-GB",
      {weekday: "short", day: "numeric", month: "short"}) : clock(t, false);
    g.append(label);
  }
}

// The fleet's stacked bars: one bar per bucket, its height the devices counted in it,
// stacked by state (up at the bottom, then late, down, missing, offline).
const STACK = ["up", "late", "down", "missing", "offline"];
function drawFleetBars(answer, width, height) {
  const root = svg("svg", {class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
                           id: "fleet-svg"});
  const left = 54, right = 6, top = 8, bottom = 22;
  const buckets = answer.buckets || [];
  const step = answer.step || 900;
  const since = answer.since, until = answer.until;
  const total = (b) => STACK.reduce((n, s) => n + (b[s] || 0), 0);
  const max = Math.max(1, ...buckets.map(total));
  const plotW = width - left - right, plotH = height - top - bottom;
  const x = (t) => left + (t - since) / Math.max(1, until - since) * plotW;
  const y = (n) => top + plotH - n / max * plotH;
  for (const n of [0, max]) {
    root.append(svg("line", {class: "grid", x1: left, x2: width - right, y1: y(n), y2: y(n)}));
    const label = svg("text", {x: left - 5, y: y(n) + 4, "text-anchor": "end"});
    label.textContent = n.toLocaleString("en-US");
    root.append(label);
  }
  const barW = Math.max(1, step / Math.max(1, until - since) * plotW - 1);
  for (const b of buckets) {
    const g = svg("g", {class: "bar"}, clock(b.time, true) + " – " + clock(b.time + step, false) +
      "\n" + STACK.filter((s) => b[s]).map((s) => b[s] + " " + s).join(", "));
    g.dataset.time = b.time;
    let base = 0;
    for (const s of STACK) {
      const n = b[s] || 0;
      if (!n) continue;
      const r = svg("rect", {class: stateClass(s), x: x(b.time).toFixed(2), width: barW.toFixed(2),
                             y: y(base + n).toFixed(2), height: (y(base) - y(base + n)).toFixed(2)});
      r.dataset.state = s; r.dataset.n = n;
      g.append(r);
      base += n;
    }
    root.append(g);
  }
  timeTicks(root, since, until, x, height - bottom + 4, 3 * 3600, false, width);
  return root;
}

// Hourly heartbeat loss: one bar per hour, its height lost / expected (lost = expected -
// received), the scale's top the next of 1, 2, 5, 10, 20, 50, 100 % above the worst hour.
// Red from 5 %, amber from 1 %, light grey below; an hour with nothing lost gets a thin
// green line, so "no loss" differs from "no data" (no bar).
function drawLossBars(hours, since, until, width, height) {
  const root = svg("svg", {class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
                           id: "loss-svg"});
  const left = 54, right = 6, top = 8, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  const loss = hours.map((h) => {
    const lost = Math.max(0, (h.expected || 0) - (h.received || 0));
    return {h, lost, pct: h.expected > 0 ? 100 * lost / h.expected : null};
  });
  const worst = Math.max(0, ...loss.map((l) => l.pct || 0));
  const top_ = [1, 2, 5, 10, 20, 50, 100].find((v) => v >= worst) || 100;
  const x = (t) => left + (t - since) / Math.max(1, until - since) * plotW;
  const y = (p) => top + plotH - p / top_ * plotH;
  for (const p of [0, top_ / 2, top_]) {
    root.append(svg("line", {class: "grid", x1: left, x2: width - right, y1: y(p), y2: y(p)}));
    const label = svg("text", {x: left - 5, y: y(p) + 4, "text-anchor": "end"});
    label.textContent = p + " %";
    root.append(label);
  }
  const barW = Math.max(1, 3600 / Math.max(1, until - since) * plotW - 1);
  for (const l of loss) {
    if (l.pct === null) continue;
    const title = clock(l.h.hour, true) + " – " + clock(l.h.hour + 3600, false) + "\n" +
      l.h.received + " received of " + l.h.expected + " expected: " + l.lost + " lost (" +
      l.pct.toFixed(1) + " %)";
    const cls = l.pct >= 5 ? "s-down" : l.pct >= 1 ? "s-late" : l.lost ? "l-low" : "s-up";
    const hgt = l.lost ? Math.max(1.5, y(0) - y(l.pct)) : 1.5;
    const r = svg("rect", {class: cls + " loss", x: x(l.h.hour).toFixed(2), width: barW.toFixed(2),
                           y: (y(0) - hgt).toFixed(2), height: hgt.toFixed(2)}, title);
    r.dataset.lost = l.lost; r.dataset.expected = l.h.expected;
    root.append(r);
  }
  timeTicks(root, since, until, x, height - bottom + 4, 86400, true, width);
  return root;
}

// A colour key: one swatch per state, with a count when given.
function legend(box, counts) {
  box.replaceChildren();
  for (const s of STACK.concat(["none"])) {
    const item = el("span");
    item.append(el("i", s), document.createTextNode(
      s === "none" ? "no state" : s + (counts && counts[s] !== undefined ? " " + counts[s] : "")));
    box.append(item);
  }
}
