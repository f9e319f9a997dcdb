// tickcast dashboard: the quote table, built on the project's JavaScript
// client (served at /tickcast-client.js from clients/js/src/index.js),
// which keeps one WebSocket to /ws subscribed to every symbol, reconnects
// with backoff and resumes with `from` (docs/PROTOCOL.md), and hands over
// prices as their exact decimal text. Events only update the state kept
// per symbol; a requestAnimationFrame loop repaints the rows that changed,
// once per frame, so the page stays smooth under a fast feed. Symbols a
// feed starts later come by themselves to a plain `*`; a throttled one
// covers the symbols of its time, so the page subscribes newer ones it
// finds in GET /symbols.

import { TickcastClient } from "/tickcast-client.js";

const params = new URLSearchParams(location.search);

/** Updates per second asked of the server for each symbol; 0: every tick. */
const MAX_HZ = numberParam("max_hz", 4);
/** Prices kept for each sparkline. */
const SPARK_POINTS = 60;
/** Sparkline size in CSS pixels, as in dashboard.css. */
const SPARK_WIDTH = 96;
const SPARK_HEIGHT = 24;
/** Meters (rate, latency) refresh this often. */
const METER_EVERY_MS = 500;
/**
 * GET /symbols is checked this often for symbols the feed added since the
 * subscribe: a throttled `*` (or one under a token covering only some
 * symbols) covers the symbols that existed when it was sent.
 */
const NEW_SYMBOLS_EVERY_MS = 10_000;

const byId = (id) => document.getElementById(id);
const ui = {
  status: byId("status"),
  statusText: byId("status-text"),
  notice: byId("notice"),
  filter: byId("filter"),
  rows: byId("rows"),
  empty: byId("empty"),
  shown: byId("shown"),
  template: byId("row-template"),
  meterSymbols: byId("meter-symbols"),
  meterRate: byId("meter-rate"),
  meterLatency: byId("meter-latency"),
  meterTicks: byId("meter-ticks"),
};

// Read by tests and handy in the console: ticks applied, symbols that
// restarted from a reset snapshot, connections that resumed with `from`.
const counters = { ticks: 0, resets: 0, resumes: 0 };
window.tickcast = counters;

const count = new Intl.NumberFormat("en-US");

function numberParam(name, fallback) {
  const value = Number(params.get(name));
  return params.has(name) && Number.isFinite(value) && value >= 0 ? value : fallback;
}

// ------------------------------------------------------------------ prices
//
// The client hands every price over as the exact decimal text the server
// sent (187.67, 1.08435, 0.0001, 100), at most 8 decimals. A price is
// shown from that text, never from a binary float: with thousands
// separators and at least two decimals (187.20, 1,234.50), and every
// decimal it has beyond two (1.08435). Changes are worked out exactly, in
// whole 10⁻⁸ units.

/** 10⁸: units in 1. */
const SCALE = 100_000_000n;

const DECIMAL = /^(-?)([0-9]+)(?:\.([0-9]+))?$/;

