// The weir console: relations and their SQL, a view's dataflow graph, live rows from
// SUBSCRIBE (Server-Sent Events), source charts, and a SQL box. No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const KINDS = [["sources", "SOURCES", "SOURCE"], ["tables", "TABLES", "TABLE"],
  ["views", "MATERIALIZED VIEWS", "MATERIALIZED VIEW"], ["sinks", "SINKS", "SINK"]];
const HISTORY = 60;
const state = { selected: null, events: null, sources: new Map(), lastPoll: null };

function quoteIdent(name) { return '"' + name.replace(/"/g, '""') + '"'; }

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Runs SQL through POST /api/v1/query; resolves to the results, rejects with the error.
async function sql(text) {
  const r = await fetch("/api/v1/query", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ sql: text }),
  });
  const body = await r.json();
  if (body.error) throw new Error(body.error.sqlstate + ": " + body.error.message);
  return body.results;
}

function fillTable(table, columns, rows) {
  table.replaceChildren(el("tr", {}, ...columns.map((c) => el("th", {}, c))));
  for (const row of rows) {
    table.append(el("tr", {}, ...row.map((v) => el("td", {}, v === null ? "NULL" : String(v)))));
  }
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  return (n / (1 << 20)).toFixed(1) + " MiB";
}

async function loadRelations() {
  for (const [id, plural, kind] of KINDS) {
    const [result] = await sql("SHOW " + plural);
    const list = $(id);
    list.replaceChildren(...result.rows.map(([name]) => {
      const li = el("li", { class: "relation", "data-kind": kind, "data-name": name }, name);
      if (state.selected && state.selected.name === name) li.classList.add("selected");
      li.onclick = () => openRelation(kind, name);
      return li;
    }));
  }
}

// Shows one relation: its columns and SQL; for a view also its graph and live rows.
async function openRelation(kind, name) {
  state.selected = { kind, name };
  if (state.events) { state.events.close(); state.events = null; }
  document.querySelectorAll(".relation").forEach((li) =>
    li.classList.toggle("selected", li.dataset.name === name));
  $("overview").hidden = true;
  $("detail").hidden = false;
  $("detail-name").textContent = kind.toLowerCase() + " " + name;
  const [cols] = await sql("DESCRIBE " + quoteIdent(name));
  fillTable($("columns"), ["column", "type", "primary key"], cols.rows);
  try {
    const [create] = await sql("SHOW CREATE " + kind + " " + quoteIdent(name));
    $("create-sql").textContent = create.rows.length ? create.rows[0][1] : "";
  } catch (e) { $("create-sql").textContent = e.message; }
  const isView = kind === "MATERIALIZED VIEW";
  $("chart-box").hidden = true;
  $("live").replaceChildren();
  $("live-note").textContent = "";
  $("view-only").hidden = !isView;
  if (isView) {
    await drawGraph(name);
    live(name, cols.rows);
  }
}

