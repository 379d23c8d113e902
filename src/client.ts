// Typed client for consumers: Eden's treaty<App> for the route and the frame types, plus what a production
// client needs and Eden lacks: reconnect with backoff that follows the server's close and refusal policies,
// fresh tokens, resubscribe, a bounded publish queue, timeouts counted from the call, dead-server detection,
// and exact data delivery.
//
// Eden's EdenWS rewrites incoming data ("123" becomes 123, ISO strings become Date) and sends no headers, so
// this client takes the socket Eden opens (`EdenWS.ws`, a standard WebSocket) and parses frames itself with
// JSON.parse. It uses only standard WebSocket, fetch and timer APIs, so it runs in Bun and in browsers.
import { treaty } from "@elysiajs/eden";
import type { App } from "./app.ts";
import type { ErrorCode, Json } from "./protocol.ts";
import type { DataOf, InputOf, TopicTypes } from "./topics/define.ts";
import { reconnectAfterClose, reconnectAfterRefusal, Route, UpgradeRefusal, type ReconnectPolicy } from "./protocol-tables.ts";

/** The /connect route as Eden sees it: frame types come from the server's zod schemas through `App`. */
type ConnectRoute = App["~Routes"]["connect"]["subscribe"];
/** Every frame a client may send. */
export type ClientFrame = ConnectRoute["body"];
/** Every frame the server sends. */
export type ServerFrame = ConnectRoute["response"][200];
export type { ErrorCode, Json, ReconnectPolicy };

type FrameOf<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;
export type MessageFrame = FrameOf<"message">;
export type WelcomeFrame = FrameOf<"welcome">;
export type HistoryFrame = FrameOf<"history">;
export type PresenceFrame = FrameOf<"presence">;
export type PresenceStatsFrame = FrameOf<"presence_stats">;
/** A presence entry: a connection in a topic, its token's `sub` (null in open mode) and its `info`. */
export type PresenceClient = FrameOf<"join">["client"];
/** A place in a topic's history (see the server's README): resume after `offset` of `epoch`. */
export type Position = NonNullable<Extract<ClientFrame, { type: "subscribe" }>["since"]>;

export interface ReconnectOptions {
  /** First retry waits up to this long (full jitter: a random delay in [0, min(capMs, baseMs * 2^(attempt-1))]). */
  baseMs?: number;
  /** Longest wait between attempts. */
  capMs?: number;
  /** Give up after this many failed attempts in a row (then `close` with `willReconnect: false`). */
  maxAttempts?: number;
}

export interface ClientOptions {
  reconnect?: ReconnectOptions | false;
  /** Publishes and pings made while disconnected wait in order up to this many; beyond it they reject with QueueFullError. */
  maxQueuedPublishes?: number;
  /**
   * How long publish() and ping() may take, counted from the call (time spent waiting for a connection
   * included), and ready()'s default. `Infinity` waits forever. Default 10 s.
   */
  requestTimeoutMs?: number;
  /** How long one connection attempt (token(), handshake, welcome) may take before it is abandoned. Default 10 s. */
  connectTimeoutMs?: number;
  /** Query parameters for the upgrade. */
  query?: Record<string, string>;
  /**
   * Ask for batched delivery (default true): the server may send several messages of a topic published in the
   * same event-loop tick as one WebSocket frame, which this client splits; handlers see single messages as before.
   */
  batch?: boolean;
  /**
   * Called before every connection attempt; the result is sent as the `token` query parameter. With it the
   * client reconnects after 4001 (token expired) and after a 401 refusal; without it those end the client.
   * A token() that throws (or takes longer than connectTimeoutMs) is an `error` event and a failed attempt.
   */
  token?: () => string | Promise<string>;
}

export interface ClientEvents {
  /** A connection is ready: welcome received, subscriptions restored, queued publishes sent. */
  open: { connectionId: string; heartbeat: WelcomeFrame["heartbeat"]; reconnected: boolean };
  /**
   * A connection or an attempt ended. `willReconnect` is false after close(), when attempts ran out, and when
   * the server's policy for the close code or the refusal says not to retry.
   */
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delayMs: number };
  /**
   * A server error frame that no publish or ping was waiting for (e.g. a refused subscribe), a refused upgrade
   * (HandshakeError), a token() failure, a socket error on a live link, or a handler that threw.
   */
  error: { error: Error };
  /**
   * A topic held before was subscribed again (after a reconnect, a move to another node, or the server's
   * request to recover) or resumed from `since`. `recovered: true`: the `replayed` missed messages follow, in
   * order, before any new one. `recovered: false`: messages were missed and cannot be replayed (history lost
   * or too old, history off, or the store was unavailable): reload the application's state for the topic.
   */
  recovery: { topic: string; recovered: boolean; replayed: number; epoch: string | undefined; offset: number | undefined };
  /**
   * The server confirmed a subscribe (the first one and every resubscribe): messages of `topic` published from
   * now on arrive. `epoch`/`offset`: the topic's position then (servers with history on).
   */
  subscribed: { topic: string; epoch: string | undefined; offset: number | undefined };
  /**
   * The server took a subscription away (`reason: "server"`: a backend's POST /api/unsubscribe). The topic and
   * all its handlers are dropped, as if every unsubscribe function of it had been called: no more messages,
   * and it is not resubscribed on reconnect. Call subscribe() again to hold it again.
   */
  unsubscribed: { topic: string; reason: "server" };
}

