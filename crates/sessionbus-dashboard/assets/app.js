// sessionbus dashboard: three pages (sessions, one session, workers) drawn from the
// dashboard's JSON reads and kept live by its server-sent events (/api/events).
//
// Every text that comes from the bus (node text, ids, errors, worker names) reaches the
// DOM through textContent or an attribute set with setAttribute: never innerHTML.
"use strict";

const main = document.getElementById("main");
const PAGE = 5000; // nodes per graph request (the server's most)
const TURN_PAGE = 200; // turns per history request (the bus's most)
const TURN_PAGES = 5; // history requests a session page makes at most
const LIVE_CHARS = 100000; // streamed characters a session page shows of one turn at most
let config = { jaeger_url: null };
let leaving = []; // what the current page must stop (event sources, timers) when left

// ---- DOM helpers -------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

/** A span of one class holding `text` as text. */
function textSpan(className, text) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function short(id) {
  return id && id.length > 12 ? id.slice(0, 8) + "…" : id || "";
}

/** "1 node", "3 nodes". */
function plural(n, noun) {
  return n + " " + noun + (n === 1 ? "" : "s");
}

function ago(ms) {
  if (ms < 1000) return ms.toFixed(0) + " ms ago";
  return (ms / 1000).toFixed(1) + " s ago";
}

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

/** Live events (all sessions, or one): calls onEvent with each parsed event. */
function liveEvents(session, onEvent) {
  const url = session ? "/api/events?session=" + encodeURIComponent(session) : "/api/events";
  const source = new EventSource(url);
  const badge = document.getElementById("live");
  source.onopen = () => { badge.textContent = "live"; badge.className = "live on"; };
  source.onerror = () => { badge.textContent = "reconnecting…"; badge.className = "live off"; };
  source.onmessage = (message) => {
    try { onEvent(JSON.parse(message.data)); } catch (err) { console.error(err); }
  };
  leaving.push(() => source.close());
  return source;
}

function every(ms, fn) {
  const timer = setInterval(fn, ms);
  leaving.push(() => clearInterval(timer));
}

// ---- sessions ----------------------------------------------------------------------

function sessionsPage(params) {
  const status = params.get("status") || "";
  const parent = params.get("parent") || "";
  const after = params.get("after") || "";
  const statusSelect = el("select", { id: "filter-status" },
    el("option", { value: "" }, "any status"), el("option", { value: "open" }, "open"), el("option", { value: "closed" }, "closed"));
  statusSelect.value = status;
  const parentInput = el("input", { id: "filter-parent", placeholder: "parent session id", size: 38, value: parent });
  const apply = el("button", { id: "filter-apply" }, "Filter");
  apply.onclick = () => {
    const next = new URLSearchParams();
    if (statusSelect.value) next.set("status", statusSelect.value);
    if (parentInput.value.trim()) next.set("parent", parentInput.value.trim());
    location.hash = "#/sessions?" + next.toString();
  };
  const body = el("tbody", { id: "sessions-body" });
  const note = el("p", { id: "sessions-note", class: "muted" });
  const more = el("a", { id: "sessions-next", hidden: "" }, "next page →");
  main.replaceChildren(
    el("h2", {}, "Sessions"),
    el("div", { class: "filters" }, statusSelect, parentInput, apply),
    el("table", { id: "sessions" },
      el("thead", {}, el("tr", {}, ...["session", "parent", "status", "turns", "tokens", "created", "last activity"].map((h) => el("th", {}, h)))),
      body),
    note, more);

  const rows = new Map(); // session id -> { row, summary }
  function upsert(s) {
    const matches = (!status || s.status === status) && (!parent || s.parent_session_id === parent);
    if (!matches) return;
    let entry = rows.get(s.session_id);
    if (!entry) {
      entry = { row: el("tr", { "data-session": s.session_id }), summary: {} };
      rows.set(s.session_id, entry);
      body.append(entry.row);
    }
    entry.summary = Object.assign(entry.summary, s);
    draw(entry);
  }
  function draw(entry) {
    const s = entry.summary;
    const link = el("a", { href: "#/session/" + encodeURIComponent(s.session_id) }, s.session_id);
    const parentCell = s.parent_session_id
      ? el("a", { href: "#/session/" + encodeURIComponent(s.parent_session_id) }, short(s.parent_session_id)) : "—";
    const state = s.status === "closed" ? "closed" : s.turn_running ? "running" : "open";
    entry.row.dataset.status = state;
    entry.row.replaceChildren(
      el("td", { class: "id" }, link), el("td", { class: "id" }, parentCell),
      el("td", { class: "status-" + state }, state === "running" ? "open · turn running" : state), el("td", {}, s.turn_index),
      el("td", {}, s.tokens), el("td", {}, s.created_at || ""), el("td", { class: "activity" }, s.last_activity || ""));
  }

  const query = new URLSearchParams({ limit: "50" });
  if (status) query.set("status", status);
  if (parent) query.set("parent", parent);
  if (after) query.set("after", after);
  getJson("/api/sessions?" + query.toString())
    .then((page) => {
      for (const s of page.sessions) upsert(s);
      if (page.next_after) {
        const next = new URLSearchParams(query);
        next.delete("limit");
        next.set("after", page.next_after);
        more.setAttribute("href", "#/sessions?" + next.toString());
        more.hidden = false;
      }
      note.textContent = page.sessions.length ? "" : "No sessions yet: run `sessionbus demo`.";
    })
    .catch((err) => { note.textContent = "Could not list sessions: " + err.message; note.className = "error"; });

  liveEvents(null, (event) => {
    const now = new Date().toISOString();
    if (event.kind === "meta") { upsert(Object.assign({}, event.view, { last_activity: now })); return; }
    const entry = rows.get(event.session_id);
    if (!entry) return;
    entry.summary.last_activity = now;
    if (event.kind === "lease") entry.summary.turn_running = event.view.state === "held";
    draw(entry);
  });
}