// The dataflow as layers: an operator sits one layer right of its furthest input.
async function drawGraph(name) {
  const r = await fetch("/api/v1/dataflows/" + encodeURIComponent(name));
  const g = await r.json();
  const area = $("graph");
  area.replaceChildren();
  if (g.error) { $("graph-note").textContent = g.error.message; return; }
  $("graph-note").textContent = "parallelism " + g.parallelism;
  const nodes = g.inputs.map((input, i) => ({ key: "in" + i, input, layer: 0, to: input.operator }));
  const level = new Map();
  for (const op of g.operators) level.set(op.id, Math.max(1, level.get(op.id) || 1));
  for (const op of g.operators) {
    for (const out of op.outputs) level.set(out.to, Math.max(level.get(out.to) || 1, level.get(op.id) + 1));
  }
  for (const op of g.operators) nodes.push({ key: "op" + op.id, op, layer: level.get(op.id) });
  // Layers run top to bottom (a pipeline stays narrow); siblings sit side by side.
  const perLayer = new Map();
  const W = 300, H = 46, GX = 30, GY = 28;
  for (const n of nodes) {
    const column = perLayer.get(n.layer) || 0;
    perLayer.set(n.layer, column + 1);
    n.x = 10 + column * (W + GX);
    n.y = 10 + n.layer * (H + GY);
  }
  const pos = new Map(nodes.map((n) => [n.key, n]));
  const edge = (a, b, exchange) => {
    area.append(svg("line", { x1: a.x + W / 2, y1: a.y + H, x2: b.x + W / 2, y2: b.y,
      class: exchange ? "exchange" : "plain" }));
    if (exchange) {
      area.append(svg("text", { x: (a.x + b.x + W) / 2 + 6, y: (a.y + H + b.y) / 2 + 4 }, "exchange: " + exchange));
    }
  };
  for (const n of nodes) {
    if (n.input) edge(n, pos.get("op" + n.to));
    else for (const out of n.op.outputs) edge(n, pos.get("op" + out.to), out.exchange);
  }
  for (const n of nodes) {
    const group = svg("g", { class: n.input ? "input" : "operator",
      "data-operator": n.input ? "input" : n.op.operator.split(/[ (]/)[0] });
    group.append(svg("rect", { x: n.x, y: n.y, width: W, height: H }));
    const label = n.input ? "input " + n.input.relation : n.op.id + ": " + n.op.operator;
    group.append(svg("title", {}, label));
    group.append(svg("text", { x: n.x + 6, y: n.y + 17 }, label.length > 44 ? label.slice(0, 43) + "…" : label));
    if (!n.input) {
      group.append(svg("text", { x: n.x + 6, y: n.y + 35, class: "stats" },
        n.op.rows + " rows in · " + bytes(n.op.state_bytes) + " state"));
    }
    area.append(group);
  }
  const layers = Math.max(...nodes.map((n) => n.layer)) + 1;
  const columns = Math.max(...perLayer.values());
  area.setAttribute("width", 20 + columns * (W + GX) + 160);
  area.setAttribute("height", 20 + layers * (H + GY));
}

// Keeps the view's rows from its SUBSCRIBE stream: row -> count, diffs applied per commit.
function live(name, columns) {
  const counts = new Map();
  let names = [];
  let commits = 0;
  const timeCol = columns.findIndex(([, type]) => type.startsWith("timestamp"));
  const numCol = columns.findIndex(([, type], i) => i !== timeCol && /int|numeric|double|real/.test(type));
  const events = new EventSource("/api/v1/subscribe/" + encodeURIComponent(name));
  state.events = events;
  events.addEventListener("columns", (e) => {
    names = JSON.parse(e.data).map((c) => c.name).filter((n) => n !== "weir_ts" && n !== "weir_diff");
  });
  events.addEventListener("changes", (e) => {
    let ts = 0;
    for (const row of JSON.parse(e.data)) {
      ts = row.weir_ts;
      const key = JSON.stringify(names.map((n) => row[n]));
      const n = (counts.get(key) || 0) + row.weir_diff;
      if (n === 0) counts.delete(key); else counts.set(key, n);
    }
    commits += 1;
    const rows = [];
    for (const [key, n] of counts) for (let i = 0; i < n && rows.length < 500; i++) rows.push(JSON.parse(key));
    rows.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
    fillTable($("live"), names, rows);
    $("live-note").textContent = rows.length + " rows · " + commits + " commits · last at "
      + new Date(ts).toISOString().slice(11, 23);
    $("live").dataset.commits = commits;
    if (timeCol >= 0 && numCol >= 0) {
      $("chart-box").hidden = false;
      chart($("chart"), rows.map((r) => [Date.parse(r[timeCol] + "Z"), Number(r[numCol])]));
    }
  });
  events.addEventListener("error", (e) => {
    if (e.data) $("live-note").textContent = JSON.parse(e.data).message;
  });
}

// A line through (x, y) points, sorted by x.
function chart(area, points, width = 600, height = 160) {
  area.setAttribute("width", width);
  area.setAttribute("height", height);
  points = points.filter(([x, y]) => isFinite(x) && isFinite(y)).sort((a, b) => a[0] - b[0]);
  area.replaceChildren();
  if (points.length < 2) return;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)];
  const sx = (x) => 30 + ((x - x0) / (x1 - x0 || 1)) * (width - 40);
  const sy = (y) => height - 15 - ((y - y0) / (y1 - y0 || 1)) * (height - 30);
  area.append(svg("polyline", { points: points.map(([x, y]) => sx(x) + "," + sy(y)).join(" ") }));
  area.append(svg("text", { x: 2, y: 12, "font-size": 10 }, String(y1)));
  area.append(svg("text", { x: 2, y: height - 3, "font-size": 10 }, String(y0)));
}

