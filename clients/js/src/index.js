// tickcast-client: the browser and Node client of tickcast's WebSocket
// protocol (docs/PROTOCOL.md). It keeps the application's subscriptions,
// reconnects with jittered exponential backoff, resumes every symbol with
// `from` so ticks arrive without a gap or a duplicate (or with an explicit
// `reset`), and hands prices over as their exact decimal text.
// A plain ES module with no dependencies; the server serves this very file
// to its dashboard at /tickcast-client.js.

/** Fields of ticks and snapshots that hold prices. */
const PRICE_FIELDS = ["px", "bid", "ask"];

/**
 * Error codes that refuse symbols. A refusal is final for a symbol the
 * server never confirmed; one it confirmed before (a symbol being resumed,
 * say after a restart of a server that learns its symbols from its feed)
 * is asked for again later.
 */
const REFUSAL_CODES = ["unknown_symbol", "not_entitled", "too_many_symbols"];

/** The error that refuses a whole request without naming its symbols. */
const WHOLE_REQUEST_REFUSAL = "too_many_symbols";

/** How much of an unknown name the server quotes in its `unknown_symbol` message. */
const QUOTED_NAME_BYTES = 24;

/** Options and their defaults (README.md describes each). */
const DEFAULTS = {
  token: undefined,
  WebSocket: undefined,
  backoffBaseMs: 500,
  backoffMaxMs: 15_000,
  pingIntervalMs: 5_000,
  silenceTimeoutMs: 15_000,
  maxMessageBytes: 64 * 1024,
  autoConnect: true,
};

/** Bounds of `max_hz` the server takes. */
const MIN_HZ = 0.01;
const MAX_HZ = 1000;

/**
 * Close codes after which the backoff is not reset, however well the
 * connection went: the server refused what this client sent (1002
 * protocol error, 1003 unacceptable data, 1007 bad text, 1009 message too
 * big) or found it too slow (1008); coming straight back would repeat it.
 */
const NO_RESET_CLOSES = [1002, 1003, 1007, 1008, 1009];

/** Largest exponent of the backoff (2^30 times the base is past any maximum). */
const MAX_BACKOFF_EXPONENT = 30;

// ------------------------------------------------------------------ prices

/**
 * Rewrites a server message so that each price (a number token after a
 * `"px"`, `"bid"` or `"ask"` key) becomes a JSON string of the same text:
 * `"px":187.25` → `"px":"187.25"`. JSON.parse then keeps every digit,
 * where reading the number would round it to a binary float.
 *
 * One pass over the text, linear in its length: strings are skipped whole
 * (a key-like text inside a string is left alone), nothing is
 * backtracked, and text that is not JSON comes back unchanged for
 * JSON.parse to refuse.
 *
 * @param {string} text
 * @returns {string}
 */
export function quotePrices(text) {
  let out = "";
  let copied = 0;
  let at = 0;
  const length = text.length;
  for (;;) {
    const open = text.indexOf('"', at);
    if (open < 0) break;
    // The string's closing quote: the next quote not escaped by an odd
    // run of backslashes. Each run is counted once.
    let close = open;
    for (;;) {
      close = text.indexOf('"', close + 1);
      if (close < 0) return copied === 0 ? text : out + text.slice(copied);
      let backslashes = 0;
      while (text.charCodeAt(close - 1 - backslashes) === 92 /* \ */) backslashes += 1;
      if (backslashes % 2 === 0) break;
    }
    at = close + 1;
    const keyLength = close - open - 1;
    if (keyLength < 2 || keyLength > 3) continue;
    const key = text.slice(open + 1, close);
    if (!PRICE_FIELDS.includes(key)) continue;
    let colon = at;
    while (colon < length && isSpace(text.charCodeAt(colon))) colon += 1;
    if (text.charCodeAt(colon) !== 58 /* : */) continue;
    let start = colon + 1;
    while (start < length && isSpace(text.charCodeAt(start))) start += 1;
    const first = text.charCodeAt(start);
    if (first !== 45 /* - */ && !(first >= 48 && first <= 57)) continue;
    let end = start + 1;
    while (end < length && isNumberChar(text.charCodeAt(end))) end += 1;
    out += text.slice(copied, start) + '"' + text.slice(start, end) + '"';
    copied = end;
    at = end;
  }
  return copied === 0 ? text : out + text.slice(copied);
}

