// Guarantees across failures: a TCP proxy between client and server is cut
// mid-stream several times and stalled once, then the server is restarted.
// The application's view of every symbol stays contiguous (each seq the
// previous + 1) across the cuts, and shows a reset only where the server
// could not fill the gap: after the restart, whose seqs start over.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";

import { TickcastClient } from "../src/index.js";
import { Proxy } from "../test-support/proxy.js";
import { Recorder } from "../test-support/record.js";
import { startServer } from "../test-support/server.js";

const CUTS = 3;

test("cuts, a stall and a restart: every symbol contiguous, or an explicit reset after the restart", async () => {
  let server = await startServer();
  const proxy = await Proxy.start(server.addr);
  const client = new TickcastClient(proxy.url, {
    WebSocket,
    backoffBaseMs: 20,
    backoffMaxMs: 200,
    pingIntervalMs: 100,
    silenceTimeoutMs: 1_000,
  });
  const rec = new Recorder(client);
  try {
    client.subscribe("*", { batch: true });
    await rec.untilState("open");
    const names = (await (await fetch(server.httpUrl("/symbols"))).json()).map((row) => row.sym);
    const everySymbolMoved = (baseline) => names.every((sym) => rec.ticksOf(sym) >= (baseline.get(sym) || 0) + 5);
    const counts = () => new Map(names.map((sym) => [sym, rec.ticksOf(sym)]));

    for (let cut = 1; cut <= CUTS; cut += 1) {
      const baseline = counts();
      await rec.until(`every symbol to tick before cut ${cut}`, () => everySymbolMoved(baseline));
      const before = rec.events.length;
      assert.ok(proxy.cut() >= 1, "a connection to cut");
      const reopened = await rec.untilState("open", before);
      assert.equal(reopened.resumed, names.length, `cut ${cut} resumes every symbol`);
    }

    // A network that goes silent without closing anything.
    let baseline = counts();
    await rec.until("every symbol to tick before the stall", () => everySymbolMoved(baseline));
    let before = rec.events.length;
    assert.ok(proxy.stall() >= 1);
    const silent = await rec.until("the silence to be noticed", () => rec.events.slice(before).find((e) => e.type === "state" && e.payload.code === 4000));
    assert.equal(silent.payload.reason, "no data");
    proxy.dropStalled();
    await rec.untilState("open", before);
    baseline = counts();
    await rec.until("every symbol to tick after the stall", () => everySymbolMoved(baseline));
    assert.equal(rec.count("reset"), 0, "the history filled every gap so far");
    assert.equal(rec.count("gap"), 0);
    rec.assertContiguous();

    // The server restarts (elsewhere; the proxy follows it): its seqs
    // start over, so the client's `from` is out of its reach.
    before = rec.events.length;
    await server.stop();
    const shutdown = await rec.until("the 1001 close", () => rec.events.slice(before).find((e) => e.type === "state" && e.payload.code === 1001));
    assert.equal(shutdown.payload.state, "reconnecting");
    server = await startServer();
    proxy.target = server.addr;
    await rec.untilState("open", before);
    baseline = counts();
    await rec.until("every symbol to tick on the new server", () => everySymbolMoved(baseline));

    // Every resume's `from` was exactly the last seq seen: a `from` one too
    // low would have replayed a tick the client had, and dropped it.
    assert.equal(client.duplicatesDropped, 0, "no tick was sent twice");
    const resets = rec.assertContiguous();
    assert.ok(resets.size > 0, "the restart shows as resets");
    const firstReset = rec.events.findIndex((e) => e.type === "reset");
    assert.ok(firstReset > before, "no reset before the restart");
    for (const reset of rec.of("reset")) assert.ok(reset.seq < reset.previousSeq, `${reset.sym}: reset to ${reset.seq} from ${reset.previousSeq}`);
    assert.ok(rec.of("state").filter((s) => s.state === "open").length >= CUTS + 3);
  } finally {
    client.close();
    await proxy.close();
    await server.stop();
  }
});
