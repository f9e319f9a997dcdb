// The client against the real server: subscribe, snapshots before ticks,
// unsubscribe, batches unpacked in order, error replies surfaced and
// refused symbols not asked for again, requests split to fit a small
// --max-message-bytes.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import WebSocket from "ws";

import { TickcastClient } from "../src/index.js";
import { Recorder } from "../test-support/record.js";
import { startServer, untilEverySymbolTraded } from "../test-support/server.js";

/** A `ws` WebSocket that keeps every frame it receives and sends. */
class SpySocket extends WebSocket {
  static received = [];
  static sent = [];
  static made = 0;
  constructor(...args) {
    super(...args);
    SpySocket.made += 1;
    this.addEventListener("message", (event) => SpySocket.received.push(event.data));
  }
  send(data) {
    SpySocket.sent.push(data);
    super.send(data);
  }
}

const DECIMAL = /^-?[0-9]+(\.[0-9]+)?$/;

let server;
let symbols;
before(async () => {
  server = await startServer();
  symbols = await untilEverySymbolTraded(server);
});
after(() => server.stop());

/** Clients of the running test, closed when it ends, passed or not. */
const open = [];
afterEach(() => {
  for (const client of open.splice(0)) client.close();
});

function connect(options = {}) {
  const client = new TickcastClient(server.url, { WebSocket, ...options });
  open.push(client);
  return { client, rec: new Recorder(client) };
}

test("subscribe: a snapshot of each symbol, then its ticks gap-free, prices as exact text", async () => {
  const { client, rec } = connect();
  client.subscribe(["AAPL", "MSFT", "NVDA"]);
  const opened = await rec.untilState("open");
  assert.equal(opened.resumed, 0);
  await rec.until("20 ticks of each symbol", () => ["AAPL", "MSFT", "NVDA"].every((s) => rec.ticksOf(s) >= 20));
  assert.deepEqual(rec.of("subscribed")[0].symbols, ["AAPL", "MSFT", "NVDA"]);
  for (const sym of ["AAPL", "MSFT", "NVDA"]) assert.equal(rec.bySymbol.get(sym)[0].type, "snapshot", `${sym} starts with a snapshot`);
  rec.assertContiguous();
  for (const t of [...rec.of("tick"), ...rec.of("snapshot")]) {
    for (const field of ["px", "bid", "ask"]) assert.match(t[field], DECIMAL, `${t.sym} ${field}`);
  }
  assert.deepEqual(new Set(rec.of("tick").map((t) => t.sym)), new Set(["AAPL", "MSFT", "NVDA"]));
  client.close();
  assert.equal(rec.of("state").at(-1).state, "closed");
});

test("unsubscribe: the server confirms, and no tick of the symbol follows", async () => {
  const { client, rec } = connect();
  client.subscribe(["AAPL", "MSFT"]);
  await rec.until("ticks of both", () => rec.ticksOf("AAPL") > 3 && rec.ticksOf("MSFT") > 3);
  client.unsubscribe("AAPL");
  const cut = rec.events.length;
  const reply = await rec.until("the unsubscribed reply", () => rec.of("unsubscribed")[0]);
  assert.deepEqual(reply.symbols, ["AAPL"]);
  const msft = rec.ticksOf("MSFT");
  await rec.until("more MSFT ticks", () => rec.ticksOf("MSFT") >= msft + 20);
  const later = rec.events.slice(cut).filter((e) => e.type === "tick");
  assert.ok(later.every((e) => e.payload.sym === "MSFT"), "only MSFT after the unsubscribe");
  assert.deepEqual(client.subscriptions, ["MSFT"]);
  client.close();
});

test("batches: each tick of a `ticks` frame is a tick event, in the frame's order", async () => {
  SpySocket.received = [];
  const { client, rec } = connect({ WebSocket: SpySocket });
  client.subscribe("*", { batch: true });
  await rec.until("a batch of several ticks", () => SpySocket.received.some((text) => text.startsWith('{"type":"ticks"') && JSON.parse(text).data.length > 1));
  await rec.until("200 ticks", () => rec.count("tick") >= 200);
  client.close();
  // What the server sent, unpacked by hand, is what the application saw.
  const sent = [];
  for (const text of SpySocket.received) {
    const msg = JSON.parse(text);
    if (msg.type === "ticks") sent.push(...msg.data.map((t) => `${t.sym}:${t.seq}`));
    if (msg.type === "tick") sent.push(`${msg.sym}:${msg.seq}`);
  }
  const seen = rec.of("tick").map((t) => `${t.sym}:${t.seq}`);
  assert.deepEqual(seen, sent.slice(0, seen.length));
  assert.equal(new Set(rec.of("tick").map((t) => t.sym)).size, symbols.length);
  rec.assertContiguous();
});

test("errors are surfaced by code; refused symbols are not asked for again after a reconnect", async () => {
  SpySocket.sent = [];
  SpySocket.made = 0;
  const { client, rec } = connect({ WebSocket: SpySocket, backoffBaseMs: 20, backoffMaxMs: 100 });
  client.subscribe(["AAPL", "NO.SUCH"]);
  const err = await rec.until("the unknown_symbol error", () => rec.of("error")[0]);
  assert.equal(err.code, "unknown_symbol");
  assert.match(err.message, /NO\.SUCH/);
  const refused = await rec.until("the refusal", () => rec.of("refused")[0]);
  assert.deepEqual(refused.symbols, ["NO.SUCH"]);
  assert.deepEqual(client.subscriptions, ["AAPL"]);
  // The server closes a client that breaks the protocol (a binary
  // frame is an error; a 64 KiB+1 text frame a 1009 close): it comes back.
  await rec.until("AAPL ticks", () => rec.ticksOf("AAPL") > 2);
  const before = rec.events.length;
  client._conn.ws.send("x".repeat(64 * 1024 + 1));
  const lost = await rec.until("the 1009 close", () => rec.events.slice(before).find((e) => e.type === "state" && e.payload.code === 1009));
  assert.equal(lost.payload.state, "reconnecting");
  const reopened = await rec.untilState("open", before);
  assert.equal(reopened.resumed, 1);
  const ticks = rec.ticksOf("AAPL");
  await rec.until("AAPL ticks after the reconnect", () => rec.ticksOf("AAPL") > ticks + 5);
  assert.equal(SpySocket.made, 2);
  const subscribes = SpySocket.sent.filter((t) => t.includes('"subscribe"')).map((t) => JSON.parse(t));
  assert.deepEqual(subscribes.map((r) => r.symbols), [["AAPL", "NO.SUCH"], ["AAPL"]]);
  assert.equal(rec.of("error").filter((e) => e.code === "unknown_symbol").length, 1);
  rec.assertContiguous();
  client.close();
});

test("a bad request is an error event and the stream goes on", async () => {
  const { client, rec } = connect();
  client.subscribe("AAPL");
  await rec.untilState("open");
  client._conn.ws.send('{"op":"subscribe","symbols":"AAPL"}');
  client._conn.ws.send("{nope");
  await rec.until("two errors", () => rec.count("error") >= 2);
  assert.deepEqual(rec.of("error").map((e) => e.code), ["bad_request", "bad_json"]);
  const ticks = rec.ticksOf("AAPL");
  await rec.until("more ticks", () => rec.ticksOf("AAPL") > ticks + 3);
  client.close();
});