function isSpace(c) {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

/** Digits, `.`, `e`, `E`, `+`, `-`: what may follow a number's first character. */
function isNumberChar(c) {
  return (c >= 48 && c <= 57) || c === 46 || c === 101 || c === 69 || c === 43 || c === 45;
}

/**
 * Parses a server message (or GET /symbols) with every price kept as its
 * exact decimal text, e.g. `{"px":"187.25"}`. Throws a SyntaxError as
 * JSON.parse does.
 *
 * @param {string} text
 */
export function parseMessage(text) {
  return JSON.parse(quotePrices(text));
}

// ------------------------------------------------------------------ errors

/**
 * An error the server sent (`code` as in docs/PROTOCOL.md, e.g.
 * `unknown_symbol`), or one of the client's own: `connect_failed` (the
 * connection could not be opened; retried with backoff), `token_failed`
 * (the token function threw or rejected), `bad_message` (a message that is
 * not JSON), `message_too_big` (the server closed with 1009: lower
 * `maxMessageBytes` to its limit).
 */
export class TickcastError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "TickcastError";
    this.code = code;
  }
}

// ------------------------------------------------------------------ client

/**
 * A connection to a tickcast server that outlives its sockets: see
 * README.md for the options, the events and what they guarantee.
 */
export class TickcastClient {
  /**
   * @param {string | URL} url the server's WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`
   * @param {object} [options]
   */
  constructor(url, options = {}) {
    const settings = { ...DEFAULTS };
    for (const [name, value] of Object.entries(options)) {
      if (!(name in DEFAULTS)) {
        throw new TypeError(`unknown option ${JSON.stringify(name)}; the options are ${Object.keys(DEFAULTS).join(", ")}`);
      }
      if (value !== undefined) settings[name] = value;
    }
    for (const name of ["backoffBaseMs", "backoffMaxMs", "pingIntervalMs", "silenceTimeoutMs"]) {
      if (typeof settings[name] !== "number" || !(settings[name] > 0)) {
        throw new TypeError(`option ${name} must be a positive number of milliseconds, not ${String(settings[name])}`);
      }
    }
    if (!Number.isInteger(settings.maxMessageBytes) || settings.maxMessageBytes < 256) {
      throw new TypeError(`option maxMessageBytes must be a whole number of at least 256 (the server's --max-message-bytes), not ${String(settings.maxMessageBytes)}`);
    }
    const token = settings.token;
    if (token !== undefined && token !== null && typeof token !== "string" && typeof token !== "function") {
      throw new TypeError("option token must be a string or a function returning one (or a promise of one)");
    }
    const Socket = settings.WebSocket || globalThis.WebSocket;
    if (typeof Socket !== "function") {
      throw new TypeError("no WebSocket implementation: pass one as the WebSocket option, e.g. `import WebSocket from \"ws\"` in Node");
    }
    this.url = String(url);
    this._options = settings;
    this._Socket = Socket;

    /** @type {Map<string, Function[]>} event → listeners (replaced, never mutated). */
    this._listeners = new Map();
    /** @type {WeakMap<object, Map<string, Function>>} addEventListener listener → wrapper, per event. */
    this._wrappers = new WeakMap();

    /** @type {Map<string, {maxHz: number | undefined}>} what the application subscribed ("*" included). */
    this._wanted = new Map();
    /** Symbols unsubscribed by name while "*" is subscribed. */
    this._excluded = new Set();
    /** The connection's `batch` mode, once the application chose one. */
    this._batch = undefined;
    /** @type {Map<string, number>} the last seq the application was given, per symbol. */
    this._lastSeq = new Map();
    /** @type {Map<string, TickcastError>} symbols the server refused, with why. */
    this._refused = new Map();
    /** Named symbols the server has confirmed with `subscribed` (on any connection). */
    this._confirmedOnce = new Set();

    this._state = "idle";
    /** The live connection's record, or null. */
    this._conn = null;
    this._everOpened = false;
    this._closed = false;
    this._attempt = 0;
    /** Bumped by each connection attempt and by close(): an attempt that sees it change is stale. */
    this._generation = 0;
    this._retryTimer = null;
    this._tokenValue = typeof token === "string" ? token : null;
    this._tokenStale = true;
    this._fenceId = 0;
    this._duplicates = 0;

    if (settings.autoConnect) {
      // After the caller's synchronous code: listeners and subscriptions
      // set right after `new` see the first state change.
      queueMicrotask(() => {
        if (this._state === "idle" && !this._closed) this._connect();
      });
    }
  }

  // -------------------------------------------------------------- reading

  /** `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this._state;
  }

  /** The last seq given to the application for `symbol`, or undefined. */
  lastSeq(symbol) {
    return this._lastSeq.get(symbol);
  }

  /** The symbols subscribed (`*` included), whether or not the server has confirmed them. */
  get subscriptions() {
    return [...this._wanted.keys()];
  }

  /** Symbols the server refused (unknown_symbol, not_entitled, too_many_symbols), with the error. */
  get refused() {
    return new Map(this._refused);
  }

  /** Ticks dropped because their seq had been seen already. */
  get duplicatesDropped() {
    return this._duplicates;
  }

