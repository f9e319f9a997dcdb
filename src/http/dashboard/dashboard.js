// tickcast dashboard: one WebSocket to /ws subscribed to every symbol.
// Messages only update the state kept per symbol; a requestAnimationFrame
// loop repaints the rows that changed, once per frame, so the page stays
// smooth under a fast feed. On a lost connection it reconnects with
// exponential backoff and resumes with `from` (docs/PROTOCOL.md).
"use strict";

(() => {
  const params = new URLSearchParams(location.search);

  /** Updates per second asked of the server for each symbol; 0: every tick. */
  const MAX_HZ = numberParam("max_hz", 4);
  // Most symbols a reconnect resumes with `from` (about 13 bytes each, and
  // client messages are capped at 64 KiB).
  const MAX_RESUME_SYMBOLS = 2000;
  /** Prices kept for each sparkline. */
  const SPARK_POINTS = 60;
  /** Sparkline size in CSS pixels, as in dashboard.css. */
  const SPARK_WIDTH = 96;
  const SPARK_HEIGHT = 24;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 15_000;
  /** A ping goes out this often, so a dead connection is noticed. */
  const PING_EVERY_MS = 5_000;
  /** Reconnect when nothing at all arrived for this long. */
  const SILENCE_LIMIT_MS = 15_000;
  /** Meters (rate, latency) refresh this often. */
  const METER_EVERY_MS = 500;

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

  const price = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const count = new Intl.NumberFormat("en-US");

  // ---------------------------------------------------------------- state

  /** Symbol → its quote and row. */
  const quotes = new Map();
  /** Symbols in table order (alphabetical), parallel to the rows. */
  const order = [];
  /** Quotes changed since the last frame. */
  const dirty = new Set();
  let filterText = "";

  let socket = null;
  let attempt = 0;
  let retryAt = 0;
  let retryTimer = 0;
  let retryWhy = "";
  let lastHeard = 0;
  let lastPing = 0;
  let pingId = 0;
  /**
   * The last resume: the symbols named in `from`, those still waiting for
   * their first message, and those that came back with a reset.
   */
  let resume = null;
  /** No `subscribed` reply yet on this connection. */
  let awaitingReply = false;

  // Figures for the meters.
  let windowTicks = 0;
  let windowStart = performance.now();
  let lastLatencyMs = null;
  let metersDue = 0;

  function numberParam(name, fallback) {
    const value = Number(params.get(name));
    return params.has(name) && Number.isFinite(value) && value >= 0 ? value : fallback;
  }

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
      seq: 0, px: null, bid: null, ask: null, size: null,
      /** First price this page saw: the base of the change columns. */
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

  /** Takes a tick or snapshot into the state; painted on the next frame. */
  function apply(t) {
    const q = quoteFor(t.sym);
    if (typeof t.px !== "number") return;
    if (q.open === null) q.open = t.px;
    q.seq = t.seq;
    q.px = t.px;
    q.bid = t.bid;
    q.ask = t.ask;
    q.size = t.size;
    q.history.push(t.px);
    if (q.history.length > SPARK_POINTS) q.history.shift();
    dirty.add(q);
  }

  function onTick(t) {
    if (resume !== null) resume.pending.delete(t.sym);
    apply(t);
    counters.ticks += 1;
    windowTicks += 1;
    if (typeof t.ts === "number") lastLatencyMs = Date.now() - t.ts / 1e6;
  }

  function onSnapshot(s) {
    const known = quotes.get(s.sym);
    const resumed = resume !== null && resume.pending.delete(s.sym);
    // A snapshot for a symbol named in `from` means its missed ticks could
    // not be replayed, whether the server flags it or (not supporting
    // resumes) sends a plain one that is not where the page left off.
    const reset = s.reset === true || (resumed && known !== undefined && known.seq !== s.seq);
    apply(s);
    if (!reset) return;
    counters.resets += 1;
    if (resumed) {
      resume.reset.add(s.sym);
      showResume();
    } else {
      notify("warn", `${s.sym} skipped ticks the server could not deliver; it restarted from a fresh quote (seq ${s.seq}).`);
    }
  }

  function onSubscribed(msg) {
    attempt = 0;
    awaitingReply = false;
    setStatus("live", "live");
    for (const sym of msg.symbols || []) quoteFor(sym);
    if (resume !== null) {
      counters.resumes += 1;
      showResume();
    }
  }

  function showResume() {
    const total = resume.symbols.size;
    const missed = resume.reset.size;
    if (missed > 0) {
      notify("warn", `Resumed with a reset: ${missed} of ${total} symbols missed data the server could not replay and restarted from a fresh quote.`);
    } else {
      notify("ok", `Resumed gap-free: ${total} symbols carried on from their last seq.`);
    }
  }

  // ----------------------------------------------------------- connection

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = params.get("token");
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    return `${scheme}//${location.host}/ws${query}`;
  }

  function connect() {
    clearTimeout(retryTimer);
    const first = attempt === 0 && quotes.size === 0;
    setStatus(first ? "connecting" : "reconnecting", first ? "connecting…" : "reconnecting…");
    const ws = new WebSocket(socketUrl());
    socket = ws;
    ws.onopen = () => {
      lastHeard = Date.now();
      const request = { op: "subscribe", symbols: ["*"], batch: true };
      if (MAX_HZ > 0) request.max_hz = MAX_HZ;
      const from = {};
      for (const [sym, q] of quotes) if (q.seq > 0) from[sym] = q.seq;
      let named = Object.keys(from);
      // Past a few thousand symbols the request would outgrow the server's
      // message limit: start over from snapshots instead.
      if (named.length > MAX_RESUME_SYMBOLS) named = [];
      resume = named.length > 0 ? { symbols: new Set(named), pending: new Set(named), reset: new Set() } : null;
      if (resume !== null) request.from = from;
      awaitingReply = true;
      ws.send(JSON.stringify(request));
    };
    ws.onmessage = (event) => {
      if (socket !== ws) return;
      lastHeard = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      switch (msg.type) {
        case "ticks":
          for (const t of msg.data) onTick(t);
          break;
        case "tick":
          onTick(msg);
          break;
        case "snapshot":
          onSnapshot(msg);
          break;
        case "subscribed":
          onSubscribed(msg);
          break;
        case "error":
          notify("error", `Server error ${msg.code}: ${msg.message}`);
          if (awaitingReply && (msg.code === "bad_request" || msg.code === "too_many_symbols")) {
            // The options were refused and nothing was subscribed: fall
            // back to the plain request every server version takes.
            resume = null;
            awaitingReply = false;
            ws.send(JSON.stringify({ op: "subscribe", symbols: ["*"] }));
          }
          break;
        default:
          break; // pong, unsubscribed, and fields of later versions
      }
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      if (event.code === 4001) {
        setStatus("closed", "token expired: reload the page with a fresh token");
        return;
      }
      scheduleReconnect(event.reason || (event.code === 1006 ? "connection lost" : `closed ${event.code}`));
    };
  }

  /** Waits base·2^attempt, capped, with jitter over its upper half. */
  function scheduleReconnect(why) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    attempt += 1;
    retryAt = Date.now() + delay;
    retryWhy = why;
    showCountdown();
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function showCountdown() {
    if (socket !== null) return;
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    setStatus("reconnecting", `reconnecting in ${seconds} s (${retryWhy})`);
  }

  // Keep-alive: a ping every few seconds; a connection silent for too long
  // is given up, as a dropped network may never deliver a close.
  setInterval(() => {
    if (socket === null) {
      if (retryAt > Date.now()) showCountdown();
      return;
    }
    if (socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastHeard > SILENCE_LIMIT_MS) {
      const dead = socket;
      socket = null;
      dead.close(4000, "no data");
      scheduleReconnect("no data");
      return;
    }
    if (Date.now() - lastPing >= PING_EVERY_MS) {
      lastPing = Date.now();
      pingId += 1;
      socket.send(JSON.stringify({ op: "ping", id: pingId }));
    }
  }, 250);

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
    if (q.px !== q.shown.pxValue) {
      if (q.shown.pxValue !== undefined && q.shown.pxValue !== null) {
        q.flip ^= 1;
        c.px.className = `quote ${q.px > q.shown.pxValue ? "up" : "down"}${q.flip}`;
      }
      q.shown.pxValue = q.px;
      put(q, "px", price.format(q.px));
      const change = q.px - q.open;
      const sign = change > 0.004 ? "pos" : change < -0.004 ? "neg" : "flat";
      const plus = sign === "pos" ? "+" : "";
      put(q, "chg", plus + price.format(change));
      put(q, "pct", q.open ? `${plus}${((change / q.open) * 100).toFixed(2)}%` : "–");
      if (q.shown.sign !== sign) {
        q.shown.sign = sign;
        c.chg.className = `num chg ${sign}`;
        c.pct.className = `num pct ${sign}`;
      }
    }
    put(q, "bid", q.bid === null ? "–" : price.format(q.bid));
    put(q, "ask", q.ask === null ? "–" : price.format(q.ask));
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
      if (!q.row.hidden && q.px !== null) dirty.add(q);
    }
    updateShown();
  });

  ui.notice.addEventListener("click", () => {
    ui.notice.hidden = true;
  });

  requestAnimationFrame(frame);
  connect();
})();