export interface SubscribeOptions {
  /** Resume after this position (one the application stored from a message's offset and its epoch). */
  since?: Position;
  /** This subscription's presence `info`: a small JSON object (at most 1 KiB as JSON) others see. */
  info?: { [key: string]: Json };
  /** Ask for join/leave of the topic's other members (implied by onJoin / onLeave). */
  presence?: boolean;
  /** Called when another member joins / leaves the topic (asks the server for `presence: true`). */
  onJoin?: (client: PresenceClient) => void;
  onLeave?: (client: PresenceClient) => void;
}

export interface HistoryOptions {
  /** Messages after this position when its epoch is current; otherwise the latest `limit`. */
  since?: Position;
  /** At most this many messages (1-100, default 100). */
  limit?: number;
}

/** The server answered a request with an error frame. `topic` is set for a refused subscribe. */
export class SwitchboardError extends Error {
  override name = "SwitchboardError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly topic?: string,
  ) {
    super(`${code}: ${message}`);
  }
}
/** The server refused the WebSocket upgrade with an HTTP status (401, 403, 429, 503, ...) and its reason. */
export class HandshakeError extends Error {
  override name = "HandshakeError";
  constructor(
    readonly status: number,
    readonly reason: string,
  ) {
    super(`upgrade refused with HTTP ${status}: ${reason}`);
  }
}
/** publish() or ping() while disconnected with the queue already full. */
export class QueueFullError extends Error {
  override name = "QueueFullError";
}
/**
 * publish() or ping() got no reply within requestTimeoutMs of the call, or ready() saw no connection in time.
 * `sent` is false when the frame never left the client (it will not be sent later: safe to retry).
 */
export class TimeoutError extends Error {
  override name = "TimeoutError";
  constructor(
    message: string,
    readonly sent: boolean,
  ) {
    super(message);
  }
}
/** The connection dropped after the frame was sent and before its reply, or the client closed / gave up. */
export class ConnectionLostError extends Error {
  override name = "ConnectionLostError";
}

/** `frame.offset` is the message's place in its topic (servers with history on). */
type Handler<T = Json> = (data: T, frame: MessageFrame) => void;
type Listener<K extends keyof ClientEvents> = (event: ClientEvents[K]) => void;
type RequestFrame = Extract<ClientFrame, { type: "publish" | "ping" | "history" | "presence" | "presence_stats" }> & { id: number };
/** What a request settles with: the reply frame (ack, pong or history) and the round trip. */
interface Reply {
  frame: ServerFrame;
  rttMs: number;
}

/** A publish, ping or history request from its call to its settlement. */
interface Request {
  frame: RequestFrame;
  resolve(reply: Reply): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** When it went out on a socket; undefined while it waits for a connection. */
  sentAt: number | undefined;
}

/** A held topic. `subscribeId` is the id of the last subscribe sent for it, so a late refusal finds it. */
interface Subscription {
  handlers: Set<Handler<never>>;
  subscribeId: number | undefined;
  /** Presence options of the first subscribe() of the topic (sent again on every resubscribe). */
  presence: Pick<SubscribeOptions, "presence" | "info" | "onJoin" | "onLeave">;
  /** The last message handled (or the position the server reported), when the server has history. */
  position: Position | undefined;
  /** The position the pending subscribe asked to resume from. */
  since: Position | undefined;
  /** Messages may have been missed since this topic was last held: the next `subscribed` is a recovery. */
  resuming: boolean;
  /** The server confirmed it at least once (a later subscribe of it resumes). */
  confirmed: boolean;
  /** A gap was seen: resubscribing from `position`; messages until the answer are skipped (they are replayed). */
  resyncing: boolean;
}

const DEFAULTS = { baseMs: 250, capMs: 10_000, maxAttempts: Infinity };
/** setTimeout fires at once for delays above 2^31-1 ms; longer waits are clamped to it (~24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Bun reports a refused upgrade's status only in the error event's message. */
const REFUSED_STATUS = /Expected 101 status code: (\d{3})/;
/** The refusal body is read up to this many bytes (the server's are tiny JSON objects). */
const MAX_REASON_BYTES = 4096;

/** Full-jitter exponential backoff (attempt counts from 1). Exported for tests and custom schedules. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(random() * ceiling);
}

/**
 * The server's base URL (`http[s]://host[:port][/prefix]`) and the query parameters from any of the URLs a
 * user may hold: `ws://`, `wss://`, `http://` or `https://`, with or without `/connect` (the URL the server
 * prints) and a trailing slash. Throws a TypeError for anything else.
 */
