// A typed Node application of tickcast-client, checked by `tsc --noEmit`
// in CI so the declarations (index.d.ts) stay true to the API.

import WebSocket from "ws";
import { TickcastClient, TickcastError, type Price, type Tick } from "tickcast-client";

const client = new TickcastClient("ws://127.0.0.1:8080/ws", {
  WebSocket,
  token: async () => process.env.TICKCAST_TOKEN ?? "",
  backoffBaseMs: 250,
  backoffMaxMs: 10_000,
});

const last = new Map<string, Price>();

client
  .subscribe(["AAPL", "MSFT"], { maxHz: 4 })
  .subscribe("NVDA", { batch: true })
  .on("snapshot", (s) => last.set(s.sym, s.px))
  .on("tick", (t: Tick) => {
    const cents: bigint = BigInt(t.px.replace(".", "")); // exact, never a float
    last.set(t.sym, t.px);
    if (cents < 0n) console.log(`${t.sym} trades below zero`);
  })
  .on("reset", (r) => console.log(`${r.sym} restarted at seq ${r.seq} (had ${r.previousSeq ?? "nothing"})`))
  .on("refused", (r) => console.warn(`${r.symbols.join(", ")}: ${r.code}`))
  .on("state", ({ state, code, delayMs }) => console.log(state, code, delayMs))
  .on("error", (err: TickcastError) => {
    if (err.code === "not_entitled") console.warn(err.message);
  });

client.addEventListener("gap", (event) => console.warn(`${event.detail.sym} skipped ${event.detail.missed}`));

const seq: number | undefined = client.lastSeq("AAPL");
console.log(seq, client.state, client.subscriptions);
setTimeout(() => client.close(), 10_000);