// ---- one session -------------------------------------------------------------------

/** Draws a graph as rows in append order; a node whose parent already has a child
 *  opens a new lane (a branch); the leaf is marked. Incremental: O(1) per node. */
class GraphView {
  constructor(container) {
    this.container = container;
    this.nodes = new Map(); // id -> { row, lane, children }
    this.lanes = 0;
    this.leaf = null;
  }
  append(nodes) {
    const fragment = document.createDocumentFragment();
    for (const node of nodes) {
      if (this.nodes.has(node.id)) continue;
      const parent = node.parent ? this.nodes.get(node.parent) : null;
      let lane = 0;
      let branch = false;
      if (parent) {
        branch = parent.children > 0;
        lane = branch ? ++this.lanes : parent.lane;
        parent.children += 1;
      } else if (this.nodes.size > 0) {
        branch = true;
        lane = ++this.lanes;
      }
      // Built directly rather than with el(): this runs once per node, 20,000 times for
      // a large graph; the text still goes in through textContent only.
      const row = document.createElement("div");
      row.className = branch ? "node branch" : "node";
      row.dataset.node = node.id;
      row.dataset.lane = lane;
      if (branch) row.append(textSpan("branch-mark", "⑂ branch" + (node.parent ? " from " + short(node.parent) : "")));
      row.append(textSpan("kind", node.kind), textSpan("text", node.text), textSpan("nid", short(node.id)));
      row.style.paddingLeft = 8 + Math.min(lane, 40) * 16 + "px";
      fragment.append(row);
      this.nodes.set(node.id, { row, lane, children: 0 });
    }
    this.container.append(fragment);
  }
  markLeaf(id) {
    if (this.leaf === id) return;
    const previous = this.leaf && this.nodes.get(this.leaf);
    if (previous) { previous.row.classList.remove("leaf"); previous.row.querySelector(".leaf-mark")?.remove(); }
    const next = id && this.nodes.get(id);
    if (next) { next.row.classList.add("leaf"); next.row.append(el("span", { class: "leaf-mark" }, "◀ leaf")); }
    this.leaf = next ? id : null;
    this.container.dataset.leaf = this.leaf || "";
  }
}