export function parseServerUrl(url: string): { base: string; query: Record<string, string> } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`switchboard: not a URL: ${JSON.stringify(url)} (expected ws://host:port or http://host:port)`);
  }
  const scheme = { "ws:": "http:", "wss:": "https:", "http:": "http:", "https:": "https:" }[parsed.protocol];
  if (scheme === undefined) {
    throw new TypeError(`switchboard: unsupported scheme ${parsed.protocol} in ${JSON.stringify(url)} (use ws, wss, http or https)`);
  }
  let path = parsed.pathname.replace(/\/+$/, "");
  if (path.endsWith(Route.connect)) path = path.slice(0, -Route.connect.length);
  return { base: `${scheme}//${parsed.host}${path}`, query: Object.fromEntries(parsed.searchParams) };
}

/** A timer that never fires for Infinity, and waits at most ~24.8 days (the platform's limit) otherwise. */
/** Around how long a subscribe or unsubscribe refused with rate_limited waits before it is sent again (jittered). */
const RATE_LIMITED_RETRY_MS = 1000;

function timer(ms: number, fn: () => void): ReturnType<typeof setTimeout> | undefined {
  return Number.isFinite(ms) ? setTimeout(fn, Math.min(ms, MAX_TIMER_MS)) : undefined;
}

function positive(name: string, value: number | undefined, fallback: number, infinite: boolean): number {
  if (value === undefined) return fallback;
  if (!(value > 0) || (!infinite && !Number.isFinite(value))) {
    throw new RangeError(`switchboard: ${name} must be a number above 0${infinite ? " or Infinity" : ""}, got ${value}`);
  }
  return value;
}

const asError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)));

/**
 * `Topics`: the server's topic definitions (`connect<typeof topics>(url)`, types only): subscribe() handlers get
 * each topic's schema output, publish() takes its schema input. Without them every topic carries any JSON.
 */
export class SwitchboardClient<Topics extends TopicTypes = undefined> {
  /** "connecting" until the first welcome; "open"; "reconnecting" between sockets; "closed" for good. */
  state: "connecting" | "open" | "reconnecting" | "closed" = "connecting";
  connectionId: string | undefined;

  private socket: WebSocket | undefined;
  private readonly topics = new Map<string, Subscription>();
  /** Sent publishes and pings waiting for their reply, by id. */
  private readonly pending = new Map<number, Request>();
  /** Publishes and pings waiting for a connection, in call order. */
  private readonly queue = new Set<Request>();
  /** Subscribes and unsubscribes sent on the current socket and not yet answered, by id. */
  private readonly control = new Map<number, { type: "subscribe" | "unsubscribe"; topic: string }>();
  private readonly listeners: { [K in keyof ClientEvents]: Set<Listener<K>> } = {
    open: new Set(),
    close: new Set(),
    reconnecting: new Set(),
    error: new Set(),
    recovery: new Set(),
    subscribed: new Set(),
    unsubscribed: new Set(),
  };
  private nextId = 1;
  private attempt = 0;
  private everOpened = false;
  private lastFrameAt = 0;
  /** Id of the liveness ping in flight, if any. */
  private probeId: number | undefined;
  /** Status of a refused upgrade on the current socket, when the runtime reports it (Bun does). */
  private refusedStatus: number | undefined;
  private heartbeat: WelcomeFrame["heartbeat"] | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Why the client stopped for good: what ready() and later calls reject with. */
  private endError: Error | undefined;
  private readonly base: string;
  private readonly query: Record<string, string>;
  private readonly reconnect: Required<ReconnectOptions> | false;
  private readonly maxQueued: number;
  private readonly timeoutMs: number;
  private readonly connectTimeoutMs: number;

  constructor(
    url: string,
    private readonly options: ClientOptions = {},
  ) {
    const { base, query } = parseServerUrl(url);
    this.base = base;
    this.query = { ...(options.batch === false ? {} : { batch: "1" }), ...query, ...options.query };
    this.reconnect = options.reconnect === false ? false : { ...DEFAULTS, ...options.reconnect };
    this.maxQueued = options.maxQueuedPublishes ?? 1000;
    this.timeoutMs = positive("requestTimeoutMs", options.requestTimeoutMs, 10_000, true);
    this.connectTimeoutMs = positive("connectTimeoutMs", options.connectTimeoutMs, 10_000, false);
    void this.open();
  }

  on<K extends keyof ClientEvents>(event: K, listener: Listener<K>): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  /**
   * Resolves at the next `open` (immediately if open now). Rejects with TimeoutError after `timeoutMs`
   * (default requestTimeoutMs; Infinity waits forever), or with the reason the client stopped for good.
   */
  ready(timeoutMs = this.timeoutMs): Promise<void> {
    if (this.state === "open") return Promise.resolve();
    if (this.state === "closed") return Promise.reject(this.stopped());
    return new Promise((resolve, reject) => {
      const done = () => {
        offOpen();
        offClose();
        clearTimeout(deadline);
      };
      const offOpen = this.on("open", () => {
        done();
        resolve();
      });
      const offClose = this.on("close", (e) => {
        if (e.willReconnect) return;
        done();
        reject(this.stopped());
      });
      const deadline = timer(timeoutMs, () => {
        done();
        reject(new TimeoutError(`not connected within ${timeoutMs} ms (${this.state})`, false));
      });
    });
  }

