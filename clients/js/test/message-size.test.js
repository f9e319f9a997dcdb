// Requests split to fit the server's --max-message-bytes: subscribing and
// resuming every symbol of a server with many of them, within 512 bytes.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";

import { TickcastClient } from "../src/index.js";
import { Proxy } from "../test-support/proxy.js";
import { Recorder } from "../test-support/record.js";
import { startServer } from "../test-support/server.js";

test("subscribe and resume 300 symbols through 512-byte messages", async () => {
  const server = await startServer(["--symbols", "300", "--max-message-bytes", "512", "--rate", "1500"]);
  const proxy = await Proxy.start(server.addr);
  let client = null;
  try {
    const names = (await (await fetch(server.httpUrl("/symbols"))).json()).map((row) => row.sym);
    assert.equal(names.length, 300);
    client = new TickcastClient(proxy.url, { WebSocket, maxMessageBytes: 512, backoffBaseMs: 20, backoffMaxMs: 100 });
    const rec = new Recorder(client);
    client.subscribe(names);
    await rec.until("every symbol confirmed", () => new Set(rec.of("subscribed").flatMap((s) => s.symbols)).size === 300);
    await rec.until("ticks of 250 symbols", () => [...rec.bySymbol.values()].filter((seen) => seen.length > 1).length >= 250);
    const before = rec.events.length;
    assert.ok(proxy.cut() >= 1);
    const reopened = await rec.untilState("open", before);
    assert.ok(reopened.resumed >= 250, `resumed ${reopened.resumed}`);
    const ticks = rec.count("tick");
    await rec.until("ticks after the resume", () => rec.count("tick") > ticks + 500);
    // No 1009 (message too big) close, nothing refused, nothing missed.
    assert.ok(!rec.of("state").some((s) => s.code === 1009));
    assert.equal(rec.count("error"), 0, JSON.stringify(rec.of("error")));
    assert.equal(rec.count("reset"), 0);
    rec.assertContiguous();
  } finally {
    client?.close();
    await proxy.close();
    await server.stop();
  }
});