function sessionPage(id) {
  const started = performance.now();
  const summary = el("dl", { class: "kv", id: "summary" });
  const lease = el("dl", { class: "kv", id: "lease" });
  const toolsNow = el("div", { id: "tools" });
  const toolHistory = el("tbody", { id: "tool-history" });
  const turnsBody = el("tbody", { id: "turns-body", "data-history": "loading" });
  const turnsNote = el("p", { id: "turns-note", class: "muted" }, "Reading the session's past turns…");
  const toolNote = el("p", { id: "tool-note", class: "muted" });
  const graphBox = el("div", { id: "graph", "data-complete": "false" });
  const graphNote = el("p", { id: "graph-note", class: "muted" });
  const liveBox = el("div", { id: "live-output", "data-state": "idle" });
  const liveNote = el("p", { id: "live-note", class: "muted" }, "No turn has streamed since this page opened.");
  main.replaceChildren(
    el("h2", {}, "Session ", el("span", { class: "id" }, id)),
    el("div", { class: "panels" },
      el("div", { class: "panel" }, el("h3", {}, "Summary"), summary),
      el("div", { class: "panel" }, el("h3", {}, "Lease"), lease),
      el("div", { class: "panel" }, el("h3", {}, "Tools"), toolsNow)),
    el("h3", {}, "Live output"), liveNote, liveBox,
    el("h3", {}, "Turns"),
    el("table", { id: "turns" },
      el("thead", {}, el("tr", {}, ...["turn", "status", "duration", "outcome", "tokens", "worker", "output", "trace"].map((h) => el("th", {}, h)))),
      turnsBody),
    turnsNote,
    el("h3", {}, "Tool generations"),
    el("table", { id: "tool-generations" },
      el("thead", {}, el("tr", {}, ...["generation", "members", "change", "when"].map((h) => el("th", {}, h)))), toolHistory),
    toolNote,
    el("h3", {}, "Graph"), graphNote, graphBox);

  function fill(dl, pairs) {
    dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "—" : String(v))]));
  }

  // Lease: as the turns read on open found it, then each lease event. The renewal's
  // age is counted from the record's own time (unix ms) when it has one, else from
  // when this page got it.
  let leaseState = null;
  let leaseAt = null;
  const holders = new Map(); // turn id -> worker
  function drawLease() {
    if (!leaseState) { fill(lease, [["state", "reading…"]]); return; }
    const pairs = [["state", leaseState.state]];
    if (leaseState.state === "held") {
      pairs.push(["holder", leaseState.holder], ["turn", leaseState.turn_id], ["last renewal", ago(Math.max(0, Date.now() - leaseAt))]);
    }
    fill(lease, pairs);
    lease.dataset.state = leaseState.state;
    lease.dataset.holder = leaseState.state === "held" ? leaseState.holder || "" : "";
  }
  function setLease(v) {
    leaseState = v;
    leaseAt = v.renewed_at_ms === null || v.renewed_at_ms === undefined ? Date.now() : v.renewed_at_ms;
    if (v.state === "held" && v.turn_id) {
      holders.set(v.turn_id, v.holder);
      const entry = turns.get(v.turn_id);
      if (entry) entry.row.children[5].textContent = v.holder || "";
    }
    drawLease();
  }
  drawLease();
  every(500, drawLease);

  // Turns, keyed by turn id.
  const turns = new Map();
  // `past`: a turn of the history read on open, drawn below the live ones and never
  // over a live row (events are newer than the history).
  function drawTurn(t, past) {
    let entry = turns.get(t.turn_id);
    if (entry && past) return;
    if (!entry) {
      entry = { row: el("tr", { "data-turn": t.turn_id }), since: performance.now() };
      turns.set(t.turn_id, entry);
      if (past) turnsBody.append(entry.row); else turnsBody.prepend(entry.row);
    }
    if (t.status === "running") entry.since = performance.now();
    let duration = "…";
    if (t.duration_ms !== null && t.duration_ms !== undefined) duration = (t.duration_ms / 1000).toFixed(2) + " s";
    else if (t.status !== "running" && !past) duration = ((performance.now() - entry.since) / 1000).toFixed(2) + " s";
    else if (t.status !== "running") duration = "—";
    const worker = t.worker || holders.get(t.turn_id) || "";
    let trace = "—";
    if (t.trace_id && config.jaeger_url) {
      trace = el("a", { href: config.jaeger_url + "/trace/" + t.trace_id, target: "_blank", rel: "noopener noreferrer" }, short(t.trace_id));
    } else if (t.trace_id) {
      trace = short(t.trace_id);
    }
    entry.row.dataset.status = t.status;
    if (t.trace_id) entry.row.dataset.trace = t.trace_id;
    entry.row.replaceChildren(
      el("td", { class: "id" }, t.turn_id), el("td", { class: "status-" + t.status }, t.status),
      el("td", {}, duration), el("td", {}, t.outcome || (t.error ? "error: " + t.error : "")),
      el("td", {}, t.tokens), el("td", { class: "id" }, worker), el("td", {}, t.output || ""), el("td", {}, trace));
  }

  // Live output: the running turn's stream (text deltas appended in order, a line per
  // tool start and end), as text. A new turn (or a rerun, from seq 1) starts it afresh;
  // when the turn ends the stream stays, marked with how it ended, until the next one.
  let liveTurn = null;
  let liveSeq = 0;
  let liveChars = 0;
  let liveText = null; // the span deltas are appended to; a tool line starts a new one
  const ended = new Set(); // turns whose ledger says they ended: late live events are dropped
  function drawLive(e) {
    if (ended.has(e.turn_id)) return;
    if (liveTurn !== e.turn_id || e.seq <= liveSeq) {
      liveTurn = e.turn_id; liveSeq = 0; liveChars = 0; liveText = null;
      liveBox.replaceChildren();
      liveBox.dataset.turn = e.turn_id;
      liveBox.dataset.state = "streaming";
      liveNote.textContent = "Turn " + e.turn_id + " is running; its output as it streams:";
    }
    if (e.seq > liveSeq + 1) liveBox.append(el("div", { class: "live-line live-lost" }, "… " + plural(e.seq - liveSeq - 1, "live event") + " not received"));
    liveSeq = e.seq;
    const v = e.view;
    if (v.type === "text") {
      if (liveChars >= LIVE_CHARS) return;
      const text = v.text.slice(0, LIVE_CHARS - liveChars);
      liveChars += text.length;
      if (!liveText) { liveText = textSpan("live-text", ""); liveBox.append(liveText); }
      liveText.append(document.createTextNode(text));
      if (liveChars >= LIVE_CHARS) liveBox.append(el("div", { class: "live-line" }, "… cut at " + LIVE_CHARS + " characters"));
      return;
    }
    liveText = null;
    let line = "error: " + v.text;
    if (v.type === "tool_start") line = "▶ tool " + v.name + " started";
    else if (v.type === "tool_end") line = "■ tool " + v.name + " ended" + (v.duration_ms === null || v.duration_ms === undefined ? "" : " (" + v.duration_ms + " ms)");
    liveBox.append(el("div", { class: "live-line live-" + v.type }, line));
  }
  function liveTurnStatus(t) {
    if (t.status === "running") { ended.delete(t.turn_id); return; }
    ended.add(t.turn_id);
    if (liveTurn !== t.turn_id) return;
    liveBox.dataset.state = t.status;
    liveNote.textContent = "Turn " + t.turn_id + " " + t.status + "; what it streamed (its final output is in the turns table):";
  }

  // Tools: the state now, then every generation, newest first: the history read on
  // open and each generation seen since (a generation is drawn once).
  // A generation from the history (it has `joined`) replaces the live row of it,
  // whose change was only guessed from the row before.
  function drawGeneration(g) {
    const generation = Number(g.generation);
    const drawn = toolHistory.querySelector('[data-generation="' + generation + '"]');
    if (drawn && (!g.joined || drawn.dataset.source === "history")) return;
    const rows = Array.from(toolHistory.children).filter((row) => row !== drawn);
    const older = rows.find((row) => Number(row.dataset.generation) < generation) || null;
    let joined = g.joined, left = g.left;
    if (!joined && older) {
      // A live generation: its change against the generation drawn before it.
      const before = JSON.parse(older.dataset.members);
      joined = g.members.filter((m) => !before.includes(m));
      left = before.filter((m) => !g.members.includes(m));
    }
    const change = [...(joined || []).map((m) => "+" + m), ...(left || []).map((m) => "−" + m)].join(" ");
    const row = el("tr", { "data-generation": generation, "data-members": JSON.stringify(g.members), "data-source": g.joined ? "history" : "live" },
      el("td", {}, generation), el("td", {}, g.members.join(", ")), el("td", { class: "change" }, change),
      el("td", {}, g.at ? new Date(g.at).toLocaleTimeString() : "live"));
    if (drawn) drawn.replaceWith(row); else toolHistory.insertBefore(row, older);
  }
  function drawTools(generation, members) {
    toolsNow.replaceChildren(el("p", {}, "generation " + generation + ": " + (members.length ? members.join(", ") : "no member tools")));
    toolsNow.dataset.generation = generation;
    if (Number(generation) > 0) drawGeneration({ generation, members });
  }
  getJson("/api/sessions/" + encodeURIComponent(id) + "/tools")
    .then((t) => drawTools(t.generation, t.members))
    .catch((err) => toolsNow.replaceChildren(el("p", { class: "error" }, err.message)));
  getJson("/api/sessions/" + encodeURIComponent(id) + "/tool-history")
    .then((h) => {
      for (const g of h.generations) drawGeneration(g);
      toolNote.textContent = h.truncated ? "Older generations are no longer kept." : "";
      toolHistory.dataset.history = "loaded";
    })
    .catch((err) => { toolNote.textContent = "Could not read the tool history: " + err.message; toolNote.className = "error"; });

  // Past turns: the ledger's pages (oldest first), at most TURN_PAGES of them.
  async function loadTurns() {
    await configLoaded;
    const past = [];
    let after = null;
    for (let page = 0; page < TURN_PAGES; page++) {
      const url = "/api/sessions/" + encodeURIComponent(id) + "/turns?limit=" + TURN_PAGE + (after ? "&after=" + encodeURIComponent(after) : "");
      const body = await getJson(url);
      // The lease as the first page read it, unless an event already said newer.
      if (body.lease && !leaseState) setLease(body.lease);
      past.push(...body.turns);
      after = body.next_after;
      if (!after) break;
    }
    for (const t of past.reverse()) drawTurn(t, true);
    turnsBody.dataset.history = "loaded";
    turnsNote.textContent = past.length + (past.length === 1 ? " past turn" : " past turns") + " read from the session's ledger" +
      (after ? " (the oldest " + past.length + " only)" : "") + "; new turns appear live.";
  }
  loadTurns().catch((err) => { turnsNote.textContent = "Could not read the past turns: " + err.message; turnsNote.className = "error"; });

  // Graph: pages drawn as they arrive; events append while it loads (ids dedupe).
  const graph = new GraphView(graphBox);
  let leaf = null;
  let loading = true;
  let fetched = 0;
  let headMs = 0;
  const pending = []; // graph events that arrive while the pages load, drawn after them
  let drawnOnOpen = "";
  function drawGraphNote() {
    graphNote.textContent = plural(graph.nodes.size, "node") + (drawnOnOpen ? " (on open: " + drawnOnOpen + ")" : "");
  }
  async function loadGraph() {
    const head = await getJson("/api/sessions/" + encodeURIComponent(id));
    fill(summary, [["turns", head.turn_index], ["tokens", head.tokens], ["graph nodes", head.graph_size], ["tool generation", head.tool_state_generation]]);
    leaf = leaf || head.leaf;
    headMs = performance.now() - started;
    graph.append(head.nodes);
    // The rest of the graph as of the first page: every page asked at once (the
    // workers serve them in parallel), drawn in order as they arrive.
    const pageUrl = (after, asOf) => "/api/sessions/" + encodeURIComponent(id) + "/graph?after=" + after + "&limit=" + PAGE +
      (asOf === null || asOf === undefined ? "" : "&as_of=" + asOf);
    const pages = [];
    if (head.next !== null && head.next !== undefined) {
      for (let after = head.next; after < head.as_of; after += PAGE) pages.push(getJson(pageUrl(after, head.as_of)));
    }
    for (const request of pages) graph.append((await request).nodes);
    fetched = performance.now() - started;
    for (const nodes of pending) graph.append(nodes);
    graph.markLeaf(leaf);
    loading = false;
    const ms = performance.now() - started;
    drawnOnOpen = plural(graph.nodes.size, "node") + " drawn in " + ms.toFixed(0) + " ms";
    drawGraphNote();
    graphBox.dataset.complete = "true";
    graphBox.dataset.drawnMs = ms.toFixed(1);
    graphBox.dataset.count = graph.nodes.size;
    graphBox.dataset.fetchedMs = fetched.toFixed(1);
    graphBox.dataset.headMs = headMs.toFixed(1);
  }
  loadGraph().catch((err) => { graphNote.textContent = "Could not read the session: " + err.message; graphNote.className = "error"; });

  liveEvents(id, (event) => {
    const v = event.view;
    if (event.kind === "lease") {
      setLease(v);
    } else if (event.kind === "live") {
      drawLive(event);
    } else if (event.kind === "turn") {
      drawTurn(v);
      liveTurnStatus(v);
    } else if (event.kind === "graph") {
      if (loading) pending.push(v.nodes); else { graph.append(v.nodes); drawGraphNote(); }
      if (v.leaf) { leaf = v.leaf; if (!loading) graph.markLeaf(v.leaf); }
    } else if (event.kind === "tools") {
      drawTools(v.generation, v.members);
    } else if (event.kind === "meta") {
      const current = Array.from(summary.querySelectorAll("dd")).map((d) => d.textContent);
      fill(summary, [["turns", v.turn_index], ["tokens", v.tokens], ["graph nodes", graph.nodes.size], ["tool generation", current[3] || "—"],
        ["status", v.status], ["parent", v.parent_session_id]]);
    }
  });
}