  /**
   * Delivers every message on `topic` to `handler` until the returned function is called. Held topics are
   * resubscribed after every reconnect. A refused subscribe (invalid_topic, forbidden, too_many_topics) is
   * reported as an `error` event carrying a SwitchboardError with `.topic`, and the topic is dropped with
   * all its handlers (it is not re-sent on reconnect). One refused with rate_limited or unavailable is sent
   * again after about a second (the topic is kept).
   *
   * With history on the server, every resubscribe carries the position of the last message handled, so a
   * handler sees each message once, in offset order, across reconnects and moves between nodes; a `recovery`
   * event says whether the missed messages could be replayed. `since` resumes from a stored position (a
   * second subscribe() of a held topic adds a handler and ignores it).
   */
  subscribe<K extends string>(topic: K, handler: Handler<DataOf<Topics, K>>, options?: SubscribeOptions): () => void;
  /** Without topic definitions, a handler may name the data type it expects (unchecked: the server sends JSON). */
  subscribe<T extends Json = Json>(this: SwitchboardClient<undefined>, topic: string, handler: Handler<T>, options?: SubscribeOptions): () => void;
  subscribe(topic: string, handler: Handler<never>, options: SubscribeOptions = {}): () => void {
    let subscription = this.topics.get(topic);
    if (subscription === undefined) {
      const since = options.since;
      const { presence, info, onJoin, onLeave } = options;
      subscription = {
        handlers: new Set(),
        subscribeId: undefined,
        presence: { presence, info, onJoin, onLeave },
        position: since,
        since: undefined,
        resuming: since !== undefined,
        confirmed: false,
        resyncing: false,
      };
      this.topics.set(topic, subscription);
      if (this.state === "open") this.sendSubscribe(topic, subscription);
    }
    const held = subscription;
    held.handlers.add(handler as Handler<never>);
    return () => {
      // A dropped (refused) topic may have been subscribed again since: that is another subscription.
      if (this.topics.get(topic) !== held || !held.handlers.delete(handler as Handler<never>) || held.handlers.size > 0) return;
      this.topics.delete(topic);
      if (this.state === "open") this.sendControl("unsubscribe", topic);
    };
  }

  /**
   * Publishes `data` to `topic`. Resolves on the server's ack. Rejects with SwitchboardError on its error frame
   * (rate_limited included), TimeoutError when no ack came within requestTimeoutMs of the call,
   * ConnectionLostError if the connection drops before the ack (the message may or may not have been
   * delivered: at-most-once, never resent), QueueFullError. While disconnected, publishes wait in order (up to
   * maxQueuedPublishes) and are sent after the subscriptions are restored.
   */
  publish<K extends string>(topic: K, data: InputOf<Topics, K>): Promise<{ offset?: number }> {
    return this.request({ type: "publish", topic, data: data as Json, id: this.nextId++ }).then(({ frame }) =>
      frame.type === "ack" && frame.offset !== undefined ? { offset: frame.offset } : {},
    );
  }

  /** Who is in `topic`, cluster-wide as far as the server knows (needs subscribe permission). */
  presence(topic: string): Promise<PresenceFrame> {
    return this.request({ type: "presence", topic, id: this.nextId++ }).then((reply) => reply.frame as PresenceFrame);
  }

  /** How many connections and distinct users are in `topic`. */
  presenceStats(topic: string): Promise<PresenceStatsFrame> {
    return this.request({ type: "presence_stats", topic, id: this.nextId++ }).then((reply) => reply.frame as PresenceStatsFrame);
  }

  /**
   * A topic's stored messages (oldest first) and its position. Rejects with SwitchboardError (`not_available`
   * when history is off for the topic, `unavailable` when the server cannot reach its store, `forbidden`,
   * `invalid_topic`, `unknown_topic`), and like publish() on timeouts and lost connections.
   */
  history(topic: string, options: HistoryOptions = {}): Promise<HistoryFrame> {
    const frame: RequestFrame = { type: "history", topic, id: this.nextId++ };
    if (options.since !== undefined) frame.since = options.since;
    if (options.limit !== undefined) frame.limit = options.limit;
    return this.request(frame).then((reply) => reply.frame as HistoryFrame);
  }

  /**
   * Application-level round trip to the server, in milliseconds from sending. Like publish(), it waits for a
   * connection (within requestTimeoutMs of the call) when not connected.
   */
  ping(): Promise<number> {
    return this.request({ type: "ping", id: this.nextId++ }).then((reply) => reply.rttMs);
  }

  /** Closes for good: no reconnect; queued and unanswered requests reject with ConnectionLostError. */
  close(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.endError = new ConnectionLostError("client closed");
    clearTimeout(this.retryTimer);
    this.stopWatchdog();
    const socket = this.socket;
    this.socket = undefined;
    this.failAll(this.endError);
    if (socket !== undefined) {
      this.detach(socket);
      socket.close(1000, "client closed");
    }
    this.emit("close", { code: 1000, reason: "client closed", willReconnect: false });
  }

  // --- connection lifecycle ---------------------------------------------------------------------------

