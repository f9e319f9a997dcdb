// Test support: records what a TickcastClient delivers to the application,
// per symbol, and waits for conditions on it with a deadline (re-checked
// on every event, never by sleeping).

import { WAIT_MS } from "./server.js";

const EVENTS = ["tick", "snapshot", "reset", "state", "error", "subscribed", "unsubscribed", "refused", "gap"];

export class Recorder {
  constructor(client) {
    this.client = client;
    /** @type {{type: string, payload: any}[]} every event, in order. */
    this.events = [];
    /** @type {Map<string, {type: string, seq: number}[]>} ticks, snapshots and resets per symbol. */
    this.bySymbol = new Map();
    this.waiters = new Set();
    for (const type of EVENTS) client.on(type, (payload) => this._record(type, payload));
  }

  _record(type, payload) {
    this.events.push({ type, payload });
    if (type === "tick" || type === "snapshot" || type === "reset") {
      if (!this.bySymbol.has(payload.sym)) this.bySymbol.set(payload.sym, []);
      this.bySymbol.get(payload.sym).push({ type, seq: payload.seq });
    }
    for (const waiter of [...this.waiters]) waiter();
  }

  of(type) {
    return this.events.filter((e) => e.type === type).map((e) => e.payload);
  }

  count(type) {
    let n = 0;
    for (const e of this.events) if (e.type === type) n += 1;
    return n;
  }

  /** Resolves with `condition()`'s first truthy value; rejects naming `what` after `ms`. */
  until(what, condition, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let value;
        try {
          value = condition();
        } catch (err) {
          done();
          reject(err);
          return;
        }
        if (value) {
          done();
          resolve(value);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Resolves once the client reports state `state` (after `since` events). */
  untilState(state, since = 0) {
    return this.until(`state ${state}`, () => this.events.slice(since).find((e) => e.type === "state" && e.payload.state === state)?.payload);
  }

  /**
   * Checks each symbol's view: it starts with a snapshot (or reset, or its
 * very first tick, seq 1, if it had not traded at the subscribe), every
   * tick is the previous seq + 1, and a reset is the only other way on.
   * Returns the resets seen, per symbol. Throws on the first violation.
   */
  assertContiguous() {
    const resets = new Map();
    for (const [sym, seen] of this.bySymbol) {
      let prev = null;
      for (const [at, entry] of seen.entries()) {
        if (entry.type === "reset") {
          resets.set(sym, (resets.get(sym) || 0) + 1);
        } else if (entry.type === "snapshot") {
          if (prev !== null) throw new Error(`${sym}: a second snapshot (seq ${entry.seq}) at ${at} without a reset`);
        } else if (prev === null) {
          // A symbol that had not traded yet starts with its first tick.
          if (entry.seq !== 1) throw new Error(`${sym}: tick ${entry.seq} before any snapshot`);
        } else if (entry.seq !== prev + 1) {
          const what = entry.seq <= prev ? "a duplicate" : `a gap of ${entry.seq - prev - 1}`;
          throw new Error(`${sym}: tick ${entry.seq} after ${prev}: ${what} (entry ${at} of ${seen.length})`);
        }
        prev = entry.seq;
      }
    }
    return resets;
  }

  /** Ticks (events) seen so far of `sym`. */
  ticksOf(sym) {
    return (this.bySymbol.get(sym) || []).filter((e) => e.type === "tick").length;
  }
}