// ---- workers -----------------------------------------------------------------------

const history = new Map(); // worker id -> [total requests per poll]

function barChart(endpoints) {
  const width = 400, row = 14;
  const max = Math.max(1, ...endpoints.map((e) => e.requests));
  const chart = svg("svg", { class: "chart", width, height: endpoints.length * row + 4, role: "img" });
  endpoints.forEach((e, i) => {
    const label = svg("text", { x: 0, y: i * row + 11 });
    label.textContent = e.name;
    const bar = svg("rect", { x: 130, y: i * row + 2, height: 10, width: Math.max(1, (e.requests / max) * 220) });
    const errors = svg("rect", { class: "err", x: 130, y: i * row + 2, height: 10, width: e.errors ? Math.max(1, (e.errors / max) * 220) : 0 });
    const count = svg("text", { x: 355, y: i * row + 11 });
    count.textContent = e.requests + (e.errors ? " / " + e.errors + " err" : "");
    chart.append(label, bar, errors, count);
  });
  return chart;
}

function sparkline(values) {
  const width = 400, height = 36;
  const chart = svg("svg", { class: "chart sparkline", width, height, role: "img" });
  if (values.length > 1) {
    const rates = values.slice(1).map((v, i) => Math.max(0, v - values[i]));
    const max = Math.max(1, ...rates);
    const points = rates.map((r, i) => (i * width / Math.max(1, rates.length - 1)).toFixed(1) + "," + (height - 2 - (r / max) * (height - 6)).toFixed(1));
    chart.append(svg("polyline", { points: points.join(" ") }));
    const label = svg("text", { x: 2, y: 10 });
    label.textContent = "requests per 2 s, max " + max;
    chart.append(label);
  }
  return chart;
}

