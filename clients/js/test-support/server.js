// Test support: the real tickcast binary (path in TICKCAST_BIN) as a child
// process on 127.0.0.1 port 0, its address read from its start-up log line.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createInterface } from "node:readline";

/** Longest any single wait in a test may take. */
export const WAIT_MS = 20_000;

/** Pause between two polls of GET /symbols. */
const POLL_MS = 20;

/** The flags every test server runs with: a small, brisk feed on one shard. */
export const TEST_FLAGS = ["--symbols", "20", "--rate", "400", "--shards", "1"];

/**
 * Starts the server with `flags` (and those of TEST_FLAGS they do not
 * name) and resolves once it serves: `{addr, url, httpUrl(path), stop()}`.
 */
export async function startServer(flags = []) {
  const bin = process.env.TICKCAST_BIN;
  if (!bin) {
    throw new Error("TICKCAST_BIN is not set: build the server (cargo build) and set TICKCAST_BIN to the tickcast binary, e.g. TICKCAST_BIN=target/debug/tickcast");
  }
  const defaults = [];
  for (let i = 0; i < TEST_FLAGS.length; i += 2) {
    if (!flags.includes(TEST_FLAGS[i])) defaults.push(TEST_FLAGS[i], TEST_FLAGS[i + 1]);
  }
  const child = spawn(bin, ["--listen", "127.0.0.1:0", "--log-format", "json", ...defaults, ...flags], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: process.env.TICKCAST_TEST_LOG || "info" },
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const lines = createInterface({ input: child.stdout });
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} printed no start-up line within ${WAIT_MS} ms`)), WAIT_MS);
    exited.then(({ code, signal }) => reject(new Error(`${bin} exited (code ${code}, signal ${signal}) before serving; its error is on stderr above`)));
    lines.on("line", (line) => {
      if (process.env.TICKCAST_TEST_LOG) console.error(`server: ${line}`);
      const match = /ws:\/\/([^/\s]+)\/ws/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  return {
    addr,
    url: `ws://${addr}/ws`,
    httpUrl: (path) => `http://${addr}${path}`,
    /** SIGTERM, as an operator stops it: clients get a 1001 close. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), WAIT_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Resolves once GET /symbols shows that every symbol has traded (so a
 * subscribe gets a snapshot of each), failing after WAIT_MS.
 */
export async function untilEverySymbolTraded(server, headers = {}) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const rows = await (await fetch(server.httpUrl("/symbols"), { headers })).json();
    if (rows.length > 0 && rows.every((row) => row.seq > 0)) return rows.map((row) => row.sym);
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for every symbol to trade`);
    // The server has no event to wait for here: poll, gently.
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** An HS256 token for a server started with `--auth-secret secret`. */
export function mintToken(secret, symbols, ttlSeconds) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = { sub: "test", exp: Math.floor(Date.now() / 1000) + ttlSeconds, symbols };
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}
