// Tokens against a server started with --auth-secret: a token function is
// asked again after a 4001 (token expired) close and the stream resumes
// gap-free; a refused token is retried with growing delays and reported;
// symbols outside the token are refused once.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import WebSocket from "ws";

import { TickcastClient } from "../src/index.js";
import { Recorder } from "../test-support/record.js";
import { mintToken, startServer } from "../test-support/server.js";

const SECRET = "node-test-secret";

let server;
before(async () => {
  server = await startServer(["--auth-secret", SECRET]);
});
after(() => server.stop());

/** Clients of the running test, closed when it ends, passed or not. */
const open = [];
afterEach(() => {
  for (const client of open.splice(0)) client.close();
});

test("after a 4001 close the token function is called again and the stream resumes gap-free", async () => {
  let calls = 0;
  const token = async () => {
    calls += 1;
    // `exp` is whole seconds: the first token has one to two seconds left.
    return mintToken(SECRET, ["AAPL", "MSFT"], calls === 1 ? 2 : 3600);
  };
  const client = new TickcastClient(server.url, { WebSocket, token, backoffBaseMs: 20, backoffMaxMs: 200 });
  open.push(client);
  const rec = new Recorder(client);
  client.subscribe(["AAPL", "MSFT"]);
  const expired = await rec.until("the 4001 close", () => rec.of("state").find((s) => s.code === 4001));
  assert.equal(expired.state, "reconnecting");
  assert.equal(expired.reason, "token expired");
  const at = rec.events.findIndex((e) => e.payload === expired);
  const reopened = await rec.untilState("open", at);
  assert.equal(reopened.resumed, 2);
  assert.equal(calls, 2);
  const ticks = rec.ticksOf("AAPL");
  await rec.until("AAPL ticks on the new token", () => rec.ticksOf("AAPL") > ticks + 10);
  assert.equal(rec.count("reset"), 0);
  rec.assertContiguous();
  assert.equal(rec.count("error"), 0, JSON.stringify(rec.of("error")));
  client.close();
});

test("a token refused before the upgrade is retried with growing delays, and reported", async () => {
  const started = Date.now();
  const client = new TickcastClient(server.url, { WebSocket, token: "not-a-token", backoffBaseMs: 40, backoffMaxMs: 320 });
  open.push(client);
  const rec = new Recorder(client);
  client.subscribe("AAPL");
  await rec.until("five failed attempts", () => rec.of("error").length >= 5);
  client.close();
  const errors = rec.of("error");
  assert.ok(errors.every((e) => e.code === "connect_failed"), JSON.stringify(errors));
  assert.match(errors[0].message, /401/);
  assert.match(errors[0].message, /token/);
  const delays = rec.of("state").filter((s) => s.delayMs !== undefined).map((s) => s.delayMs);
  delays.slice(0, 5).forEach((delay, i) => {
    const ceiling = Math.min(320, 40 * 2 ** i);
    assert.ok(delay >= ceiling / 2 && delay <= ceiling, `delay ${i}: ${delay} ms, ceiling ${ceiling}`);
  });
  // Four waits of at least 20, 40, 80 and 160 ms lie between five attempts.
  assert.ok(Date.now() - started >= 300, `five attempts in ${Date.now() - started} ms`);
  assert.ok(!rec.of("state").some((s) => s.state === "open"));
});

test("symbols outside the token are refused once; the others stream", async () => {
  const client = new TickcastClient(server.url, { WebSocket, token: mintToken(SECRET, ["AAPL"], 3600) });
  open.push(client);
  const rec = new Recorder(client);
  client.subscribe(["AAPL", "MSFT"]);
  const refused = await rec.until("the refusal", () => rec.of("refused")[0]);
  assert.equal(refused.code, "not_entitled");
  assert.deepEqual(refused.symbols, ["MSFT"]);
  assert.deepEqual(rec.of("error").map((e) => e.code), ["not_entitled"]);
  await rec.until("AAPL ticks", () => rec.ticksOf("AAPL") > 5);
  assert.equal(rec.ticksOf("MSFT"), 0);
  assert.deepEqual(client.subscriptions, ["AAPL"]);
  client.close();
});