function workersPage() {
  const cards = el("div", { class: "cards", id: "workers" });
  const note = el("p", { id: "workers-note", class: "muted" });
  main.replaceChildren(el("h2", {}, "Workers"), note, cards);
  const badge = document.getElementById("live");
  badge.textContent = "polling every 2 s";
  badge.className = "live on";
  async function poll() {
    try {
      const view = await getJson("/api/workers");
      note.textContent = view.workers.length + " workers answered $SRV.STATS";
      note.className = "muted";
      cards.replaceChildren(...view.workers.map((w) => {
        const total = w.endpoints.reduce((sum, e) => sum + e.requests, 0);
        const series = history.get(w.id) || [];
        series.push(total);
        if (series.length > 60) series.shift();
        history.set(w.id, series);
        const rows = w.endpoints.map((e) => el("tr", {},
          el("td", {}, e.name), el("td", {}, e.requests), el("td", {}, e.errors),
          el("td", {}, Object.entries(e.errors_by_code).map(([code, n]) => code + "×" + n).join(" ") || "—"),
          el("td", {}, e.refused_replies), el("td", {}, e.average_ms.toFixed(3))));
        return el("div", { class: "panel worker", "data-worker": w.worker_id },
          el("h3", {}, "worker ", el("span", { class: "id" }, w.worker_id), " ", el("span", { class: "muted" }, "v" + w.version)),
          sparkline(series), barChart(w.endpoints),
          el("table", {}, el("thead", {}, el("tr", {}, ...["endpoint", "requests", "errors", "by code", "refused", "avg ms"].map((h) => el("th", {}, h)))),
            el("tbody", {}, ...rows)));
      }));
    } catch (err) {
      note.textContent = "Could not read the workers: " + err.message;
      note.className = "error";
    }
  }
  poll();
  every(2000, poll);
}

// ---- routing -----------------------------------------------------------------------

function route() {
  for (const stop of leaving) stop();
  leaving = [];
  const hash = location.hash || "#/sessions";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  document.getElementById("nav-sessions").classList.toggle("active", path.startsWith("/session"));
  document.getElementById("nav-workers").classList.toggle("active", path === "/workers");
  if (path.startsWith("/session/")) sessionPage(decodeURIComponent(path.slice("/session/".length)));
  else if (path === "/workers") workersPage();
  else sessionsPage(params);
}

window.addEventListener("hashchange", route);
// The config (the Jaeger link): live turn rows use it once it is read; past turns wait for it.
const configLoaded = getJson("/api/config").then((c) => { config = c; }).catch(() => {});
route();