  // ------------------------------------------------------------- requests

  /**
   * Subscribes `symbols` (a name or an array; `"*"` is every symbol), now
   * if connected and on every reconnect. `maxHz` throttles these symbols
   * to that many updates a second each; `batch` switches the connection's
   * ticks to batches (delivered as single `tick` events all the same).
   * Subscribing a symbol again clears a refusal of it.
   */
  subscribe(symbols, { maxHz, batch } = {}) {
    const names = symbolList(symbols, "subscribe");
    if (maxHz === 0 || maxHz === null) maxHz = undefined;
    if (maxHz !== undefined && (typeof maxHz !== "number" || !(maxHz >= MIN_HZ && maxHz <= MAX_HZ))) {
      throw new RangeError(`maxHz must be a number from ${MIN_HZ} to ${MAX_HZ} updates a second (or 0 for every tick), not ${String(maxHz)}`);
    }
    let batchChanged = false;
    if (batch !== undefined) {
      batchChanged = this._batch !== Boolean(batch);
      this._batch = Boolean(batch);
    }
    const fresh = [];
    const rethrottled = [];
    let starRethrottled = false;
    for (const name of names) {
      this._refused.delete(name);
      this._excluded.delete(name);
      const had = this._wanted.get(name);
      if (had !== undefined && had.maxHz === maxHz) continue;
      this._wanted.set(name, { maxHz });
      fresh.push(name);
      if (had !== undefined && name !== "*") rethrottled.push(name);
      if (had !== undefined && name === "*") starRethrottled = true;
    }
    const conn = this._openConn();
    if (conn === null) return this;
    if (starRethrottled) {
      // A `*` keeps the rate it was subscribed with, and a `*` sent again
      // only adds symbols: a new rate needs it unsubscribed and subscribed
      // anew. Unsubscribing `*` ends every subscription of the connection,
      // so all of them are sent again, as on a reconnect, each symbol
      // resuming from its last seq (ticks already on the way come first;
      // the replay's duplicates of them are dropped).
      this._send(conn, unsubscribeRequests(["*"], this._options.maxMessageBytes));
      this._resubscribe(conn);
      return this;
    }
    // A new rate needs the symbol subscribed anew; resuming it from its
    // last seq keeps its ticks gap-free across the change.
    if (rethrottled.length > 0) this._send(conn, unsubscribeRequests(rethrottled, this._options.maxMessageBytes));
    if (fresh.length === 0 && batchChanged) fresh.push(names[0]);
    if (fresh.length === 0) return this;
    const requests = [];
    const named = fresh.filter((name) => name !== "*");
    const batchFlag = batchChanged ? this._batch : undefined;
    if (named.length > 0) {
      requests.push(...subscribeRequests(named, { maxHz, batch: batchFlag }, this._lastSeq, this._options.maxMessageBytes).requests);
    }
    if (fresh.includes("*")) requests.push(this._starRequest(maxHz, batchFlag).request);
    this._noteFrom(conn, requests);
    this._send(conn, requests);
    this._fence(conn, named);
    return this;
  }

  /**
   * Unsubscribes `symbols` (`"*"`: all of them). No tick of them reaches
   * the application after this call, and they are forgotten: subscribed
   * again, they start from a fresh snapshot.
   */
  unsubscribe(symbols) {
    const names = symbolList(symbols, "unsubscribe");
    for (const name of names) {
      this._refused.delete(name);
      if (name === "*") {
        this._wanted.clear();
        this._excluded.clear();
        this._lastSeq.clear();
        this._confirmedOnce.clear();
      } else {
        this._wanted.delete(name);
        this._lastSeq.delete(name);
        this._confirmedOnce.delete(name);
        if (this._wanted.has("*")) this._excluded.add(name);
      }
    }
    const conn = this._openConn();
    if (conn !== null) this._send(conn, unsubscribeRequests(names, this._options.maxMessageBytes));
    return this;
  }

  /** Opens the connection again after `close()` (or with `autoConnect: false`). */
  connect() {
    if (this._state === "idle" || this._state === "closed") {
      this._closed = false;
      this._attempt = 0;
      this._connect();
    }
    return this;
  }

  /** Closes the connection for good (until `connect()`); subscriptions are kept. */
  close() {
    this._closed = true;
    this._generation += 1;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const conn = this._conn;
    if (conn !== null) {
      this._drop(conn);
      try {
        conn.ws.close(1000, "closed by the application");
      } catch {
        // Already closing.
      }
    }
    if (this._state !== "closed") this._setState({ state: "closed", code: 1000, reason: "closed by the application" });
  }

  // --------------------------------------------------------------- events