// Every second: per source, rows/s, lag and watermark delay over the last minute.
async function pollSources() {
  const [progress] = await sql("SELECT source_name, rows, lag, watermark FROM weir_catalog.source_progress");
  const now = Date.now();
  const totals = new Map();
  for (const [name, rows, lag, watermark] of progress.rows) {
    const t = totals.get(name) || { rows: 0, lag: 0, watermark: null };
    t.rows += rows; t.lag += lag;
    const w = watermark === null ? null : Date.parse(watermark + "Z");
    if (w !== null && (t.watermark === null || w < t.watermark)) t.watermark = w;
    totals.set(name, t);
  }
  const area = $("source-charts");
  for (const [name, t] of totals) {
    let s = state.sources.get(name);
    if (!s) {
      s = { rate: [], lag: [], delay: [], last: null, charts: {} };
      const box = el("div", { class: "source", "data-source": name }, el("h3", {}, name));
      for (const [key, title] of [["rate", "rows/s"], ["lag", "lag (messages)"], ["delay", "watermark delay (s)"]]) {
        const chartBox = el("div", { class: "chart" }, el("div", { class: "title" }, title));
        s.charts[key] = svg("svg", { width: 260, height: 90 });
        chartBox.append(s.charts[key]);
        box.append(chartBox);
      }
      area.append(box);
      state.sources.set(name, s);
    }
    if (s.last) s.rate.push([now, ((t.rows - s.last.rows) * 1000) / (now - s.last.at)]);
    s.last = { rows: t.rows, at: now };
    s.lag.push([now, t.lag]);
    if (t.watermark !== null) s.delay.push([now, (now - t.watermark) / 1000]);
    for (const key of ["rate", "lag", "delay"]) {
      s[key] = s[key].slice(-HISTORY);
      chart(s.charts[key], s[key], 260, 90);
    }
  }
  const [flows] = await sql("SELECT name, rows, state_bytes, parallelism, last_checkpoint, error FROM weir_catalog.dataflows");
  fillTable($("dataflows"), flows.columns.map((c) => c.name), flows.rows);
}

async function runSql() {
  const out = $("sql-result");
  out.replaceChildren();
  try {
    for (const result of await sql($("sql-input").value)) {
      if (result.columns) {
        const table = el("table");
        fillTable(table, result.columns.map((c) => c.name), result.rows);
        out.append(table);
      }
      out.append(el("div", { class: "note" }, result.tag));
    }
  } catch (e) {
    out.append(el("div", { class: "error" }, e.message));
  }
  loadRelations();
}

async function tick() {
  try {
    await loadRelations();
    if ($("detail").hidden) await pollSources();
    $("status").textContent = "live · " + new Date().toISOString().slice(11, 19) + " UTC";
  } catch (e) {
    $("status").textContent = e.message;
  }
}

$("sql-run").onclick = runSql;
$("home").onclick = (e) => {
  e.preventDefault();
  if (state.events) { state.events.close(); state.events = null; }
  state.selected = null;
  $("detail").hidden = true;
  $("overview").hidden = false;
  document.querySelectorAll(".relation").forEach((li) => li.classList.remove("selected"));
};
tick();
setInterval(tick, 1000);
