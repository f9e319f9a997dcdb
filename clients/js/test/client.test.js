// The client's bookkeeping against a scripted WebSocket: what it sends on
// (re)connect, how requests are split, and how ticks, duplicates, gaps
// and resets reach the application.

import assert from "node:assert/strict";
import test from "node:test";

import { TickcastClient } from "../src/index.js";
import { Recorder } from "../test-support/record.js";

/** A WebSocket the test drives by hand. */
class ScriptedSocket {
  static made = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closedWith = null;
    ScriptedSocket.made.push(this);
    for (const wake of ScriptedSocket.waiting.splice(0)) wake();
  }
  send(text) {
    this.sent.push(text);
    for (const wake of ScriptedSocket.waiting.splice(0)) wake();
  }
  close(code, reason) {
    this.closedWith = { code, reason };
  }
  // What the test makes the server do.
  open() {
    this.onopen?.({});
  }
  receive(message) {
    this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
  }
  drop(code = 1006, reason = "") {
    this.onclose?.({ code, reason });
  }
  requests() {
    return this.sent.map((text) => JSON.parse(text));
  }
  /** Resolves with the first request sent from index `from` on that `matches`, failing after a deadline. */
  async untilSent(what, matches, from = 0, ms = 5_000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.requests().slice(from).find(matches);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      let timer;
      await new Promise((wake) => {
        ScriptedSocket.waiting.push(wake);
        timer = setTimeout(wake, deadline - Date.now() + 1);
      });
      clearTimeout(timer);
    }
  }
  static last() {
    return ScriptedSocket.made[ScriptedSocket.made.length - 1];
  }
  static waiting = [];
  /** Resolves with the `n`th socket the client makes (from 1), failing after a deadline. */
  static async nth(n, ms = 5_000) {
    const deadline = Date.now() + ms;
    while (ScriptedSocket.made.length < n) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for connection attempt ${n}`);
      let timer;
      await new Promise((wake) => {
        ScriptedSocket.waiting.push(wake);
        timer = setTimeout(wake, deadline - Date.now() + 1);
      });
      clearTimeout(timer);
    }
    return ScriptedSocket.made[n - 1];
  }
}

function client(options = {}) {
  ScriptedSocket.made = [];
  const c = new TickcastClient("ws://server/ws", { WebSocket: ScriptedSocket, backoffBaseMs: 5, backoffMaxMs: 40, ...options });
  return { c, rec: new Recorder(c) };
}

const tick = (sym, seq) => ({ type: "tick", sym, seq, px: 1.5, bid: 1.4, ask: 1.6, size: 1, ts: 1 });
const snapshot = (sym, seq, extra = {}) => ({ ...tick(sym, seq), type: "snapshot", ...extra });

test("subscriptions made before the connection opens are sent when it does", async () => {
  const { c, rec } = client();
  c.subscribe(["AAPL", "MSFT"]).subscribe("NVDA", { maxHz: 4 });
  const ws = await ScriptedSocket.nth(1);
  assert.equal(ws.sent.length, 0);
  ws.open();
  const requests = ws.requests();
  assert.deepEqual(requests.filter((r) => r.op === "subscribe"), [
    { op: "subscribe", symbols: ["AAPL", "MSFT"] },
    { op: "subscribe", symbols: ["NVDA"], max_hz: 4 },
  ]);
  assert.equal(requests.at(-1).op, "ping", "the subscribes are followed by a fence ping");
  c.close();
});

test("a reconnect resumes every symbol from the last seq the application saw", async () => {
  const { c, rec } = client();
  c.subscribe(["AAPL", "MSFT"], { batch: true });
  let ws = await ScriptedSocket.nth(1);
  ws.open();
  ws.receive({ type: "subscribed", symbols: ["AAPL", "MSFT"] });
  ws.receive(snapshot("AAPL", 10));
  ws.receive(snapshot("MSFT", 3));
  ws.receive({ type: "ticks", data: [tick("AAPL", 11), tick("MSFT", 4), tick("AAPL", 12)] });
  ws.drop(1006);
  const retry = await rec.untilState("reconnecting");
  assert.equal(retry.code, 1006);
  ws = await ScriptedSocket.nth(2);
  ws.open();
  assert.deepEqual(ws.requests()[0], { op: "subscribe", symbols: ["AAPL", "MSFT"], batch: true, from: { AAPL: 12, MSFT: 4 } });
  assert.equal(rec.of("state").at(-1).resumed, 2);
  // Replayed ticks continue the view; a duplicate is dropped.
  ws.receive({ type: "subscribed", symbols: ["AAPL", "MSFT"] });
  ws.receive(tick("AAPL", 13));
  ws.receive(tick("AAPL", 14));
  ws.receive(tick("AAPL", 13));
  assert.deepEqual(rec.of("tick").map((t) => `${t.sym}:${t.seq}`), ["AAPL:11", "MSFT:4", "AAPL:12", "AAPL:13", "AAPL:14"]);
  assert.equal(c.duplicatesDropped, 1);
  rec.assertContiguous();
  c.close();
});

test("a reset snapshot, or a plain one that moved on, is a reset; a gap is reported", async () => {
  const { c, rec } = client();
  c.subscribe(["A", "B", "C"]);
  const ws = await ScriptedSocket.nth(1);
  ws.open();
  ws.receive(snapshot("A", 5));
  ws.receive(snapshot("B", 5));
  ws.receive(snapshot("C", 5));
  ws.receive(snapshot("A", 900, { reset: true }));
  ws.receive(snapshot("B", 2)); // a restarted server's count
  ws.receive(snapshot("C", 5)); // nothing missed: not news
  ws.receive(tick("C", 9));
  assert.deepEqual(rec.of("reset").map((s) => [s.sym, s.seq, s.previousSeq]), [["A", 900, 5], ["B", 2, 5]]);
  assert.equal(rec.count("snapshot"), 3);
  assert.deepEqual(rec.of("gap"), [{ sym: "C", lastSeq: 5, seq: 9, missed: 3 }]);
  c.close();
});

test("requests are split to stay within the message size limit", async () => {
  const { c, rec } = client({ maxMessageBytes: 1024 });
  const names = Array.from({ length: 5000 }, (_, i) => `SYM${i}`);
  c.subscribe(names, { maxHz: 2.5 });
  let ws = await ScriptedSocket.nth(1);
  ws.open();
  for (const [i, name] of names.entries()) ws.receive(snapshot(name, i + 1));
  ws.drop(1001, "server shutting down");
  ws = await ScriptedSocket.nth(2);
  ws.open();
  const subscribes = ws.sent.filter((text) => text.includes('"subscribe"'));
  assert.ok(subscribes.length > 10, `${subscribes.length} requests`);
  for (const text of subscribes) assert.ok(Buffer.byteLength(text) <= 1024, `${Buffer.byteLength(text)} bytes`);
  const requests = subscribes.map((text) => JSON.parse(text));
  assert.deepEqual(requests.flatMap((r) => r.symbols), names);
  for (const r of requests) {
    assert.equal(r.max_hz, 2.5);
    assert.deepEqual(Object.keys(r.from), r.symbols, "each request resumes exactly its own symbols");
  }
  assert.equal(requests.flatMap((r) => Object.values(r.from)).reduce((a, b) => a + b, 0), (5000 * 5001) / 2);
  // Unsubscribing them all is split too.
  c.unsubscribe(names);
  const unsubscribes = ws.sent.filter((text) => text.includes('"unsubscribe"'));
  assert.ok(unsubscribes.length > 5);
  for (const text of unsubscribes) assert.ok(Buffer.byteLength(text) <= 1024);
  assert.deepEqual(unsubscribes.flatMap((text) => JSON.parse(text).symbols), names);
  c.close();
});

test("refused symbols are reported once and not asked for again", async () => {
  const { c, rec } = client();
  c.subscribe(["AAPL", "NOPE", "SECRET"]);
  let ws = await ScriptedSocket.nth(1);
  ws.open();
  const fence = ws.requests().find((r) => r.op === "ping").id;
  ws.receive({ type: "error", code: "unknown_symbol", message: 'unknown symbol "NOPE"; GET /symbols lists the symbols this server carries' });
  ws.receive({ type: "error", code: "not_entitled", message: 'your token does not cover "SECRET"; it covers AAPL' });
  ws.receive({ type: "subscribed", symbols: ["AAPL"] });
  ws.receive({ type: "pong", id: fence });
  assert.deepEqual(rec.of("error").map((e) => e.code), ["unknown_symbol", "not_entitled"]);
  assert.deepEqual(rec.of("refused").map((r) => [r.code, r.symbols]), [["unknown_symbol", ["NOPE"]], ["not_entitled", ["SECRET"]]]);
  assert.deepEqual(c.subscriptions, ["AAPL"]);
  assert.equal(c.refused.get("NOPE").code, "unknown_symbol");
  ws.drop(1006);
  ws = await ScriptedSocket.nth(2);
  ws.open();
  assert.deepEqual(ws.requests()[0].symbols, ["AAPL"]);
  c.close();
});

test("a connection that never opens is retried with growing delays and reported", async () => {
  const { c, rec } = client({ backoffBaseMs: 4, backoffMaxMs: 64 });
  for (let attempt = 1; attempt <= 7; attempt += 1) {
    (await ScriptedSocket.nth(attempt)).drop(1006);
  }
  const delays = rec.of("state").filter((s) => s.state === "reconnecting" && s.delayMs !== undefined).map((s) => s.delayMs);
  assert.equal(delays.length, 7);
  // Each delay lies in the upper half of base·2^attempt, capped.
  delays.forEach((delay, i) => {
    const ceiling = Math.min(64, 4 * 2 ** i);
    assert.ok(delay >= ceiling / 2 && delay <= ceiling, `delay ${i}: ${delay} ms, ceiling ${ceiling}`);
  });
  assert.ok(rec.of("error").filter((e) => e.code === "connect_failed").length >= 7);
  c.close();
  assert.equal(c.state, "closed");
});

test("a silent connection is given up and replaced", async () => {
  const { c, rec } = client({ pingIntervalMs: 20, silenceTimeoutMs: 100 });
  c.subscribe("AAPL");
  const first = await ScriptedSocket.nth(1);
  first.open();
  first.receive(snapshot("AAPL", 1));
  const lost = await rec.until("the silence to be noticed", () => rec.of("state").find((s) => s.code === 4000));
  assert.equal(lost.reason, "no data");
  assert.deepEqual(first.closedWith, { code: 4000, reason: "no data" });
  assert.ok(first.requests().some((r) => r.op === "ping" && r.id === "alive"), "pings were sent while waiting");
  await ScriptedSocket.nth(2);
  c.close();
});

test("options and arguments are checked", () => {
  assert.throws(() => new TickcastClient("ws://x/ws", { WebSocket: ScriptedSocket, backofBaseMs: 1 }), /unknown option "backofBaseMs"/);
  assert.throws(() => new TickcastClient("ws://x/ws", { WebSocket: ScriptedSocket, maxMessageBytes: 10 }), /maxMessageBytes/);
  const c = new TickcastClient("ws://x/ws", { WebSocket: ScriptedSocket, autoConnect: false });
  assert.throws(() => c.subscribe([]), /non-empty array/);
  assert.throws(() => c.subscribe("A", { maxHz: 5000 }), RangeError);
  assert.equal(c.state, "idle");
});

test("1008 (slow consumer) and 1001 (shutdown) closes are reported; repeated 1008s keep backing off", async () => {
  const { c, rec } = client({ backoffBaseMs: 4, backoffMaxMs: 1000 });
  c.subscribe("AAPL");
  let ws = await ScriptedSocket.nth(1);
  ws.open();
  ws.receive(snapshot("AAPL", 1));
  ws.drop(1001, "server shutting down");
  const attempts = [];
  for (let n = 2; n <= 5; n += 1) {
    ws = await ScriptedSocket.nth(n);
    ws.open();
    assert.deepEqual(ws.requests()[0], { op: "subscribe", symbols: ["AAPL"], from: { AAPL: n - 1 } }, `connection ${n} resumes`);
    ws.receive(tick("AAPL", n));
    ws.drop(1008, "slow consumer");
  }
  const closes = rec.of("state").filter((s) => s.state === "reconnecting" && s.delayMs !== undefined);
  assert.deepEqual(closes.map((s) => [s.code, s.reason]), [[1001, "server shutting down"], ...Array(4).fill([1008, "slow consumer"])]);
  // A served connection resets the backoff, except one closed as slow.
  for (const s of closes) attempts.push(s.attempt);
  assert.deepEqual(attempts, [1, 2, 3, 4, 5]);
  rec.assertContiguous();
  c.close();
});

test("a symbol served before is not dropped when a restarted server does not carry it yet; unanswered names are not refused", async () => {
  const { c, rec } = client();
  c.subscribe(["AAPL", "GONE", "NEVER", "QUIET"]);
  let ws = await ScriptedSocket.nth(1);
  ws.open();
  let fence = ws.requests().find((r) => r.op === "ping").id;
  ws.receive({ type: "error", code: "unknown_symbol", message: 'unknown symbol "NEVER"; GET /symbols lists the symbols this server carries' });
  ws.receive({ type: "subscribed", symbols: ["AAPL", "GONE"] });
  ws.receive(snapshot("AAPL", 5));
  ws.receive(snapshot("GONE", 7));
  // QUIET gets no answer at all: the error quotes only NEVER.
  ws.receive({ type: "pong", id: fence });
  assert.deepEqual(rec.of("refused").map((r) => [r.code, r.symbols]), [["unknown_symbol", ["NEVER"]]]);
  assert.deepEqual(c.subscriptions, ["AAPL", "GONE", "QUIET"]);

  // The server restarts and has not learnt GONE from its feed yet.
  ws.drop(1001, "server shutting down");
  ws = await ScriptedSocket.nth(2);
  ws.open();
  assert.deepEqual(ws.requests()[0], { op: "subscribe", symbols: ["AAPL", "GONE", "QUIET"], from: { AAPL: 5, GONE: 7 } });
  fence = ws.requests().find((r) => r.op === "ping").id;
  const sentBefore = ws.sent.length;
  ws.receive({ type: "error", code: "unknown_symbol", message: 'unknown symbol "GONE"; the feed has not published it (yet); GET /symbols lists what it has' });
  ws.receive({ type: "subscribed", symbols: ["AAPL", "QUIET"] });
  ws.receive({ type: "pong", id: fence });
  assert.equal(rec.count("refused"), 1, "nothing more is refused");
  assert.deepEqual(c.subscriptions, ["AAPL", "GONE", "QUIET"]);
  assert.equal(c.refused.has("GONE"), false);
  assert.equal(c.lastSeq("GONE"), 7);
  // It is asked for again on the same connection, resuming from its last seq.
  const again = await ws.untilSent("GONE to be asked for again", (r) => r.op === "subscribe", sentBefore);
  assert.deepEqual(again, { op: "subscribe", symbols: ["GONE"], from: { GONE: 7 } });

  // And on the next connection, still resuming.
  ws.drop(1006);
  ws = await ScriptedSocket.nth(3);
  ws.open();
  assert.deepEqual(ws.requests()[0], { op: "subscribe", symbols: ["AAPL", "GONE", "QUIET"], from: { AAPL: 5, GONE: 7 } });
  ws.receive({ type: "subscribed", symbols: ["AAPL", "GONE", "QUIET"] });
  ws.receive(snapshot("GONE", 2, { reset: true }));
  assert.deepEqual(rec.of("reset").map((r) => [r.sym, r.seq, r.previousSeq]), [["GONE", 2, 7]]);
  c.close();
});

test("close() and connect() while the token is awaited open one socket, not two", async () => {
  const pending = [];
  const token = () => new Promise((resolve) => pending.push(resolve));
  const { c, rec } = client({ token });
  c.subscribe("AAPL");
  await rec.untilState("connecting");
  assert.equal(pending.length, 1);
  c.close();
  c.connect();
  assert.equal(pending.length, 2, "the new attempt asks for a token of its own");
  pending[1]("fresh");
  const ws = await ScriptedSocket.nth(1);
  assert.equal(ws.url, "ws://server/ws?token=fresh");
  // The stale attempt's token arrives last; it must not open a socket.
  pending[0]("stale");
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(ScriptedSocket.made.length, 1, ScriptedSocket.made.map((s) => s.url).join(", "));
  ws.open();
  assert.equal(c.state, "open");
  c.close();
});

test("the backoff starts over only after a served connection, and never after 1002, 1003, 1007 or 1009", async () => {
  const { c, rec } = client({ backoffBaseMs: 2, backoffMaxMs: 60_000 });
  c.subscribe("AAPL");
  const attempts = () => rec.of("state").filter((s) => s.state === "reconnecting" && s.delayMs !== undefined).map((s) => s.attempt);
  let n = 0;
  const next = async () => {
    n += 1;
    const ws = await ScriptedSocket.nth(n);
    ws.open();
    return ws;
  };
  const answer = (ws) => {
    ws.receive({ type: "subscribed", symbols: ["AAPL"] });
    ws.receive(snapshot("AAPL", n));
    ws.receive({ type: "pong", id: ws.requests().find((r) => r.op === "ping").id });
  };
  // Opened and answered, but no tick after the answer: not served.
  for (let i = 0; i < 3; i += 1) {
    const ws = await next();
    answer(ws);
    ws.drop(1011, "internal error");
  }
  assert.deepEqual(attempts(), [1, 2, 3], "connections dropped before serving keep backing off");
  // A tick after the answer: served, so the backoff starts over.
  let ws = await next();
  answer(ws);
  ws.receive(tick("AAPL", n + 1));
  ws.drop(1006);
  assert.deepEqual(attempts(), [1, 2, 3, 1]);
  // Closes for what the client sent never start it over, served or not.
  for (const code of [1002, 1003, 1007, 1009]) {
    ws = await next();
    answer(ws);
    ws.receive(tick("AAPL", n + 1));
    ws.drop(code);
  }
  assert.deepEqual(attempts(), [1, 2, 3, 1, 2, 3, 4, 5]);
  const tooBig = rec.of("error").filter((e) => e.code === "message_too_big");
  assert.equal(tooBig.length, 1, "1009 is reported once");
  assert.match(tooBig[0].message, /message size limit/);
  assert.match(tooBig[0].message, /maxMessageBytes/);
  c.close();
});

test("a new maxHz for * applies on the live connection: everything is subscribed anew, resuming", async () => {
  const { c, rec } = client();
  c.subscribe("*").subscribe("C", { maxHz: 5 });
  const ws = await ScriptedSocket.nth(1);
  ws.open();
  ws.receive({ type: "subscribed", symbols: ["A", "B", "C"] });
  ws.receive(snapshot("A", 3));
  ws.receive(snapshot("B", 4));
  ws.receive(snapshot("C", 9));
  const sentBefore = ws.sent.length;
  c.subscribe("*", { maxHz: 2 });
  const requests = ws.requests().slice(sentBefore);
  assert.deepEqual(requests.slice(0, 3), [
    { op: "unsubscribe", symbols: ["*"] },
    { op: "subscribe", symbols: ["C"], max_hz: 5, from: { C: 9 } },
    { op: "subscribe", symbols: ["*"], max_hz: 2, from: { A: 3, B: 4 } },
  ]);
  assert.equal(requests.at(-1).op, "ping");
  // Ticks already on the way, then the replay: each once, in order.
  ws.receive(tick("A", 4));
  ws.receive({ type: "unsubscribed", symbols: ["A", "B", "C"] });
  ws.receive({ type: "subscribed", symbols: ["A", "B", "C"] });
  ws.receive(tick("A", 4));
  ws.receive(tick("A", 5));
  assert.deepEqual(rec.of("tick").map((t) => `${t.sym}:${t.seq}`), ["A:4", "A:5"]);
  assert.equal(c.duplicatesDropped, 1);
  // The same rate again changes nothing.
  const sentAfter = ws.sent.length;
  c.subscribe("*", { maxHz: 2 });
  assert.equal(ws.sent.length, sentAfter);
  c.close();
});

test("after a restart, a resumed symbol that had not traded there yet starts over as a reset at its first tick", async () => {
  const { c, rec } = client();
  c.subscribe(["A", "B"]);
  let ws = await ScriptedSocket.nth(1);
  ws.open();
  ws.receive({ type: "subscribed", symbols: ["A", "B"] });
  ws.receive(snapshot("A", 50));
  ws.receive(snapshot("B", 60));
  ws.drop(1001, "server shutting down");
  ws = await ScriptedSocket.nth(2);
  ws.open();
  assert.deepEqual(ws.requests()[0].from, { A: 50, B: 60 });
  // The new run: B is replayed, A had not traded and sends nothing until
  // its first tick, whose count started over.
  ws.receive({ type: "subscribed", symbols: ["A", "B"] });
  ws.receive(tick("B", 61));
  ws.receive(tick("A", 1));
  ws.receive(tick("A", 2));
  ws.receive(tick("B", 61));
  assert.deepEqual(rec.of("reset").map((r) => [r.sym, r.seq, r.previousSeq, r.type]), [["A", 1, 50, "snapshot"]]);
  assert.deepEqual(rec.of("tick").map((t) => `${t.sym}:${t.seq}`), ["B:61", "A:2"]);
  assert.equal(c.duplicatesDropped, 1, "only B's repeat is a duplicate");
  rec.assertContiguous();
  c.close();
});