  /** Calls `listener(payload)` on each `event`. */
  on(event, listener) {
    if (typeof listener !== "function") throw new TypeError(`the listener of ${JSON.stringify(event)} must be a function`);
    this._listeners.set(event, [...(this._listeners.get(event) || []), listener]);
    return this;
  }

  /** Removes a listener added with `on` (or `once`). */
  off(event, listener) {
    const list = this._listeners.get(event);
    if (list === undefined) return this;
    const at = list.findIndex((fn) => fn === listener || fn.listener === listener);
    if (at >= 0) this._listeners.set(event, [...list.slice(0, at), ...list.slice(at + 1)]);
    return this;
  }

  /** Calls `listener(payload)` on the next `event` only. */
  once(event, listener) {
    const wrapper = (payload) => {
      this.off(event, wrapper);
      listener.call(this, payload);
    };
    wrapper.listener = listener;
    return this.on(event, wrapper);
  }

  /** EventTarget style: `listener` gets `{type, detail, target}`, `detail` being the payload. */
  addEventListener(type, listener) {
    if (listener === null || listener === undefined) return;
    let byType = this._wrappers.get(listener);
    if (byType === undefined) this._wrappers.set(listener, (byType = new Map()));
    if (byType.has(type)) return;
    const wrapper = (detail) => {
      const event = { type, detail, target: this };
      if (typeof listener === "function") listener.call(this, event);
      else listener.handleEvent(event);
    };
    byType.set(type, wrapper);
    this.on(type, wrapper);
  }

  removeEventListener(type, listener) {
    const byType = listener && this._wrappers.get(listener);
    const wrapper = byType && byType.get(type);
    if (!wrapper) return;
    byType.delete(type);
    this.off(type, wrapper);
  }

