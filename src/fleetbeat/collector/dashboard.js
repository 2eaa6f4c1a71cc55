// The fleet page: counts, the fleet panel (states over 24 h, the least available), the
// alerts, the device table (one page of rows, each with its 24 h strip), recent changes;
// and the router between it and the device page. Built for 10,000 devices: the table
// asks only for the fields it shows, sorts and filters here, and draws PAGE rows.
const REFRESH_MS = 2000;
const PAGE = 100;
const TIMELINE_MS = 30000;   // the strips of the visible page: at most this old
const FLEET_MS = 60000;      // the fleet's buckets are 15 min: once a minute is plenty
const FIELDS = ["id", "state", "state_since", "last_seen", "recent_loss_pct", "loss_pct", "lost",
                "expected", "duplicates", "reordered", "restarts", "reboots", "interval",
                "transport", "addr", "tags", "availability"];
const MAX_ALERTS = 200;  // a site gone dark is one line per device: the first ones say enough
let data = null;         // last /api/devices answer
let fetchedAt = 0;       // browser clock when it arrived
let sortKey = "state", sortDir = 1;
let page = 0;
let deviceId = null;     // the device page shown, or null: the fleet
const strips = {key: "", at: 0, since: 0, until: 0, devices: {}, nodes: new Map()};
const fleet = {at: 0, answer: null};

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  $("f-state").value = p.get("state") || "";
  $("f-tag").value = p.get("tag") || "";
  $("f-id").value = p.get("q") || "";
  page = Math.max(0, (parseInt(p.get("page") || "1", 10) || 1) - 1);
  const sort = p.get("sort") || "state";  // "avail", "-last_seen": a column, "-" descending
  const key = sort.replace(/^-/, "");
  if (document.querySelector(`th[data-key="${CSS.escape(key)}"]`)) {
    sortKey = key; sortDir = sort.startsWith("-") ? -1 : 1;
  }
  deviceId = p.get("device");
}
function fleetHash() {  // the fleet's filters, as the address keeps them
  const p = new URLSearchParams();
  if ($("f-state").value) p.set("state", $("f-state").value);
  if ($("f-tag").value) p.set("tag", $("f-tag").value);
  if ($("f-id").value) p.set("q", $("f-id").value);
  if (sortKey !== "state" || sortDir !== 1) p.set("sort", (sortDir < 0 ? "-" : "") + sortKey);
  if (page > 0) p.set("page", String(page + 1));
  return p.toString();
}
function deviceHash(id) {
  const p = new URLSearchParams(fleetHash());
  p.set("device", id);
  return p.toString();
}
function writeHash() {
  const h = deviceId === null ? fleetHash() : deviceHash(deviceId);
  history.replaceState(null, "", h ? "#" + h : location.pathname);
}
// A tag chip writes key:value into the filter with what the filter splits on (space,
// comma, colon) and "%" percent-encoded, so clicking `room:living room` finds it;
// what people type (site:barn) has none of these and reads as it is.
function escapeTag(s) { return String(s).replace(/[\s,:%]/g, (c) => encodeURIComponent(c)); }
function unescapeTag(s) {
  try { return decodeURIComponent(s); } catch (e) { return s; }
}
function matches(d) {
  const state = $("f-state").value, q = $("f-id").value.trim().toLowerCase();
  if (state && d.state !== state) return false;
  if (q && !String(d.id).toLowerCase().includes(q)) return false;
  for (const f of $("f-tag").value.split(/[\s,]+/).filter(Boolean)) {
    const i = f.indexOf(":");
    const k = unescapeTag(i < 0 ? f : f.slice(0, i)), v = i < 0 ? null : unescapeTag(f.slice(i + 1));
    const tags = d.tags || {};
    if (!Object.prototype.hasOwnProperty.call(tags, k) || (v !== null && String(tags[k]) !== v)) return false;
  }
  return true;
}
function sortValue(d) {
  if (sortKey === "state") return RANK[d.state] ?? 9;
  if (sortKey === "avail") return d.availability ? d.availability["7d"] : null;
  if (sortKey === "tags") return JSON.stringify(d.tags || {});
  return d[sortKey];
}
function compare(a, b) {
  const x = a._v, y = b._v;
  if (x === y || (x == null && y == null)) return a.id < b.id ? -1 : 1;
  if (x === null || x === undefined) return 1;   // unknown last, either way
  if (y === null || y === undefined) return -1;
  return (x < y ? -1 : 1) * sortDir;
}
function renderEvents(events, now) {
  const ul = $("events");
  ul.replaceChildren();
  if (!events.length) { ul.append(el("li", "muted", "none yet")); return; }
  for (const e of events.slice().reverse()) {
    const li = el("li");
    const when = el("span", "when", ago(now - e.time));
    when.title = new Date(e.time * 1000).toLocaleString();
    li.append(when, el("strong", "", e.device), document.createTextNode(" "));
    if (e.from) li.append(el("span", "state " + e.from, e.from), document.createTextNode(" → "));
    li.append(el("span", "state " + e.to, e.to), el("span", "muted", " " + reasonText(e.reason)));
    ul.append(li);
  }
}
function renderCounts() {
  const box = $("counts");
  box.replaceChildren();
  const counts = data.counts || {};
  const cards = [["", "all", data.count]].concat(STATES.map((s) => [s, s, counts[s] || 0]));
  for (const [value, cls, n] of cards) {
    const c = el("div", "count " + cls + ($("f-state").value === value ? " active" : ""));
    c.append(el("span", "n", n.toLocaleString("en-US")), el("span", "label", cls));
    c.title = value ? "show only " + value + " devices" : "show every device";
    c.onclick = () => { $("f-state").value = value; page = 0; update(); };
    box.append(c);
  }
  const parts = STATES.filter((s) => counts[s]).map((s) => counts[s].toLocaleString("en-US") + " " + s);
  $("summary").textContent = data.count.toLocaleString("en-US") + " device" + (data.count === 1 ? "" : "s") +
    (parts.length ? ": " + parts.join(", ") : "");
  if (deviceId === null) document.title = (counts.down ? counts.down + " down · " : "") + "fleetbeat";
}
function stripFor(id) {  // the row's 24 h strip: drawn once per timelines answer, then reused
  let node = strips.nodes.get(id);
  if (!node) {
    const segs = strips.devices[id];
    node = segs ? drawStrip(segs, strips.since, strips.until, 200, 14, false)
      : drawStrip([], 0, 1, 200, 14, false);
    if (!segs) node.firstChild.lastChild.textContent = strips.at ? "no history kept" : "loading";
    strips.nodes.set(id, node);
  }
  return node;
}
function deviceLink(id, text) {
  const a = el("a", "", text);
  a.setAttribute("href", "#" + deviceHash(id));
  return a;
}
let visible = [];
function renderRows() {
  const now = data.time + (Date.now() - fetchedAt) / 1000;  // collector clock, not ours
  for (const d of data.devices) d._v = sortValue(d);
  const rows = data.devices.filter(matches).sort(compare);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  visible = rows.slice(page * PAGE, (page + 1) * PAGE);
  const body = document.querySelector("#devices tbody");
  const frag = document.createDocumentFragment();
  for (const d of visible) {
    const tr = el("tr", d.state);
    tr.dataset.id = d.id;
    tr.append(el("td", "", d.id));
    const st = el("td"); st.append(el("span", "state " + d.state, d.state)); tr.append(st);
    const strip = el("td", "strip"); strip.append(stripFor(d.id)); tr.append(strip);
    const av = d.availability || {};
    const avail = el("td", "num " + availClass(av["7d"]), availText(av["7d"]));
    avail.title = "24 h " + availText(av["24h"]) + ", 7 d " + availText(av["7d"]) + ", 30 d " +
      availText(av["30d"]) + (av.since ? "; counted since " + clock(av.since, true) : "");
    tr.append(avail);
    const seen = el("td", "num", d.last_seen ? ago(now - d.last_seen) : "never");
    if (d.last_seen) seen.title = new Date(d.last_seen * 1000).toLocaleString();
    tr.append(seen);
    const counted = d.expected > 0;  // a missing device has expected nothing: no loss to show
    tr.append(el("td", "num" + ((d.recent_loss_pct || 0) >= 5 ? " bad" : ""),
                 counted ? pct(d.recent_loss_pct) : "–"));
    const run = el("td", "num", counted ? pct(d.loss_pct) : "–");
    run.title = (d.lost ?? 0) + " lost of " + (d.expected ?? 0) + " expected, " +
      (d.duplicates ?? 0) + " duplicates, " + (d.reordered ?? 0) + " reordered";
    tr.append(run);
    tr.append(el("td", "num", String(d.restarts ?? 0)), el("td", "num", String(d.reboots ?? 0)));
    tr.append(el("td", "num", d.interval ? d.interval + " s" : "–"));
    tr.append(el("td", "muted", (d.transport ? d.transport + " " : "") + (d.addr || "")));
    const tags = el("td");
    for (const [k, v] of Object.entries(d.tags || {})) {
      const t = el("span", "tag", k + ":" + v);
      t.title = "filter by this tag: " + shown(k + ":" + v);
      t.onclick = () => { $("f-tag").value = escapeTag(k) + ":" + escapeTag(v); page = 0; update(); };
      tags.append(t);
    }
    tr.append(tags);
    tr.title = "click for the device's page";
    tr.onclick = (ev) => {
      if (!ev.target.classList.contains("tag")) location.hash = deviceHash(d.id);
    };
    frag.append(tr);
  }
  body.replaceChildren(frag);
  $("empty").hidden = rows.length > 0;
  const first = rows.length ? page * PAGE + 1 : 0, last = page * PAGE + visible.length;
  const n = (v) => v.toLocaleString("en-US");
  const text = rows.length <= PAGE
    ? (rows.length === data.devices.length ? "" : n(rows.length) + " of " + n(data.devices.length) + " shown")
    : "showing " + n(first) + "–" + n(last) + " of " + n(rows.length) +
      (rows.length === data.devices.length ? "" : " (" + n(data.devices.length) + " in all)");
  $("shown").textContent = text;
  $("page-text").textContent = rows.length > PAGE ? text + " · page " + (page + 1) + " of " + pages : "";
  $("pager").hidden = rows.length <= PAGE;
  $("prev").disabled = page === 0;
  $("next").disabled = page >= pages - 1;
  $("updated").textContent = "updated " + ago((Date.now() - fetchedAt) / 1000);
}
function renderWorst() {
  const ranked = data.devices.filter((d) => d.availability && d.availability["7d"] !== null &&
                                     d.availability["7d"] !== undefined)
    .sort((a, b) => a.availability["7d"] - b.availability["7d"] || (a.id < b.id ? -1 : 1)).slice(0, 10);
  const ol = $("worst-list");
  ol.replaceChildren();
  for (const d of ranked) {
    const li = el("li");
    const v = d.availability["7d"];
    li.append(deviceLink(d.id, d.id), el("span", "av " + availClass(v), availText(v)));
    ol.append(li);
  }
  $("worst-none").hidden = ranked.length > 0;
}
function renderFleetPanel() {
  const box = $("fleet-bars");
  const a = fleet.answer;
  if (!a || !(a.buckets || []).length) {
    box.replaceChildren(el("span", "muted", fleet.at ? "no history kept on this collector" : "loading…"));
  } else {
    box.replaceChildren(drawFleetBars(a, 960, 250));
  }
  legend($("fleet-legend"), data ? data.counts : null);
}
function suppressedCell(td, s) {
  if (!s) { td.textContent = "notifying"; return; }
  const labels = {silence: "silenced", maintenance: "maintenance", parent: "parent down",
                  flapping: "flapping"};
  td.append(el("span", "badge " + (s.by === "silence" ? "silenced" : s.by), labels[s.by] || s.by));
  const note = s.comment || (s.parent ? "behind " + s.parent : "") || s.name || "";
  if (note) td.append(el("span", "comment", note));
}
function renderAlerts(body) {
  const now = body.time;
  const alerts = body.alerts;
  const tbody = $("alerts").tBodies[0];
  tbody.replaceChildren();
  for (const a of alerts) {
    const tr = el("tr", a.suppressed ? "quiet" : "");
    tr.dataset.device = a.device;
    const sev = el("td"); sev.append(el("span", "sev " + a.severity, a.severity));
    const dev = el("td"); dev.append(deviceLink(a.device, a.device));
    tr.append(sev, el("td", "", a.name + (a.value !== null ? " (" + a.value + ")" : "")),
              dev, el("td", "num", ago(now - a.started)),
              el("td", "", a.notified ? "yes" : "not yet"));
    const st = el("td"); suppressedCell(st, a.suppressed); tr.append(st);
    tbody.append(tr);
  }
  const c = body.counts;
  $("alerts").hidden = alerts.length === 0;
  $("alerts-more").textContent = c.total === 0 ? "No active alerts."
    : c.total > alerts.length ? "and " + (c.total - alerts.length) + " more (fleetbeat alerts)" : "";
  $("alerts-count").textContent = c.total
    ? c.firing + " firing" + (c.suppressed ? ", " + c.suppressed + " suppressed" : "") : "";
  const errors = $("notifier-errors");
  errors.replaceChildren();
  for (const [name, since] of Object.entries(body.failing_since || {})) {
    const detail = (body.last_error || {})[name] || "";
    errors.append(el("div", "notifier-error", "Notifier " + name + " failing for " +
                     ago(now - since).replace(" ago", "") + (detail ? ": " + detail : "")));
  }
  for (const [name, counts] of Object.entries(body.notifications || {})) {
    if (counts.gave_up) errors.append(el("div", "notifier-error", "Notifier " + name + ": " +
                                         counts.gave_up + " notifications given up"));
  }
  $("alerts-panel").hidden = false;
}
function update() {
  writeHash();
  $("fleet-page").hidden = deviceId !== null;
  $("device-page").hidden = deviceId === null;
  if (data) { renderCounts(); if (deviceId === null) { renderRows(); renderWorst(); } }
}
async function refreshStrips(now) {  // the visible rows' 24 h strips, when new ones are due
  const ids = visible.map((d) => d.id);
  const key = ids.join("\n");
  if (!ids.length || (key === strips.key && Date.now() - strips.at < TIMELINE_MS)) return;
  const q = new URLSearchParams({since: String(Math.floor(now - 86400))});
  for (const id of ids) q.append("id", id);
  const [status, body] = await getJson("api/timelines?" + q.toString());
  Object.assign(strips, {key, at: Date.now(), nodes: new Map(),
                         devices: body ? body.devices : {}, since: body ? body.since : 0,
                         until: body ? body.until : 1});
  if (status !== 200 && status !== 404) strips.at = 0;  // 503: try again next time
  if (deviceId === null) renderRows();
}
async function refreshFleet() {
  if (Date.now() - fleet.at < FLEET_MS) return;
  const [, body] = await getJson("api/fleet/history");
  fleet.answer = body; fleet.at = Date.now();
  renderFleetPanel();
}
let firstRender = true;
async function refresh() {
  const started = Date.now();
  try {
    if (deviceId !== null) {
      await refreshDevice(deviceId);
      if (!data || Date.now() - fetchedAt > 30000) {  // the header's counts
        const [status, body] = await getJson("api/devices?fields=id,state");
        if (status === 200) { data = body; fetchedAt = Date.now(); renderCounts(); }
      }
    } else {
      const r = await fetch("api/devices?fields=" + FIELDS.join(","), {cache: "no-store"});
      if (!r.ok) throw new Error("HTTP " + r.status);
      data = await r.json();
      fetchedAt = Date.now();
      update();
      if (firstRender) {  // for benchmarks/dashboard_render.py: ms since navigation
        document.documentElement.dataset.firstRender = performance.now().toFixed(1);
        firstRender = false;
      }
      const ev = await fetch("api/events?limit=15", {cache: "no-store"});
      if (ev.ok) { const body = await ev.json(); renderEvents(body.events, body.time); }
      const al = await fetch("api/alerts?limit=" + MAX_ALERTS, {cache: "no-store"});  // 404: alerting is off
      if (al.ok) renderAlerts(await al.json()); else $("alerts-panel").hidden = true;
      await refreshStrips(data.time);
      const root = document.documentElement;  // ...and when the rows' strips were drawn
      if (!root.dataset.stripsRender) root.dataset.stripsRender = performance.now().toFixed(1);
      await refreshFleet();
    }
    $("error").style.display = "none";
  } catch (e) {
    $("error").textContent = "Cannot reach the collector (" + e.message + "); retrying. " +
      "What is shown is from " + (fetchedAt ? ago((Date.now() - fetchedAt) / 1000) : "never") + ".";
    $("error").style.display = "block";
  }
  // A big fleet costs the collector a moment per answer: poll at most 10 % of the time.
  clearTimeout(refresh.timer);
  refresh.timer = setTimeout(refresh, Math.max(REFRESH_MS, 10 * (Date.now() - started)));
}
for (const th of document.querySelectorAll("th[data-key]")) {
  th.onclick = () => {
    sortDir = sortKey === th.dataset.key ? -sortDir : 1;
    sortKey = th.dataset.key;
    update();
  };
}
for (const id of ["f-state", "f-tag", "f-id"]) $(id).addEventListener("input", () => { page = 0; update(); });
$("prev").onclick = () => { page = Math.max(0, page - 1); update(); refreshStrips(data.time); };
$("next").onclick = () => { page += 1; update(); refreshStrips(data.time); };
window.addEventListener("hashchange", () => {
  const was = deviceId;
  readHash();
  update();
  if (was !== deviceId) { window.scrollTo(0, 0); refresh(); }
});
renderFleetPanel();
readHash();
update();
refresh();