  /** One connection attempt: a fresh token if there is a token function, then the socket. */
  private async open(): Promise<void> {
    let query = this.query;
    if (this.options.token !== undefined) {
      let token: string;
      try {
        token = await this.freshToken(this.options.token);
      } catch (error) {
        if (this.state === "closed") return;
        this.emit("error", { error: asError(error) });
        this.afterClose(1006, "token() failed", "retry", undefined);
        return;
      }
      if (this.state === "closed") return;
      query = { ...query, token };
    }
    let socket: WebSocket;
    try {
      // treaty<App> builds the /connect URL (http -> ws, query string) and opens the socket; we keep only
      // the standard WebSocket it made.
      socket = treaty<App>(this.base).connect.subscribe(Object.keys(query).length > 0 ? { query } : undefined).ws;
    } catch (error) {
      this.emit("error", { error: asError(error) });
      this.afterClose(1006, "could not open a socket", "retry", undefined);
      return;
    }
    this.socket = socket;
    this.refusedStatus = undefined;
    this.lastFrameAt = performance.now();
    this.probeId = undefined;
    socket.onmessage = (event) => this.onMessage(event.data);
    socket.onclose = (event) => this.onClose(socket, event.code, event.reason);
    socket.onerror = (event) => {
      if (socket !== this.socket) return;
      if (this.state === "open") {
        this.emit("error", { error: new Error(`WebSocket error on ${socket.url}`) });
        return;
      }
      // A failed handshake. Bun says why in the message ("Expected 101 status code: 401"); browsers give a
      // bare Event, so there a refusal looks like any other failed attempt (close 1006, retried).
      const status = REFUSED_STATUS.exec((event as ErrorEvent).message ?? "")?.[1];
      if (status !== undefined) this.refusedStatus = Number(status);
    };
    // Until a welcome arrives, the attempt is bounded by the connect timeout.
    this.startWatchdog(Math.min(this.connectTimeoutMs, 1000));
  }

