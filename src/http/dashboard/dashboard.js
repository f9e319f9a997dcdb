// tickcast dashboard: one WebSocket to /ws subscribed to every symbol.
// Messages only update the state kept per symbol; a requestAnimationFrame
// loop repaints the rows that changed, once per frame, so the page stays
// smooth under a fast feed. On a lost connection it reconnects with
// exponential backoff and resumes with `from` (docs/PROTOCOL.md). Prices
// are shown from their exact decimal text. Symbols a feed starts later
// come by themselves to a plain `*`; a throttled one covers the symbols of
// its time, so the page subscribes newer ones it finds in GET /symbols.
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
  /**
   * GET /symbols is checked this often for symbols the feed added since the
   * subscribe: a throttled `*` (or one under a token covering only some
   * symbols) covers the symbols that existed when it was sent.
   */
  const NEW_SYMBOLS_EVERY_MS = 10_000;
  /** Names per subscribe for new symbols (client messages are capped at 64 KiB). */
  const NEW_SYMBOLS_PER_REQUEST = 500;

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

  // --------------------------------------------------------------- prices
  //
  // The server sends every price as the shortest exact decimal of its
  // value (187.67, 1.08435, 0.0001, 100), at most 8 decimals. A price is
  // shown from that text, never from a binary float: with thousands
  // separators and at least two decimals (187.20, 1,234.50), and every
  // decimal it has beyond two (1.08435). Changes are worked out exactly, in
  // whole 10⁻⁸ units.

  /** 10⁸: units in 1. */
  const SCALE = 100_000_000n;
  const PRICE_KEYS = ["px", "bid", "ask"];

  /** Whether JSON.parse hands a reviver each number's source text. */
  const SOURCE_TEXT = (() => {
    try {
      let seen = null;
      JSON.parse("[1.10]", (key, value, context) => {
        if (key === "0") seen = context && context.source;
        return value;
      });
      return seen === "1.10";
    } catch {
      return false;
    }
  })();

  /**
   * Parses a server message. Where the browser allows, each tick object
   * gets `text: {px, bid, ask}`, its prices' text exactly as sent: a double
   * holds only about 15 significant digits, a price up to 18.
   */
  function parseMessage(data) {
    if (!SOURCE_TEXT) return JSON.parse(data);
    // Children are revived before the object holding them: the prices of
    // a tick are seen just before the tick itself.
    let pending = null;
    return JSON.parse(data, (key, value, context) => {
      if (typeof value === "number") {
        if (PRICE_KEYS.includes(key) && context) (pending ||= {})[key] = context.source;
      } else if (pending !== null && value !== null && typeof value === "object" && !Array.isArray(value)) {
        let text = null;
        for (const k of PRICE_KEYS) {
          if (typeof value[k] === "number" && pending[k] !== undefined) {
            (text ||= {})[k] = pending[k];
            delete pending[k];
          }
        }
        if (text !== null) value.text = text;
      }
      return value;
    });
  }

  /** A price's decimal text: as sent, or else from the number. */
  function priceText(t, key) {
    const sent = t.text && t.text[key];
    if (typeof sent === "string") return sent;
    const value = t[key];
    if (typeof value !== "number" || !Number.isFinite(value)) return null;
    // The shortest text that reads back as the same double: the price as
    // sent for up to 15 significant digits. Tiny ones come as 1e-7.
    let text = String(value);
    if (/e/i.test(text)) text = value.toFixed(8).replace(/\.?0+$/, "");
    return text;
  }

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

  // ---------------------------------------------------------------- state

  /** Symbol → its quote and row. */
  const quotes = new Map();
  /** Symbols in table order (alphabetical), parallel to the rows. */
  const order = [];
  /** Quotes changed since the last frame. */
  const dirty = new Set();
  let filterText = "";

  let socket = null;
  /**
   * The subscription is a plain `*` (no max_hz, no token), to which the
   * server sends each new symbol by itself.
   */
  let plainStar = false;
  /** Symbols that appear later are subscribed by name on this connection. */
  let addingSymbols = true;
  let nextSymbolsCheck = 0;
  let checkingSymbols = false;
  /** The subscribe sent when the connection opened. */
  let subscribeRequest = null;
  /** Symbols this connection was told it is subscribed to. */
  let subscribedHere = new Set();
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
      seq: 0, size: null,
      /** Last price as a number (for the sparkline), its text and units. */
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

  /** Takes a tick or snapshot into the state; painted on the next frame. */
  function apply(t) {
    const q = quoteFor(t.sym);
    if (typeof t.px !== "number") return;
    const pxText = priceText(t, "px");
    const pxUnits = unitsOf(pxText);
    if (q.open === null) q.open = pxUnits;
    q.seq = t.seq;
    q.px = t.px;
    q.pxText = pxText;
    q.pxUnits = pxUnits;
    q.bid = priceText(t, "bid");
    q.ask = priceText(t, "ask");
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
    // Later `subscribed` messages name symbols added since: new symbols
    // the feed started (a `*` subscriber is told of each), or those this
    // page asked for itself.
    const reply = awaitingReply;
    attempt = 0;
    awaitingReply = false;
    setStatus("live", "live");
    for (const sym of msg.symbols || []) {
      quoteFor(sym);
      subscribedHere.add(sym);
    }
    if (reply && resume !== null) {
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
      plainStar = MAX_HZ === 0 && !params.get("token");
      addingSymbols = true;
      subscribedHere = new Set();
      nextSymbolsCheck = Date.now() + NEW_SYMBOLS_EVERY_MS;
      const from = {};
      for (const [sym, q] of quotes) if (q.seq > 0) from[sym] = q.seq;
      let named = Object.keys(from);
      // Past a few thousand symbols the request would outgrow the server's
      // message limit: start over from snapshots instead.
      if (named.length > MAX_RESUME_SYMBOLS) named = [];
      resume = named.length > 0 ? { symbols: new Set(named), pending: new Set(named), reset: new Set() } : null;
      if (resume !== null) request.from = from;
      awaitingReply = true;
      subscribeRequest = request;
      ws.send(JSON.stringify(request));
    };
    ws.onmessage = (event) => {
      if (socket !== ws) return;
      lastHeard = Date.now();
      let msg;
      try {
        msg = parseMessage(event.data);
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
          if (awaitingReply && msg.code === "bad_request" && subscribeRequest && subscribeRequest.from) {
            // `from` was refused (e.g. it names symbols a restarted server
            // has not been sent yet) and nothing was subscribed: subscribe
            // again without it, from fresh snapshots.
            notify("warn", `Could not resume where the page left off (${msg.message}); starting over from fresh quotes.`);
            resume = null;
            delete subscribeRequest.from;
            ws.send(JSON.stringify(subscribeRequest));
          } else if (awaitingReply && (msg.code === "bad_request" || msg.code === "too_many_symbols")) {
            notify("error", `Server error ${msg.code}: ${msg.message}`);
            // The options were refused and nothing was subscribed: fall
            // back to the plain request every server version takes.
            resume = null;
            awaitingReply = false;
            plainStar = !params.get("token");
            subscribeRequest = null;
            ws.send(JSON.stringify({ op: "subscribe", symbols: ["*"] }));
          } else if (msg.code === "too_many_symbols") {
            notify("error", `Server error ${msg.code}: ${msg.message}`);
            // Symbols added later would not fit either.
            addingSymbols = false;
          } else {
            notify("error", `Server error ${msg.code}: ${msg.message}`);
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
    if (!awaitingReply && !plainStar && addingSymbols && Date.now() >= nextSymbolsCheck) {
      nextSymbolsCheck = Date.now() + NEW_SYMBOLS_EVERY_MS;
      subscribeNewSymbols(socket);
    }
  }, 250);

  /**
   * Subscribes `ws` to the symbols GET /symbols lists that it is not
   * subscribed to: those the feed started after the subscribe (a throttled
   * `*` is kept per symbol, and covers the symbols of its time).
   */
  async function subscribeNewSymbols(ws) {
    if (checkingSymbols) return;
    checkingSymbols = true;
    try {
      const token = params.get("token");
      const query = token ? "?token=" + encodeURIComponent(token) : "";
      const response = await fetch(`/symbols${query}`, { cache: "no-store" });
      if (!response.ok) return;
      const rows = await response.json();
      if (socket !== ws || ws.readyState !== WebSocket.OPEN || awaitingReply) return;
      const added = rows.map((r) => r.sym).filter((sym) => typeof sym === "string" && !subscribedHere.has(sym));
      for (let at = 0; at < added.length; at += NEW_SYMBOLS_PER_REQUEST) {
        const request = { op: "subscribe", symbols: added.slice(at, at + NEW_SYMBOLS_PER_REQUEST) };
        if (MAX_HZ > 0) request.max_hz = MAX_HZ;
        ws.send(JSON.stringify(request));
      }
    } catch {
      // Checked again at the next interval.
    } finally {
      checkingSymbols = false;
    }
  }

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
  connect();
})();