/** The price `text` for display: 1,234.50, 1.08435, -3.25. */
function showPrice(text) {
  const m = DECIMAL.exec(text);
  if (m === null) return text;
  const whole = m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${m[1]}${whole}.${(m[3] || "").padEnd(2, "0")}`;
}

/** The price `text` in 10⁻⁸ units (later decimals, if any, dropped). */
function unitsOf(text) {
  const m = DECIMAL.exec(text);
  if (m === null) return null;
  const units = BigInt(m[2]) * SCALE + BigInt((m[3] || "").slice(0, 8).padEnd(8, "0"));
  return m[1] === "-" ? -units : units;
}

/** The shortest decimal text of `units` 10⁻⁸ units. */
function textOf(units) {
  const negative = units < 0n;
  const magnitude = negative ? -units : units;
  const fraction = (magnitude % SCALE).toString().padStart(8, "0").replace(/0+$/, "");
  return `${negative ? "-" : ""}${magnitude / SCALE}${fraction ? "." + fraction : ""}`;
}

/** A price field as text, or null where there is none. */
function priceText(value) {
  return typeof value === "string" && DECIMAL.test(value) ? value : null;
}

// ------------------------------------------------------------------- state

/** Symbol → its quote and row. */
const quotes = new Map();
/** Symbols in table order (alphabetical), parallel to the rows. */
const order = [];
/** Quotes changed since the last frame. */
const dirty = new Set();
let filterText = "";

/**
 * The subscription is a plain `*` (no max_hz, no token), to which the
 * server sends each new symbol by itself.
 */
const plainStar = MAX_HZ === 0 && !params.get("token");
let checkingSymbols = false;
/**
 * The last resume: the symbols it carried on, those still waiting for
 * their first message, and those that came back with a reset.
 */
let resume = null;

// Figures for the meters.
let windowTicks = 0;
let windowStart = performance.now();
let lastLatencyMs = null;
let metersDue = 0;

function quoteFor(sym) {
  let q = quotes.get(sym);
  if (!q) {
    q = createRow(sym);
    quotes.set(sym, q);
  }
  return q;
}

/** Creates the row of `sym` once, in alphabetical place. */
function createRow(sym) {
  const row = ui.template.content.firstElementChild.cloneNode(true);
  row.dataset.sym = sym;
  const cell = (name) => row.querySelector("." + name);
  const q = {
    sym,
    row,
    cells: {
      px: cell("quote"), chg: cell("chg"), pct: cell("pct"), bid: cell("bid"),
      ask: cell("ask"), size: cell("size"), seq: cell("seq"), spark: cell("spark"),
    },
    seq: 0, size: null,
    /** Last price as a number (for the sparkline only), its text and units. */
    px: null, pxText: null, pxUnits: null,
    /** Bid and ask as their text. */
    bid: null, ask: null,
    /** First price this page saw, in units: the base of the change columns. */
    open: null,
    history: [],
    /** What the row shows now, so unchanged cells are not touched. */
    shown: {},
    /** Alternates the flash animation's name, which restarts it. */
    flip: 0,
  };
  cell("sym").textContent = sym;
  q.cells.px.textContent = "–";
  row.hidden = !matchesFilter(sym);

  let lo = 0;
  let hi = order.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (order[mid] < sym) lo = mid + 1;
    else hi = mid;
  }
  ui.rows.insertBefore(row, ui.rows.children[lo] || null);
  order.splice(lo, 0, sym);
  ui.empty.hidden = true;
  ui.meterSymbols.textContent = count.format(order.length);
  updateShown();
  return q;
}

/** Takes a tick, snapshot or reset into the state; painted on the next frame. */
function apply(t) {
  const q = quoteFor(t.sym);
  const pxText = priceText(t.px);
  if (pxText === null) return;
  const pxUnits = unitsOf(pxText);
  if (q.open === null) q.open = pxUnits;
  q.seq = t.seq;
  q.px = Number(pxText);
  q.pxText = pxText;
  q.pxUnits = pxUnits;
  q.bid = priceText(t.bid);
  q.ask = priceText(t.ask);
  q.size = t.size;
  q.history.push(q.px);
  if (q.history.length > SPARK_POINTS) q.history.shift();
  dirty.add(q);
}

// -------------------------------------------------------------- connection

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

const client = new TickcastClient(socketUrl(), { token: params.get("token") || undefined });
client.subscribe("*", { maxHz: MAX_HZ > 0 ? MAX_HZ : undefined, batch: true });

client.on("tick", (t) => {
  if (resume !== null) resume.pending.delete(t.sym);
  apply(t);
  counters.ticks += 1;
  windowTicks += 1;
  if (typeof t.ts === "number") lastLatencyMs = Date.now() - t.ts / 1e6;
});

client.on("snapshot", (s) => {
  if (resume !== null) resume.pending.delete(s.sym);
  apply(s);
});

client.on("reset", (s) => {
  const resumed = resume !== null && resume.pending.delete(s.sym);
  apply(s);
  counters.resets += 1;
  if (resumed) {
    resume.reset.add(s.sym);
    showResume();
  } else {
    notify("warn", `${s.sym} skipped ticks the server could not deliver; it restarted from a fresh quote (seq ${s.seq}).`);
  }
});

// Rows for every symbol the server confirms, priced or not yet.
client.on("subscribed", ({ symbols }) => {
  for (const sym of symbols) quoteFor(sym);
});

let retryAt = 0;
let retryWhy = "";

client.on("state", (change) => {
  switch (change.state) {
    case "connecting":
      setStatus("connecting", "connecting…");
      break;
    case "open": {
      retryAt = 0;
      setStatus("live", "live");
      // The symbols the page had prices of, resumed where it left off.
      const carried = [...quotes.values()].filter((q) => q.seq > 0).map((q) => q.sym);
      if (change.resumed > 0) {
        counters.resumes += 1;
        resume = { total: change.resumed, pending: new Set(carried), reset: new Set() };
        showResume();
      } else {
        resume = null;
      }
      break;
    }
    case "reconnecting":
      if (change.delayMs !== undefined) {
        retryAt = Date.now() + change.delayMs;
        retryWhy = change.reason || "connection lost";
        showCountdown();
      } else if (ui.status.dataset.state !== "reconnecting") {
        setStatus("reconnecting", "reconnecting…");
      }
      break;
    case "closed":
      setStatus("closed", change.reason || "closed");
      break;
    default:
      break;
  }
});

client.on("error", (err) => {
  if (err.code === "connect_failed" && params.get("token")) {
    notify("error", `Cannot connect; if the token expired, reload the page with a fresh ?token=. ${err.message}`);
  } else if (err.code !== "connect_failed") {
    notify("error", `Server error ${err.code}: ${err.message}`);
  }
});

function showResume() {
  const missed = resume.reset.size;
  if (missed > 0) {
    notify("warn", `Resumed with a reset: ${missed} of ${resume.total} symbols missed data the server could not replay and restarted from a fresh quote.`);
  } else {
    notify("ok", `Resumed gap-free: ${resume.total} symbols carried on from their last seq.`);
  }
}

function showCountdown() {
  if (client.state === "open") return;
  const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
  setStatus("reconnecting", `reconnecting in ${seconds} s (${retryWhy})`);
}

setInterval(() => {
  if (client.state !== "open" && retryAt > Date.now()) showCountdown();
}, 250);

/**
 * Subscribes the symbols GET /symbols lists that the page has no row of:
 * those the feed started after the subscribe (a throttled `*` is kept per
 * symbol, and covers the symbols of its time). The client keeps them
 * across reconnects.
 */
async function subscribeNewSymbols() {
  if (checkingSymbols || client.state !== "open") return;
  checkingSymbols = true;
  try {
    const token = params.get("token");
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    const response = await fetch(`/symbols${query}`, { cache: "no-store" });
    if (!response.ok) return;
    const rows = await response.json();
    const added = rows.map((r) => r.sym).filter((sym) => typeof sym === "string" && !quotes.has(sym) && !client.refused.has(sym));
    if (added.length > 0 && client.state === "open") client.subscribe(added, { maxHz: MAX_HZ > 0 ? MAX_HZ : undefined });
  } catch {
    // Checked again at the next interval.
  } finally {
    checkingSymbols = false;
  }
}

if (!plainStar) setInterval(subscribeNewSymbols, NEW_SYMBOLS_EVERY_MS);

// ----------------------------------------------------------- rendering

function setStatus(state, text) {
  if (ui.status.dataset.state !== state) ui.status.dataset.state = state;
  if (ui.statusText.textContent !== text) ui.statusText.textContent = text;
}

function notify(kind, text) {
  ui.notice.dataset.kind = kind;
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}

/** Sets a cell's text only when it changed. */
function put(q, name, text) {
  if (q.shown[name] === text) return;
  q.shown[name] = text;
  q.cells[name].textContent = text;
}

function paint(q) {
  const c = q.cells;
  if (q.pxText !== q.shown.pxText) {
    const before = q.shown.pxUnits;
    if (before !== undefined && before !== null && q.pxUnits !== null) {
      q.flip ^= 1;
      c.px.className = `quote ${q.pxUnits > before ? "up" : "down"}${q.flip}`;
    }
    q.shown.pxText = q.pxText;
    q.shown.pxUnits = q.pxUnits;
    put(q, "px", showPrice(q.pxText));
    let sign = "flat";
    if (q.pxUnits !== null && q.open !== null) {
      const change = q.pxUnits - q.open;
      sign = change > 0n ? "pos" : change < 0n ? "neg" : "flat";
      const plus = sign === "pos" ? "+" : "";
      put(q, "chg", plus + showPrice(textOf(change)));
      // Relative to the opening price's size: a negative price (a
      // spread) that rises has a positive change.
      const base = q.open < 0n ? -q.open : q.open;
      const pct = base === 0n ? null : (Number(change) / Number(base)) * 100;
      put(q, "pct", pct === null ? "–" : `${plus}${pct.toFixed(2)}%`);
    } else {
      put(q, "chg", "–");
      put(q, "pct", "–");
    }
    if (q.shown.sign !== sign) {
      q.shown.sign = sign;
      c.chg.className = `num chg ${sign}`;
      c.pct.className = `num pct ${sign}`;
    }
  }
  put(q, "bid", q.bid === null ? "–" : showPrice(q.bid));
  put(q, "ask", q.ask === null ? "–" : showPrice(q.ask));
  put(q, "size", q.size === null ? "–" : count.format(q.size));
  put(q, "seq", count.format(q.seq));
  q.row.dataset.seq = q.seq;
  drawSpark(q);
}

function drawSpark(q) {
  // The size is fixed (CSS matches): reading it back from the layout
  // would force a reflow per row.
  const width = SPARK_WIDTH;
  const height = SPARK_HEIGHT;
  const ratio = window.devicePixelRatio || 1;
  const canvas = q.cells.spark;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = q.spark || (q.spark = canvas.getContext("2d"));
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const points = q.history;
  if (points.length < 2) return;
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of points) {
    if (p < lo) lo = p;
    if (p > hi) hi = p;
  }
  const span = hi - lo || 1;
  const pad = 2;
  const step = (width - pad * 2) / (points.length - 1);
  const x0 = pad;
  const y = (p) => pad + (height - pad * 2) * (1 - (p - lo) / span);
  const rising = points[points.length - 1] >= points[0];
  ctx.beginPath();
  ctx.moveTo(x0, y(points[0]));
  for (let i = 1; i < points.length; i += 1) ctx.lineTo(x0 + step * i, y(points[i]));
  ctx.lineWidth = 1.25;
  ctx.lineJoin = "round";
  ctx.strokeStyle = rising ? "#3fb950" : "#f85149";
  ctx.stroke();
  ctx.lineTo(x0 + step * (points.length - 1), height);
  ctx.lineTo(x0, height);
  ctx.closePath();
  ctx.fillStyle = rising ? "rgba(63, 185, 80, 0.12)" : "rgba(248, 81, 73, 0.12)";
  ctx.fill();
}

function paintMeters(now) {
  if (now < metersDue) return;
  metersDue = now + METER_EVERY_MS;
  const seconds = (now - windowStart) / 1000;
  if (seconds > 0) ui.meterRate.textContent = count.format(Math.round(windowTicks / seconds));
  windowTicks = 0;
  windowStart = now;
  ui.meterTicks.textContent = count.format(counters.ticks);
  if (lastLatencyMs !== null) {
    ui.meterLatency.textContent = `${lastLatencyMs.toFixed(1)} ms`;
  }
}

function frame(now) {
  requestAnimationFrame(frame);
  // Rows hidden by the filter are painted when they show again.
  for (const q of dirty) if (!q.row.hidden) paint(q);
  dirty.clear();
  paintMeters(now);
}

// -------------------------------------------------------------- filter

function matchesFilter(sym) {
  return filterText === "" || sym.toUpperCase().includes(filterText);
}

function updateShown() {
  if (filterText === "") {
    ui.shown.textContent = "";
    return;
  }
  let visible = 0;
  for (const sym of order) if (matchesFilter(sym)) visible += 1;
  ui.shown.textContent = `${visible} of ${order.length} symbols`;
}

ui.filter.addEventListener("input", () => {
  filterText = ui.filter.value.trim().toUpperCase();
  for (const q of quotes.values()) {
    q.row.hidden = !matchesFilter(q.sym);
    if (!q.row.hidden && q.pxText !== null) dirty.add(q);
  }
  updateShown();
});

ui.notice.addEventListener("click", () => {
  ui.notice.hidden = true;
});

requestAnimationFrame(frame);
