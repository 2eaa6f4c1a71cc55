// The device page (#device=ID, with the fleet's filters kept beside it in the address):
// the 7 d strip, the hourly loss bars, availability, the last metrics, the events, the
// alerts and silences of one device. Drawn from GET api/devices/{id} (every refresh),
// api/devices/{id}/history (every HISTORY_MS), api/alerts and api/silences.
const HISTORY_MS = 30000;
const WINDOWS = [["24h", 86400], ["7d", 7 * 86400], ["30d", 30 * 86400]];
const dev = {id: null, device: null, time: 0, status: 0, hist: null, histAt: 0, histStatus: 0,
             events: null, alerts: null, silences: null};

let lastError = "";  // the collector's own words for the last answer that was not 200
async function getJson(path) {  // [status, body or null]
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) {
    lastError = await r.json().then((b) => String(b.error || ""), () => "");
    return [r.status, null];
  }
  return [r.status, await r.json()];
}

async function refreshDevice(id) {
  if (dev.id !== id) Object.assign(dev, {id, device: null, hist: null, histAt: 0, events: null,
                                         alerts: null, silences: null, status: 0});
  const base = "api/devices/" + encodeURIComponent(id);
  const [status, body] = await getJson(base);
  if (status !== 200 && status !== 404 && status !== 400) throw new Error("HTTP " + status);
  dev.status = status;
  dev.device = body ? body.device : null;
  dev.time = body ? body.time : Date.now() / 1000;
  if (Date.now() - dev.histAt > HISTORY_MS && status === 200) {
    const [hs, hist] = await getJson(base + "/history");
    dev.histStatus = hs; dev.hist = hist; dev.histAt = Date.now(); dev.histError = hist ? "" : lastError;
    if (!hist) {  // no history API (no store): the collector's recent events, this device's
      const [, ev] = await getJson("api/events?limit=10000");
      dev.events = ev ? ev.events.filter((e) => e.device === id) : [];
    }
  }
  const [as, alerts] = await getJson("api/alerts?limit=100000");  // 404: alerting is off
  dev.alerts = as === 200 ? alerts.alerts.filter((a) => a.device === id) : null;
  const [, silences] = as === 200 ? await getJson("api/silences") : [0, null];
  dev.silences = silences ? silences.silences : null;
  renderDevice();
}

function globMatch(pattern, text) {  // fnmatch's *, ? and [...], as silences match devices
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[" && pattern.indexOf("]", i + 2) > 0) {
      const j = pattern.indexOf("]", i + 2);
      let body = pattern.slice(i + 1, j).replace(/\\/g, "\\\\");
      if (body[0] === "!") body = "^" + body.slice(1);
      re += "[" + body + "]"; i = j;
    } else re += c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  try {
    return new RegExp("^" + re + "$", "s").test(text);
  } catch (e) {  // "[z-a]": fnmatch matches nothing with it; one bad silence breaks no page
    return false;
  }
}
function silenceApplies(s, id, tags) {
  const m = s.match || {};
  if (m.device && !(m.device === id || globMatch(m.device, id))) return false;
  for (const pair of [].concat(m.tag || [])) {
    const i = pair.indexOf(":");
    if ((tags || {})[pair.slice(0, i)] !== pair.slice(i + 1)) return false;
  }
  return true;
}

function card(title, ...children) {
  const c = el("section", "card");
  c.append(el("h2", "", title), ...children);
  return c;
}

function availabilityFigures(av, now) {
  const box = el("div", "figures");
  box.id = "dev-figures";
  for (const [key, seconds] of WINDOWS) {
    const v = av ? av[key] : null;
    const f = el("div", "figure");
    f.dataset.window = key;
    f.append(el("span", "n " + availClass(v), availText(v)), el("span", "label", key.replace(/(\d+)/, "$1 ")));
    const since = av && av.since;
    f.append(el("span", "since", v === null || v === undefined ? "nothing counted yet"
      : since && since > now - seconds ? "counted since " + clock(since, true) + " (" + span(now - since) + ")"
      : "the whole " + key.replace(/(\d+)/, "$1 ")));
    box.append(f);
  }
  return box;
}

function weekStrip(hist) {
  const width = 960, height = 28;
  const segs = hist.segments.map((s) => [s.from, s.to, s.state, s.reason]);
  const root = drawStrip(segs, hist.since, hist.until, width, height, true);
  root.removeAttribute("width"); root.removeAttribute("height");
  root.setAttribute("viewBox", `0 0 ${width} ${height + 18}`);
  root.setAttribute("class", "chart");
  root.id = "week-strip";
  const x = (t) => (t - hist.since) / Math.max(1, hist.until - hist.since) * width;
  timeTicks(root, hist.since, hist.until, x, height + 4, 86400, true, width);
  return root;
}

function detailList(d, now) {
  const items = [
    ["state since", d.state_since ? clock(d.state_since, true) + " (" + ago(now - d.state_since) + ")" : "–"],
    ["last seen", d.last_seen ? ago(now - d.last_seen) : "never"],
    ["address", (d.transport ? d.transport + " " : "") + (d.addr || "–")],
    ["run", d.run || "–"], ["agent version", d.version || "–"],
    ["boot time", d.boot_time ? clock(d.boot_time, true) : "–"],
    ["interval", d.interval ? d.interval + " s" : "–"],
    ["clock skew", d.clock_skew !== null && d.clock_skew !== undefined ? d.clock_skew.toFixed(3) + " s" : "–"],
    ["down after", d.down_after_effective !== undefined ? d.down_after_effective + " missed intervals" : "–"],
    ["heartbeats", (d.received ?? 0) + " received of " + (d.expected ?? 0) + " expected"],
    ["loss", pct(d.recent_loss_pct) + " recent, " + pct(d.loss_pct) + " all"],
    ["lost / duplicated / reordered", (d.lost ?? 0) + " / " + (d.duplicates ?? 0) + " / " + (d.reordered ?? 0)],
    ["restarts / reboots", (d.restarts ?? 0) + " / " + (d.reboots ?? 0)],
    ["readings", (d.readings_received ?? 0) + " received, " + (d.readings_lost ?? 0) + " lost"],
    ["agent dropped", String(d.agent_drops ?? 0)],
  ];
  const metrics = Object.entries(d.metrics || {});
  const dl = el("dl");
  dl.id = "dev-details";
  const add = (k, v, cls) => {
    const div = el("div", cls); div.append(el("dt", "", k), el("dd", "", v)); dl.append(div);
  };
  for (const [k, v] of metrics) add(k, String(v), "metric");
  for (const [k, v] of items) add(k, v);
  return dl;
}

