// Test support: a TCP proxy between client and server that a test can cut
// (every connection through it reset at once), stall (connections kept
// open but silent), and point at another server.

import net from "node:net";

export class Proxy {
  /** Starts listening on 127.0.0.1 port 0, forwarding to `target` (`host:port`). */
  static async start(target) {
    const proxy = new Proxy(target);
    await new Promise((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  constructor(target) {
    this.target = target;
    /** @type {Set<{client: net.Socket, upstream: net.Socket}>} */
    this.pairs = new Set();
    this.accepted = 0;
    this.server = net.createServer((client) => this._accept(client));
  }

  get url() {
    const { port } = this.server.address();
    return `ws://127.0.0.1:${port}/ws`;
  }

  _accept(client) {
    this.accepted += 1;
    const [host, port] = this.target.split(":");
    const upstream = net.connect(Number(port), host);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Resets every connection through the proxy, as a dropped network would. */
  cut() {
    const count = this.pairs.size;
    for (const { client, upstream } of [...this.pairs]) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    this.pairs.clear();
    return count;
  }

  /** Stops forwarding on every current connection, leaving them open: a silent network. */
  stall() {
    for (const pair of this.pairs) {
      const { client, upstream } = pair;
      pair.stalled = true;
      upstream.unpipe(client);
      client.unpipe(upstream);
      upstream.pause();
      client.pause();
    }
    return this.pairs.size;
  }

  /** Resets the connections `stall` left open (a paused socket does not notice its peer leave). */
  dropStalled() {
    for (const pair of [...this.pairs]) {
      if (!pair.stalled) continue;
      this.pairs.delete(pair);
      pair.client.resetAndDestroy();
      pair.upstream.destroy();
    }
  }

  async close() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