  private async freshToken(token: () => string | Promise<string>): Promise<string> {
    let deadline: ReturnType<typeof setTimeout> | undefined;
    try {
      const value = await Promise.race([
        Promise.resolve().then(token),
        new Promise<never>((_, reject) => {
          deadline = setTimeout(() => reject(new Error(`token() did not settle within ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
        }),
      ]);
      if (typeof value !== "string" || value === "") throw new TypeError(`token() must return a non-empty string, got ${typeof value}`);
      return value;
    } catch (error) {
      const cause = asError(error);
      throw new Error(`token() failed: ${cause.message}`, { cause });
    } finally {
      clearTimeout(deadline);
    }
  }

  private onWelcome(frame: WelcomeFrame): void {
    this.connectionId = frame.connectionId;
    this.heartbeat = frame.heartbeat;
    const reconnected = this.everOpened;
    this.everOpened = true;
    this.attempt = 0;
    this.state = "open";
    this.startWatchdog(Math.max(10, Math.floor(frame.heartbeat.intervalMs / 4)));
    // One burst: every held topic, then the queued requests in order. The server handles a connection's
    // frames in order, so each publish goes out after the subscriptions it may depend on.
    for (const [topic, subscription] of this.topics) {
      if (subscription.confirmed) subscription.resuming = true;
      this.sendSubscribe(topic, subscription);
    }
    for (const request of this.queue) this.transmit(request);
    this.queue.clear();
    this.emit("open", { connectionId: frame.connectionId, heartbeat: frame.heartbeat, reconnected });
  }

  private onClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.socket) return; // an old socket we already replaced
    this.socket = undefined;
    this.stopWatchdog();
    this.control.clear(); // nothing more will be answered on this socket
    // Sent but unanswered: the outcome is unknown, so the caller decides (at-most-once).
    for (const [id, request] of this.pending) {
      this.pending.delete(id);
      clearTimeout(request.timer);
      request.reject(new ConnectionLostError(`connection lost (${code}) before the reply`));
    }
    const status = this.refusedStatus;
    this.refusedStatus = undefined;
    if (status === undefined) {
      this.afterClose(code, reason, reconnectAfterClose(code), undefined);
      return;
    }
    // A refused upgrade: learn the server's reason, then follow its policy for that status.
    void this.refusalReason(socket.url, status).then((refusal) => {
      if (this.state === "closed") return; // close() was called meanwhile
      const error = new HandshakeError(status, refusal);
      this.emit("error", { error });
      this.afterClose(code, reason, reconnectAfterRefusal(status), error);
    });
  }

  /**
   * The reason of a refused upgrade. Bun's WebSocket reports the status but not the body, so the same
   * upgrade request is repeated with fetch (bounded in time and size) to read `{"error": reason}`. Only runs
   * where the runtime gave a status: browsers neither report it nor let fetch send upgrade headers.
   */
  private async refusalReason(socketUrl: string, status: number): Promise<string> {
    const fallback = (UpgradeRefusal as Record<number, { when: string } | undefined>)[status]?.when ?? `HTTP ${status}`;
    const abort = new AbortController();
    const deadline = setTimeout(() => abort.abort(), Math.min(this.connectTimeoutMs, 2000));
    try {
      const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
      const response = await fetch(socketUrl.replace(/^ws/, "http"), {
        signal: abort.signal,
        headers: { upgrade: "websocket", connection: "Upgrade", "sec-websocket-key": key, "sec-websocket-version": "13" },
      });
      if (response.status !== status || response.body === null) return fallback; // things changed meanwhile
      let body = new Uint8Array(0);
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        body = new Uint8Array([...body, ...value.subarray(0, MAX_REASON_BYTES - body.length)]);
        if (body.length >= MAX_REASON_BYTES) break;
      }
      const text = new TextDecoder().decode(body);
      try {
        const parsed = JSON.parse(text) as { error?: unknown };
        if (typeof parsed.error === "string") return parsed.error;
      } catch {
        // not the server's JSON (a proxy's page): fall back to the text itself
      }
      return text.trim().slice(0, 200) || fallback;
    } catch {
      return fallback;
    } finally {
      clearTimeout(deadline);
      abort.abort(); // releases the probe's connection, whatever it got
    }
  }

  /**
   * After a socket or an attempt ended: reconnect with backoff unless the policy, the attempt budget or
   * `reconnect: false` says stop. `new-token` is retried only with a token function (a fresh token each
   * attempt); without one the same token would be refused again.
   */
  private afterClose(code: number, reason: string, policy: ReconnectPolicy, cause: Error | undefined): void {
    const retry = this.reconnect;
    const allowed = policy === "retry" || (policy === "new-token" && this.options.token !== undefined);
    const willReconnect = retry !== false && allowed && this.attempt < retry.maxAttempts;
    if (!willReconnect) {
      this.state = "closed";
      this.endError =
        cause ??
        new ConnectionLostError(
          `connection closed (${code} ${reason}) and not reconnecting${policy === "new-token" && allowed === false ? ": the token expired and there is no token function" : ""}`,
        );
      this.failAll(this.endError);
      this.emit("close", { code, reason, willReconnect: false });
      return;
    }
    this.state = "reconnecting";
    this.emit("close", { code, reason, willReconnect: true });
    if (this.state !== "reconnecting") return; // a listener called close()
    this.attempt++;
    const delayMs = backoffDelay(this.attempt, retry.baseMs, retry.capMs);
    this.emit("reconnecting", { attempt: this.attempt, delayMs });
    this.retryTimer = setTimeout(() => {
      if (this.state === "reconnecting") void this.open();
    }, delayMs);
  }

  private stopped(): Error {
    return this.endError ?? new ConnectionLostError("client is closed");
  }

  /** Dead-server detection: no frame for timeoutMs means a half-open or dead link; close and reconnect. */
  private startWatchdog(tickMs: number): void {
    this.stopWatchdog();
    this.watchdog = setInterval(() => this.checkLiveness(), tickMs);
  }

  private stopWatchdog(): void {
    clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  private checkLiveness(): void {
    const socket = this.socket;
    if (socket === undefined) return;
    const silentMs = performance.now() - this.lastFrameAt;
    if (this.state !== "open" || this.heartbeat === undefined) {
      // Still connecting: give up on this attempt after the connect timeout.
      if (silentMs >= this.connectTimeoutMs) this.abandon(socket, 4000, "no welcome from server");
      return;
    }
    if (silentMs >= this.heartbeat.timeoutMs) {
      this.abandon(socket, 4000, "server heartbeat timeout");
    } else if (silentMs >= this.heartbeat.intervalMs && this.probeId === undefined) {
      // Browsers cannot see WebSocket pings, so ask for a frame: the server's pong proves it is alive.
      this.probeId = this.nextId++;
      this.send({ type: "ping", id: this.probeId });
    }
  }

  /** Drops a socket that looks dead without waiting for TCP to notice, then reconnects as after any close. */
  private abandon(socket: WebSocket, code: number, reason: string): void {
    this.detach(socket);
    try {
      socket.close(code, reason);
    } catch {
      // already closing
    }
    this.refusedStatus = undefined;
    this.onClose(socket, code, reason);
  }

  private detach(socket: WebSocket): void {
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
  }

  // --- frames -------------------------------------------------------------------------------------------

  private onMessage(raw: unknown): void {
    this.lastFrameAt = performance.now();
    if (typeof raw !== "string") return; // the protocol is text only
    // A batch: frames separated by "\n", which JSON never holds raw (batching servers only; harmless otherwise).
    if (raw.includes("\n")) {
      for (const line of raw.split("\n")) this.onMessage(line);
      return;
    }
    let frame: ServerFrame;
    try {
      frame = JSON.parse(raw) as ServerFrame; // not Eden's parser: data must arrive exactly as published
    } catch {
      this.emit("error", { error: new Error(`server sent a frame that is not JSON: ${raw.slice(0, 80)}`) });
      return;
    }
    switch (frame.type) {
      case "message": {
        const subscription = this.topics.get(frame.topic);
        if (subscription === undefined) return;
        const offset = frame.offset;
        if (offset !== undefined) {
          if (subscription.resyncing) return; // the resubscribe replays it
          const position = subscription.position;
          if (position !== undefined) {
            if (offset <= position.offset) return; // already handled (the server does not send these; a guard)
            if (offset !== position.offset + 1) return this.resync(frame.topic, subscription); // a gap: never skip one
            position.offset = offset;
          }
        }
        for (const handler of subscription.handlers) {
          try {
            (handler as Handler<Json>)(frame.data, frame);
          } catch (error) {
            this.emit("error", { error: asError(error) });
          }
        }
        return;
      }
      case "pong":
        if (frame.id === this.probeId) this.probeId = undefined;
        else this.settle(frame.id, undefined, frame);
        return;
      case "ack":
      case "history":
      case "presence":
      case "presence_stats":
        this.settle(frame.id, undefined, frame);
        return;
      case "join":
      case "leave": {
        const options = this.topics.get(frame.topic)?.presence;
        const listener = frame.type === "join" ? options?.onJoin : options?.onLeave;
        try {
          listener?.(frame.client);
        } catch (error) {
          this.emit("error", { error: asError(error) });
        }
        return;
      }
      case "error":
        this.onError(frame);
        return;
      case "subscribed":
        this.onSubscribed(frame);
        return;
      case "unsubscribed":
        if (typeof frame.id === "number") this.control.delete(frame.id);
        else if (frame.reason === "recover") this.recover(frame.topic);
        else if (frame.reason === "server") this.dismissed(frame.topic);
        return;
      case "welcome":
        this.onWelcome(frame);
        return;
    }
  }

  /** A subscribe's answer: the topic's position, and for a resumed topic whether the missed messages follow. */
  private onSubscribed(frame: FrameOf<"subscribed">): void {
    const id = frame.id;
    if (typeof id !== "number") return;
    this.control.delete(id);
    const subscription = this.topics.get(frame.topic);
    if (subscription === undefined || subscription.subscribeId !== id) return;
    const { since, resuming } = subscription;
    subscription.since = undefined;
    subscription.resuming = false;
    subscription.resyncing = false;
    subscription.confirmed = true;
    const recovered = frame.recovered === true && since !== undefined && frame.epoch === since.epoch;
    // Recovered: the replay follows and moves the position on from `since`; otherwise start from the reply's.
    if (frame.epoch === undefined) subscription.position = undefined;
    else subscription.position = recovered ? { epoch: frame.epoch, offset: since.offset } : { epoch: frame.epoch, offset: frame.offset ?? 0 };
    this.emit("subscribed", { topic: frame.topic, epoch: frame.epoch, offset: frame.offset });
    if (resuming) {
      const replayed = recovered ? Math.max(0, (frame.offset ?? 0) - since.offset) : 0;
      this.emit("recovery", { topic: frame.topic, recovered, replayed, epoch: frame.epoch, offset: frame.offset });
    }
  }

  /**
   * A message arrived past a gap (the server promises none; this is the client's own check): end the
   * subscription and resubscribe from the last message handled, so the missed ones are replayed in order, or
   * reported (`recovery` with `recovered: false`).
   */
  private resync(topic: string, subscription: Subscription): void {
    if (this.state !== "open") return;
    subscription.resyncing = true;
    subscription.resuming = true;
    this.sendControl("unsubscribe", topic);
    this.sendSubscribe(topic, subscription);
  }

  /** The server ended a subscription because its stream broke: subscribe again from the last message handled. */
  private recover(topic: string): void {
    const subscription = this.topics.get(topic);
    if (subscription === undefined || this.state !== "open") return;
    subscription.resuming = true;
    this.sendSubscribe(topic, subscription);
  }

  /**
   * The server ended a subscription (a backend's POST /api/unsubscribe): drop the topic and its handlers, and
   * say so. Unless a subscribe of the topic is still unanswered: it was sent after the server ended the topic
   * (the server answers in order), so the server will hold the topic again and its answer decides.
   */
  private dismissed(topic: string): void {
    const subscription = this.topics.get(topic);
    if (subscription === undefined) return;
    if (subscription.subscribeId !== undefined && this.control.has(subscription.subscribeId)) return;
    this.topics.delete(topic);
    this.emit("unsubscribed", { topic, reason: "server" });
  }

  private onError(frame: FrameOf<"error">): void {
    const id = frame.id;
    if (typeof id === "number" && this.pending.has(id)) {
      this.settle(id, new SwitchboardError(frame.code, frame.message));
      return;
    }
    const control = typeof id === "number" ? this.control.get(id) : undefined;
    if (control === undefined) {
      this.emit("error", { error: new SwitchboardError(frame.code, frame.message) });
      return;
    }
    this.control.delete(id as number);
    if (frame.code === "rate_limited" || frame.code === "unavailable") return this.retryControl(control, id as number);
    // Unsubscribing from a topic the server does not hold (its subscribe was refused, which was reported)
    // reaches the state we want.
    if (control.type === "unsubscribe" && (frame.code === "not_subscribed" || frame.code === "invalid_topic")) return;
    if (control.type === "subscribe" && this.topics.get(control.topic)?.subscribeId === id) {
      // Refused: drop it so it is not re-sent on every reconnect. A later subscribe() asks again.
      this.topics.delete(control.topic);
    }
    this.emit("error", { error: new SwitchboardError(frame.code, frame.message, control.topic) });
  }

  /**
   * A subscribe or unsubscribe refused by the rate limit is transient (a reconnect's resubscribe burst meets a
   * budget that reconnecting does not refill): ask again after a pause, if it is still wanted then, instead of
   * dropping the topic. A reconnect meanwhile resubscribes everything held anyway.
   */
  private retryControl(control: { type: "subscribe" | "unsubscribe"; topic: string }, id: number): void {
    const socket = this.socket;
    const delayMs = RATE_LIMITED_RETRY_MS / 2 + Math.floor(Math.random() * RATE_LIMITED_RETRY_MS);
    timer(delayMs, () => {
      if (this.state !== "open" || this.socket !== socket) return;
      const subscription = this.topics.get(control.topic);
      if (control.type === "subscribe" && subscription?.subscribeId === id) this.sendSubscribe(control.topic, subscription);
      else if (control.type === "unsubscribe" && subscription === undefined) this.sendControl("unsubscribe", control.topic);
    });
  }

  /** Sends a publish or ping now when open, else queues it; its timer runs from the call either way. */
  private request(frame: RequestFrame): Promise<Reply> {
    if (this.state === "closed") return Promise.reject(this.stopped());
    return new Promise<Reply>((resolve, reject) => {
      const request: Request = { frame, resolve, reject, timer: undefined, sentAt: undefined };
      if (this.state !== "open" && this.queue.size >= this.maxQueued) {
        reject(new QueueFullError(`queue is full (${this.maxQueued} requests waiting for a connection)`));
        return;
      }
      request.timer = timer(this.timeoutMs, () => this.expire(request));
      if (this.state === "open") this.transmit(request);
      else this.queue.add(request);
    });
  }

  private transmit(request: Request): void {
    request.sentAt = performance.now();
    this.pending.set(request.frame.id, request);
    this.send(request.frame);
  }

  private expire(request: Request): void {
    const { type, id } = request.frame;
    if (this.queue.delete(request)) {
      request.reject(new TimeoutError(`${type} not sent: no connection within ${this.timeoutMs} ms`, false));
    } else if (this.pending.delete(id)) {
      request.reject(new TimeoutError(`no reply to ${type} within ${this.timeoutMs} ms`, true));
    }
  }

  /** Our ids are numbers; a reply with any other id is not ours to settle. */
  private settle(id: unknown, error: Error | undefined, frame?: ServerFrame): void {
    if (typeof id !== "number") return;
    const request = this.pending.get(id);
    if (request === undefined) return;
    this.pending.delete(id);
    clearTimeout(request.timer);
    if (error) request.reject(error);
    else request.resolve({ frame: frame!, rttMs: performance.now() - (request.sentAt ?? 0) });
  }

  /** Subscribes `topic`, from the last message handled when the server gave positions. */
  private sendSubscribe(topic: string, subscription: Subscription): void {
    const since = subscription.position === undefined ? undefined : { ...subscription.position };
    subscription.since = since;
    const { presence, info, onJoin, onLeave } = subscription.presence;
    const frame: Extract<ClientFrame, { type: "subscribe" }> = { type: "subscribe", topic, id: this.nextId++ };
    if (since !== undefined) frame.since = since;
    if (presence === true || onJoin !== undefined || onLeave !== undefined) frame.presence = true;
    if (info !== undefined) frame.info = info;
    this.control.set(frame.id as number, { type: "subscribe", topic });
    subscription.subscribeId = frame.id as number;
    this.send(frame);
  }

  private sendControl(type: "unsubscribe", topic: string): number {
    const id = this.nextId++;
    this.control.set(id, { type, topic });
    this.send({ type, topic, id });
    return id;
  }

  private send(frame: ClientFrame): void {
    this.socket?.send(JSON.stringify(frame));
  }

  private failAll(error: Error): void {
    for (const [, request] of this.pending) {
      clearTimeout(request.timer);
      request.reject(error);
    }
    this.pending.clear();
    for (const request of this.queue) {
      clearTimeout(request.timer);
      request.reject(error);
    }
    this.queue.clear();
  }

  /**
   * A listener that throws must not break the connection's state machine: like a message handler's, its
   * exception becomes an `error` event; one thrown by an `error` listener is rethrown outside the client.
   */
  private emit<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void {
    for (const listener of this.listeners[event]) {
      try {
        listener(payload);
      } catch (error) {
        if (event !== "error") this.emit("error", { error: asError(error) });
        else
          queueMicrotask(() => {
            throw error;
          });
      }
    }
  }
}

/**
 * Connects to a switchboard server: `ws://host:port/connect` (the URL the server prints), or the base
 * `ws://host:port`, `http://host:port` (wss/https alike); reconnects until close() or the server's policy
 * says stop.
 */
export function connect<Topics extends TopicTypes = undefined>(url: string, options?: ClientOptions): SwitchboardClient<Topics> {
  return new SwitchboardClient<Topics>(url, options);
}