function eventList(now) {
  const ul = el("ul");
  ul.id = "dev-events";
  let items = [];  // [time, from, to, reason]
  if (dev.hist) {
    const segs = dev.hist.segments;
    segs.forEach((s, i) => {
      if (s.from <= dev.hist.since) return;  // the window's start, not a change
      const prev = i > 0 && segs[i - 1].to >= s.from && segs[i - 1].state !== s.state
        ? segs[i - 1].state : null;  // the same state again (a restart, say): no arrow
      items.push([s.from, prev, s.state, s.reason]);
    });
  } else if (dev.events) {
    items = dev.events.map((e) => [e.time, e.from, e.to, e.reason]);
  }
  items.reverse();
  if (!items.length) ul.append(el("li", "muted", "no changes in the last 7 days"));
  for (const [t, from, to, reason] of items.slice(0, 200)) {
    const li = el("li");
    const when = el("span", "when", clock(t, true) + " (" + ago(now - t) + ")");
    li.append(when);
    if (from) li.append(el("span", "state " + from, from), document.createTextNode(" → "));
    li.append(el("span", "state " + to, to), el("span", "muted", " " + reasonText(reason)));
    ul.append(li);
  }
  if (items.length > 200) ul.append(el("li", "muted", "and " + (items.length - 200) + " older"));
  return ul;
}

function alertBox(d, now) {
  const box = el("div");
  box.id = "dev-alerts";
  if (dev.alerts === null) { box.append(el("p", "muted", "Alerting is off on this collector.")); return box; }
  if (!dev.alerts.length) box.append(el("p", "muted", "No active alerts."));
  else {
    const t = el("table"), body = el("tbody");
    for (const a of dev.alerts) {
      const tr = el("tr", a.suppressed ? "quiet" : "");
      tr.dataset.alert = a.name;
      const sev = el("td"); sev.append(el("span", "sev " + a.severity, a.severity));
      const st = el("td"); suppressedCell(st, a.suppressed);
      tr.append(sev, el("td", "", a.name + (a.value !== null && a.value !== undefined ? " (" + a.value + ")" : "")),
                el("td", "num", ago(now - a.started)), st);
      body.append(tr);
    }
    t.append(body);
    box.append(t);
  }
  const mine = (dev.silences || []).filter((s) => silenceApplies(s, d.id, d.tags));
  const h = el("h2", "", "Silences");
  box.append(h);
  if (!mine.length) box.append(el("p", "muted", "None in force."));
  for (const s of mine) {
    const p = el("p", "silence");
    p.append(el("span", "badge silenced", "silenced"),
             document.createTextNode("until " + clock(s.until, true) + " (" + span(s.until - now) + " left)" +
                                     (s.comment ? ": " + s.comment : "")));
    box.append(p);
  }
  return box;
}

function renderDevice() {
  const page = $("device-page");
  const back = el("a", "back", "← all devices");
  back.setAttribute("href", "#" + fleetHash());
  const top = el("div", "top");
  top.append(back, el("h2", "dev", dev.id));
  if (dev.status === 404 || dev.status === 400 || !dev.device) {  // 400: not a device id at all
    page.replaceChildren(top, el("p", "muted", dev.status === 404 || dev.status === 400
      ? "No device " + dev.id + " on this collector (never heard from, or forgotten)." : "loading…"));
    return;
  }
  const d = dev.device, now = dev.time;
  top.append(el("span", "state " + d.state, d.state),
             el("span", "muted", "since " + (d.state_since ? ago(now - d.state_since) : "–")));
  for (const [k, v] of Object.entries(d.tags || {})) {
    const t = el("span", "tag", k + ":" + v);
    t.title = shown(k + ":" + v);
    top.append(t);
  }
  const hist = dev.hist;
  const av = (hist && hist.availability) || d.availability;
  const parts = [top, card("Availability", availabilityFigures(av, now))];
  if (hist) {
    const key = el("div", "legend"); legend(key);
    parts.push(card("State, last 7 days", weekStrip(hist), key));
    const hours = hist.hours || [];
    const lossCard = hours.some((h) => h.expected > 0)
      ? drawLossBars(hours, hist.since, hist.until, 960, 150)
      : el("p", "muted", "no heartbeats counted in these 7 days");
    parts.push(card("Heartbeat loss per hour (lost = expected − received)", lossCard));
  } else {
    parts.push(card("History", el("p", "muted", "No history to show (HTTP " + dev.histStatus +
      (dev.histError ? ": " + dev.histError : "") + "); the events below are the collector's recent ones.")));
  }
  const cols = el("div", "cols");
  cols.append(card("Last metrics and counters", detailList(d, now)), card("Alerts", alertBox(d, now)));
  parts.push(cols, card(hist ? "Events, last 7 days" : "Recent events", eventList(now)));
  page.replaceChildren(...parts);
  document.title = dev.id + " " + d.state + " · fleetbeat";
}