  _emit(event, payload) {
    const list = this._listeners.get(event);
    if (list === undefined) return;
    for (const listener of list) {
      try {
        listener.call(this, payload);
      } catch (err) {
        // One listener's bug must not break the stream or the other
        // listeners: it is rethrown on its own, as a DOM event's would be.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }

  _setState(change) {
    this._state = change.state;
    this._emit("state", change);
  }

  // ----------------------------------------------------------- connection

  _openConn() {
    const conn = this._conn;
    return conn !== null && conn.opened ? conn : null;
  }

  async _token() {
    const token = this._options.token;
    if (typeof token !== "function") return token || null;
    if (this._tokenStale || this._tokenValue === null) {
      const value = await token();
      if (typeof value !== "string" || value === "") {
        throw new TypeError(`the token function returned ${value === "" ? "an empty string" : typeof value}, not a token`);
      }
      this._tokenValue = value;
      this._tokenStale = false;
    }
    return this._tokenValue;
  }

  async _connect() {
    if (this._closed) return;
    this._generation += 1;
    const generation = this._generation;
    this._retryTimer = null;
    this._setState({ state: this._everOpened || this._attempt > 0 ? "reconnecting" : "connecting", attempt: this._attempt });
    let token;
    try {
      token = await this._token();
    } catch (err) {
      if (this._closed || generation !== this._generation) return;
      this._emit("error", new TickcastError("token_failed", `the token function failed (${errorText(err)}); trying again with backoff`));
      this._retry({ code: 0, reason: "no token" });
      return;
    }
    // close() (and perhaps connect() again) ran while the token was awaited.
    if (this._closed || generation !== this._generation) return;
    let ws;
    try {
      ws = new this._Socket(token ? withToken(this.url, token) : this.url);
    } catch (err) {
      // A URL the WebSocket refuses outright will not get better.
      this._emit("error", new TickcastError("connect_failed", `cannot connect to ${this.url}: ${errorText(err)}; pass a ws:// or wss:// URL`));
      this._closed = true;
      this._setState({ state: "closed", code: 0, reason: "bad URL" });
      return;
    }
    const conn = {
      ws,
      opened: false,
      openedAt: 0,
      /** The first subscribes' fence came back: the server answered them. */
      answered: false,
      /** A tick or snapshot came after that: the server is serving. */
      served: false,
      startedAt: Date.now(),
      lastHeard: Date.now(),
      lastPing: 0,
      failure: null,
      /** Subscribe batches awaiting their fence pong, oldest first. */
      fences: [],
      /** Symbols the server confirmed on this connection. */
      confirmed: new Set(),
      /** Symbols to ask for again (refused, though served before), and when. */
      askAgain: new Set(),
      /** The `from` sent for each symbol resumed on this connection, until its first tick or snapshot. */
      from: new Map(),
      askAgainTimer: null,
      askedAgain: 0,
      timer: null,
    };
    this._conn = conn;
    ws.onopen = () => this._onOpen(conn);
    ws.onmessage = (event) => this._onMessage(conn, event.data);
    ws.onerror = (event) => {
      conn.failure = (event && (event.message || (event.error && event.error.message))) || null;
    };
    ws.onclose = (event) => this._onClose(conn, event.code, event.reason || "");
    conn.timer = setInterval(() => this._watch(conn), Math.max(10, Math.min(this._options.pingIntervalMs, this._options.silenceTimeoutMs / 4)));
  }

  /** Keep-alive: pings, and gives up a connection that went silent or never opened. */
  _watch(conn) {
    if (conn !== this._conn) {
      clearInterval(conn.timer);
      return;
    }
    const now = Date.now();
    if (now - conn.lastHeard > this._options.silenceTimeoutMs) {
      const code = conn.opened ? 4000 : 0;
      const reason = conn.opened ? "no data" : "no answer to the connection attempt";
      this._drop(conn);
      try {
        conn.ws.close(4000, "no data");
        if (typeof conn.ws.terminate === "function") conn.ws.terminate();
      } catch {
        // Closing anyway.
      }
      if (!conn.opened) {
        this._connectFailed(conn, reason);
        this._tokenStale = true;
      }
      this._retry({ code, reason, served: this._served(conn) });
      return;
    }
    if (conn.opened && now - conn.lastPing >= this._options.pingIntervalMs) {
      conn.lastPing = now;
      this._send(conn, [{ op: "ping", id: "alive" }]);
    }
  }

  /** Detaches `conn`: nothing it still delivers reaches the application. */
  _drop(conn) {
    clearInterval(conn.timer);
    clearTimeout(conn.askAgainTimer);
    conn.askAgainTimer = null;
    conn.ws.onopen = conn.ws.onmessage = conn.ws.onerror = conn.ws.onclose = null;
    if (this._conn === conn) this._conn = null;
  }

  _onOpen(conn) {
    if (conn !== this._conn) return;
    conn.opened = true;
    conn.lastHeard = conn.openedAt = Date.now();
    this._everOpened = true;
    const resumed = this._resubscribe(conn);
    this._setState({ state: "open", resumed });
  }

  _onClose(conn, code, reason) {
    if (conn !== this._conn) return;
    this._drop(conn);
    if (this._closed) {
      this._setState({ state: "closed", code, reason });
      return;
    }
    if (!conn.opened) this._connectFailed(conn, reason || (code === 1006 ? "" : `closed ${code}`));
    // A fresh token for the next connection: this one expired, or may be
    // why the upgrade was refused.
    if (code === 4001 || !conn.opened) this._tokenStale = true;
    if (code === 1009) {
      this._emit("error", new TickcastError("message_too_big", `the server closed the connection with 1009: a request of this client exceeds the server's message size limit (its --max-message-bytes); set the maxMessageBytes option to that limit or lower`));
    }
    this._retry({ code, reason, served: this._served(conn) });
  }

  /**
   * Whether `conn` proved the server works for this client: it delivered a
   * tick or snapshot after its subscriptions were answered, or stayed open
   * as long as the longest backoff delay.
   */
  _served(conn) {
    return conn.served || (conn.opened && Date.now() - conn.openedAt >= this._options.backoffMaxMs);
  }

  _connectFailed(conn, why) {
    const detail = conn.failure || why;
    const hint = this._options.token
      ? "check the URL, that the server runs, and the token (a 401 means it is missing, malformed, forged or expired)"
      : "check the URL and that the server runs (a 401 means it needs a token)";
    this._emit("error", new TickcastError("connect_failed", `could not open ${this.url}${detail ? ` (${detail})` : ""}; ${hint}. Retrying with backoff`));
  }

  /** Schedules the next connection after a jittered, growing delay. */
  _retry({ code, reason, served = false }) {
    // Only a connection the server served resets the backoff, and not one
    // closed for what this client did: a server that accepts connections
    // and then drops them is not hit at the base delay in a loop.
    if (served && !NO_RESET_CLOSES.includes(code)) this._attempt = 0;
    const ceiling = Math.min(this._options.backoffMaxMs, this._options.backoffBaseMs * 2 ** Math.min(this._attempt, MAX_BACKOFF_EXPONENT));
    const delayMs = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this._attempt += 1;
    this._setState({ state: "reconnecting", code, reason: reason || closeReason(code), delayMs, attempt: this._attempt });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._connect(), delayMs);
  }

  _send(conn, requests) {
    for (const request of requests) {
      try {
        conn.ws.send(JSON.stringify(request));
      } catch {
        // The socket is closing; its close event brings the reconnect,
        // which sends the subscriptions again.
        return;
      }
    }
  }

  /**
   * Sends every subscription on a new connection, resuming each symbol
   * seen before with `from`. Returns how many symbols were resumed.
   */
  _resubscribe(conn) {
    const limit = this._options.maxMessageBytes;
    const groups = new Map();
    let starHz = null;
    for (const [name, { maxHz }] of this._wanted) {
      if (name === "*") {
        starHz = maxHz;
        continue;
      }
      const key = maxHz === undefined ? "" : String(maxHz);
      if (!groups.has(key)) groups.set(key, { maxHz, names: [] });
      groups.get(key).names.push(name);
    }
    const requests = [];
    let resumed = 0;
    let batch = this._batch;
    const named = [];
    for (const { maxHz, names } of groups.values()) {
      const built = subscribeRequests(names, { maxHz, batch }, this._lastSeq, limit);
      requests.push(...built.requests);
      resumed += built.resumed;
      named.push(...names);
      batch = undefined;
    }
    if (starHz !== null) {
      const star = this._starRequest(starHz, batch);
      requests.push(star.request);
      resumed += star.resumed;
      if (this._excluded.size > 0) requests.push(...unsubscribeRequests([...this._excluded], limit));
    }
    this._noteFrom(conn, requests);
    this._send(conn, requests);
    this._fence(conn, named);
    return resumed;
  }

  /**
   * `{"op":"subscribe","symbols":["*"]}` resuming, within the size limit,
   * the symbols seen that are not subscribed by name. Those left out get a
   * snapshot, which reaches the application as a reset if it moved on.
   */
  _starRequest(maxHz, batch) {
    const request = { op: "subscribe", symbols: ["*"] };
    if (maxHz !== undefined) request.max_hz = maxHz;
    if (batch !== undefined) request.batch = batch;
    const from = Object.create(null);
    let size = utf8Length(JSON.stringify({ ...request, from: {} }));
    let resumed = 0;
    for (const [name, seq] of this._lastSeq) {
      if (this._wanted.has(name) || this._excluded.has(name)) continue;
      const cost = utf8Length(JSON.stringify(name)) + 1 + String(seq).length + 1;
      if (size + cost > this._options.maxMessageBytes) break;
      from[name] = seq;
      size += cost;
      resumed += 1;
    }
    if (resumed > 0) request.from = from;
    return { request, resumed };
  }

  /** Notes the `from` of subscribe requests about to be sent on `conn`. */
  _noteFrom(conn, requests) {
    for (const request of requests) {
      if (request.from === undefined) continue;
      for (const [name, seq] of Object.entries(request.from)) conn.from.set(name, seq);
    }
  }

  /**
   * Follows the subscribes just sent with a ping: its pong means the
   * server has answered them all (replies keep their order), and symbols
   * it neither confirmed nor had confirmed before were refused.
   */
  _fence(conn, names) {
    this._fenceId += 1;
    const id = `subscribed-${this._fenceId}`;
    conn.fences.push({ id, names, errors: [] });
    this._send(conn, [{ op: "ping", id }]);
  }

  _settleFences(conn, id) {
    const at = conn.fences.findIndex((fence) => fence.id === id);
    if (at < 0) return;
    conn.answered = true;
    for (const fence of conn.fences.splice(0, at + 1)) this._settle(conn, fence);
  }

  _settle(conn, fence) {
    // Under "*" a named symbol may be covered already, and is not listed.
    if (this._wanted.has("*")) return;
    const refusals = fence.errors.filter((err) => REFUSAL_CODES.includes(err.code));
    if (refusals.length === 0) return;
    // `too_many_symbols` refuses its whole request and names nothing; the
    // other refusals quote the names they refuse (at most ten of them).
    const wholeRequest = refusals.find((err) => err.code === WHOLE_REQUEST_REFUSAL);
    const naming = refusals.filter((err) => err.code !== WHOLE_REQUEST_REFUSAL);
    const refused = new Map();
    const again = [];
    for (const name of fence.names) {
      if (conn.confirmed.has(name) || !this._wanted.has(name)) continue;
      const err = naming.find((e) => quotes(e.message, name)) || wholeRequest;
      // No answer names it: it stays wanted, and is asked for on the next connection.
      if (err === undefined) continue;
      if (this._confirmedOnce.has(name)) {
        // Served before: the server may carry it again soon (a restarted
        // server learns its symbols from its feed). It keeps its last seq.
        again.push(name);
        continue;
      }
      if (!refused.has(err)) refused.set(err, []);
      refused.get(err).push(name);
    }
    for (const [err, symbols] of refused) {
      for (const name of symbols) {
        this._wanted.delete(name);
        this._lastSeq.delete(name);
        this._refused.set(name, err);
      }
      this._emit("refused", { symbols, code: err.code, message: err.message });
    }
    if (again.length > 0) this._askAgain(conn, again);
  }

  /**
   * Subscribes `names` again on `conn` after a growing delay (the backoff's),
   * if they are still wanted and unconfirmed then.
   */
  _askAgain(conn, names) {
    for (const name of names) conn.askAgain.add(name);
    if (conn.askAgainTimer !== null) return;
    const ceiling = Math.min(this._options.backoffMaxMs, this._options.backoffBaseMs * 2 ** Math.min(conn.askedAgain, MAX_BACKOFF_EXPONENT));
    conn.askedAgain += 1;
    conn.askAgainTimer = setTimeout(() => {
      conn.askAgainTimer = null;
      if (conn !== this._conn || !conn.opened) return;
      const due = [...conn.askAgain].filter((name) => this._wanted.has(name) && !conn.confirmed.has(name));
      conn.askAgain.clear();
      if (due.length > 0) this._subscribeNamed(conn, due);
    }, Math.round(ceiling / 2 + Math.random() * (ceiling / 2)));
  }

  /** Subscribes named symbols, grouped by their maxHz, resuming those seen, then fences them. */
  _subscribeNamed(conn, names) {
    const groups = new Map();
    for (const name of names) {
      const { maxHz } = this._wanted.get(name);
      const key = maxHz === undefined ? "" : String(maxHz);
      if (!groups.has(key)) groups.set(key, { maxHz, names: [] });
      groups.get(key).names.push(name);
    }
    const requests = [];
    for (const { maxHz, names: group } of groups.values()) {
      requests.push(...subscribeRequests(group, { maxHz, batch: undefined }, this._lastSeq, this._options.maxMessageBytes).requests);
    }
    this._noteFrom(conn, requests);
    this._send(conn, requests);
    this._fence(conn, names);
  }

  // ------------------------------------------------------------- messages

  _wants(symbol) {
    return this._wanted.has(symbol) || (this._wanted.has("*") && !this._excluded.has(symbol));
  }

  _throttled(symbol) {
    const own = this._wanted.get(symbol);
    if (own !== undefined) return own.maxHz !== undefined;
    const star = this._wanted.get("*");
    return star !== undefined && star.maxHz !== undefined;
  }

  _onMessage(conn, data) {
    if (conn !== this._conn) return;
    conn.lastHeard = Date.now();
    if (typeof data !== "string") return; // the protocol is text only
    let msg;
    try {
      msg = parseMessage(data);
    } catch (err) {
      this._emit("error", new TickcastError("bad_message", `the server sent a message that is not JSON (${errorText(err)}): ${data.slice(0, 200)}`));
      return;
    }
    if (msg === null || typeof msg !== "object") return;
    if (conn.answered && (msg.type === "tick" || msg.type === "ticks" || msg.type === "snapshot")) conn.served = true;
    switch (msg.type) {
      case "tick":
        this._onTick(conn, msg);
        break;
      case "ticks":
        if (Array.isArray(msg.data)) {
          for (const tick of msg.data) {
            // A listener may have closed the client mid-batch.
            if (conn !== this._conn) return;
            this._onTick(conn, tick);
          }
        }
        break;
      case "snapshot":
        this._onSnapshot(conn, msg);
        break;
      case "subscribed":
        if (Array.isArray(msg.symbols)) {
          for (const name of msg.symbols) {
            conn.confirmed.add(name);
            if (this._wanted.has(name)) this._confirmedOnce.add(name);
          }
          this._emit("subscribed", { symbols: msg.symbols });
        }
        break;
      case "unsubscribed":
        if (Array.isArray(msg.symbols)) {
          for (const name of msg.symbols) conn.confirmed.delete(name);
          this._emit("unsubscribed", { symbols: msg.symbols });
        }
        break;
      case "pong":
        if (typeof msg.id === "string") this._settleFences(conn, msg.id);
        break;
      case "error": {
        const err = new TickcastError(String(msg.code), String(msg.message));
        if (conn.fences.length > 0) conn.fences[0].errors.push(err);
        this._emit("error", err);
        break;
      }
      default:
        break; // types of later protocol versions
    }
  }

  _onTick(conn, tick) {
    const sym = tick.sym;
    if (!this._wants(sym)) return;
    const last = this._lastSeq.get(sym);
    const from = conn.from.get(sym);
    if (from !== undefined) {
      conn.from.delete(sym);
      if (last !== undefined && tick.seq <= from) {
        // The server never sends a resumed symbol a tick at or before its
        // `from`: its count started over (it restarted), and the symbol
        // had not traded there yet when it was resumed. The application
        // starts over from this tick's quote.
        this._lastSeq.set(sym, tick.seq);
        this._emit("reset", { ...tick, type: "snapshot", reset: true, previousSeq: last });
        return;
      }
    }
    if (last !== undefined) {
      if (tick.seq <= last) {
        this._duplicates += 1;
        return;
      }
      if (tick.seq > last + 1 && !this._throttled(sym)) {
        this._emit("gap", { sym, lastSeq: last, seq: tick.seq, missed: tick.seq - last - 1 });
      }
    }
    this._lastSeq.set(sym, tick.seq);
    this._emit("tick", tick);
  }

  _onSnapshot(conn, snapshot) {
    const sym = snapshot.sym;
    if (!this._wants(sym)) return;
    conn.from.delete(sym);
    const last = this._lastSeq.get(sym);
    if (snapshot.reset === true || (last !== undefined && snapshot.seq !== last)) {
      // Ticks were missed that the server could not replay (or, after a
      // restart, its count started over): the application starts over
      // from this quote.
      this._lastSeq.set(sym, snapshot.seq);
      snapshot.reset = true;
      snapshot.previousSeq = last;
      this._emit("reset", snapshot);
      return;
    }
    if (last === snapshot.seq) return; // the quote the application has
    this._lastSeq.set(sym, snapshot.seq);
    this._emit("snapshot", snapshot);
  }
}

// ---------------------------------------------------------------- requests

/** Symbol names from a name or an array of them. */
function symbolList(symbols, op) {
  const names = typeof symbols === "string" ? [symbols] : Array.isArray(symbols) ? symbols : null;
  if (names === null || names.length === 0 || !names.every((name) => typeof name === "string" && name !== "")) {
    throw new TypeError(`${op} takes a symbol name or a non-empty array of them, e.g. ["AAPL", "MSFT"] or "*"`);
  }
  return [...new Set(names)];
}

/**
 * Subscribe requests for `names`, each at most `limit` bytes of JSON, the
 * symbols seen before resumed with their last seq.
 */
function subscribeRequests(names, { maxHz, batch }, lastSeq, limit) {
  const options = {};
  if (maxHz !== undefined) options.max_hz = maxHz;
  if (batch !== undefined) options.batch = batch;
  const base = utf8Length(JSON.stringify({ op: "subscribe", symbols: [], from: {}, ...options }));
  const requests = [];
  let resumed = 0;
  let symbols = [];
  let from = Object.create(null);
  let withFrom = false;
  let size = base;
  const flush = () => {
    const request = { op: "subscribe", symbols, ...options };
    if (withFrom) request.from = from;
    requests.push(request);
    symbols = [];
    from = Object.create(null);
    withFrom = false;
    size = base;
  };
  for (const name of names) {
    const quoted = utf8Length(JSON.stringify(name));
    const seq = lastSeq.get(name);
    const cost = quoted + 1 + (seq === undefined ? 0 : quoted + 1 + String(seq).length + 1);
    if (symbols.length > 0 && size + cost > limit) flush();
    symbols.push(name);
    if (seq !== undefined) {
      from[name] = seq;
      withFrom = true;
      resumed += 1;
    }
    size += cost;
  }
  if (symbols.length > 0) flush();
  return { requests, resumed };
}

/**
 * Whether a server message quotes `name`: the server writes each name in
 * double quotes, an unknown one cut to its first 24 bytes.
 */
function quotes(message, name) {
  if (message.includes(JSON.stringify(name))) return true;
  if (utf8Length(name) <= QUOTED_NAME_BYTES) return false;
  let cut = "";
  for (const c of name) {
    if (utf8Length(cut + c) > QUOTED_NAME_BYTES) break;
    cut += c;
  }
  return message.includes(JSON.stringify(cut));
}

/** Unsubscribe requests for `names`, each at most `limit` bytes of JSON. */
function unsubscribeRequests(names, limit) {
  const base = utf8Length(JSON.stringify({ op: "unsubscribe", symbols: [] }));
  const requests = [];
  let symbols = [];
  let size = base;
  for (const name of names) {
    const cost = utf8Length(JSON.stringify(name)) + 1;
    if (symbols.length > 0 && size + cost > limit) {
      requests.push({ op: "unsubscribe", symbols });
      symbols = [];
      size = base;
    }
    symbols.push(name);
    size += cost;
  }
  if (symbols.length > 0) requests.push({ op: "unsubscribe", symbols });
  return requests;
}

/** Bytes of `text` in UTF-8. */
function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      bytes += 4;
      i += 1;
    } else bytes += 3;
  }
  return bytes;
}

/** `url` with `token` as its `token` query parameter. */
function withToken(url, token) {
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  return `${base}${base.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

/** What a close code means, for a close that came without a reason. */
function closeReason(code) {
  switch (code) {
    case 1000:
      return "closed";
    case 1001:
      return "server shutting down";
    case 1006:
      return "connection lost";
    case 1008:
      return "policy violation (slow consumer or rate limit)";
    case 4001:
      return "token expired";
    default:
      return code ? `closed with ${code}` : "";
  }
}

function errorText(err) {
  return err && err.message ? err.message : String(err);
}
