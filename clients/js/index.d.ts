// Type declarations of tickcast-client (src/index.js); README.md explains
// each option, event and guarantee.

/** A price as its exact decimal text from the wire, e.g. "187.25", "-3.25", "100". */
export type Price = string;

/** One trade update of a symbol. */
export interface Tick {
  type: "tick";
  sym: string;
  /** Per symbol: 1 for its first tick, each next one exactly 1 more. */
  seq: number;
  px: Price;
  bid: Price;
  ask: Price;
  size: number;
  /** The producer's clock, nanoseconds since the Unix epoch (as a float: about 256 ns of precision). */
  ts: number;
}

/** A symbol's current quote: its last tick. */
export interface Snapshot extends Omit<Tick, "type"> {
  type: "snapshot";
  reset?: boolean;
}

/** A symbol's current quote after ticks were missed that could not be replayed. */
export interface Reset extends Snapshot {
  reset: true;
  /** The last seq the application had seen, if any. */
  previousSeq: number | undefined;
}

/** Error codes of the server (docs/PROTOCOL.md). */
export type ServerErrorCode =
  | "bad_json"
  | "bad_request"
  | "unknown_op"
  | "unknown_symbol"
  | "too_many_symbols"
  | "binary_not_supported"
  | "not_entitled"
  | "rate_limited";

/** Error codes of the client itself. */
/** `message_too_big`: the server closed with 1009; set maxMessageBytes to its --max-message-bytes or lower. */
export type ClientErrorCode = "connect_failed" | "token_failed" | "bad_message" | "message_too_big";

export type ErrorCode = ServerErrorCode | ClientErrorCode;

export class TickcastError extends Error {
  constructor(code: ErrorCode | string, message: string);
  readonly name: "TickcastError";
  /** Match on this; the message is for people. */
  readonly code: ErrorCode | (string & {});
}

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface StateChange {
  state: ConnectionState;
  /** The close code that ended the last connection (1001 shutdown, 1008 slow consumer or rate limit, 4000 silent, 4001 token expired, 1006 lost). */
  code?: number;
  reason?: string;
  /** With `reconnecting` after a close: how long until the next attempt. */
  delayMs?: number;
  /** Connection attempts since the last one the server served (delivered a tick or snapshot after its subscriptions were answered, or stayed open for backoffMaxMs). */
  attempt?: number;
  /** With `open`: how many symbols this connection resumed with `from`. */
  resumed?: number;
}

export interface SymbolsChange {
  symbols: string[];
}

/** Symbols the server refused and had never confirmed: taken out of the subscriptions. */
export interface Refusal {
  symbols: string[];
  code: "unknown_symbol" | "not_entitled" | "too_many_symbols";
  message: string;
}

/** An unthrottled symbol's seq jumped: the server skipped ticks (its client was behind). */
export interface Gap {
  sym: string;
  lastSeq: number;
  seq: number;
  missed: number;
}

export interface TickcastEvents {
  tick: Tick;
  snapshot: Snapshot;
  reset: Reset;
  state: StateChange;
  error: TickcastError;
  subscribed: SymbolsChange;
  unsubscribed: SymbolsChange;
  refused: Refusal;
  gap: Gap;
}

export type TickcastEventName = keyof TickcastEvents;

/** What the client needs of a WebSocket: the browser's, or the `ws` package's. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface TickcastOptions {
  /** A token, or a function returning one (or a promise of one), called again after a 4001 close or a refused connection. */
  token?: string | (() => string | Promise<string>);
  /** The WebSocket class; defaults to the global one (Node before 22 has none: pass `ws`). */
  WebSocket?: WebSocketConstructor | (new (url: string) => unknown);
  /** First reconnect delay's ceiling; each failure doubles it. Default 500. */
  backoffBaseMs?: number;
  /** Largest reconnect delay. Default 15000. */
  backoffMaxMs?: number;
  /** How often the client pings an open connection. Default 5000. */
  pingIntervalMs?: number;
  /** A connection that delivers nothing for this long (or does not open) is given up. Default 15000. */
  silenceTimeoutMs?: number;
  /** Largest request, in bytes: the server's --max-message-bytes. Default 65536. */
  maxMessageBytes?: number;
  /** Connect at once (after the current task). Default true. */
  autoConnect?: boolean;
}

export interface SubscribeOptions {
  /** At most this many updates a second of each of these symbols (0.01 to 1000; 0 or undefined: every tick). */
  maxHz?: number;
  /** Ticks of the connection come in batches (delivered as single tick events all the same). */
  batch?: boolean;
}

export interface TickcastEvent<K extends TickcastEventName> {
  type: K;
  detail: TickcastEvents[K];
  target: TickcastClient;
}

export class TickcastClient {
  constructor(url: string | URL, options?: TickcastOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly subscriptions: string[];
  readonly refused: Map<string, TickcastError>;
  readonly duplicatesDropped: number;
  lastSeq(symbol: string): number | undefined;

  subscribe(symbols: string | readonly string[], options?: SubscribeOptions): this;
  unsubscribe(symbols: string | readonly string[]): this;
  connect(): this;
  close(): void;

  on<K extends TickcastEventName>(event: K, listener: (this: TickcastClient, payload: TickcastEvents[K]) => void): this;
  once<K extends TickcastEventName>(event: K, listener: (this: TickcastClient, payload: TickcastEvents[K]) => void): this;
  off<K extends TickcastEventName>(event: K, listener: (this: TickcastClient, payload: TickcastEvents[K]) => void): this;
  addEventListener<K extends TickcastEventName>(
    type: K,
    listener: ((event: TickcastEvent<K>) => void) | { handleEvent(event: TickcastEvent<K>): void },
  ): void;
  removeEventListener<K extends TickcastEventName>(
    type: K,
    listener: ((event: TickcastEvent<K>) => void) | { handleEvent(event: TickcastEvent<K>): void },
  ): void;
}

/** Parses a server message (or GET /symbols) with prices kept as their exact text. */
export function parseMessage(text: string): unknown;

/** Rewrites the price numbers of a JSON text as strings of the same digits. */
export function quotePrices(text: string): string;
