// Typed client for consumers: Eden's treaty<App> for the route and the frame types, plus what a production
// client needs and Eden lacks: reconnect with backoff, resubscribe, a bounded publish queue, dead-server
// detection, and exact data delivery.
//
// Eden's EdenWS rewrites incoming data ("123" becomes 123, ISO strings become Date) and sends no headers, so
// this client takes the socket Eden opens (`EdenWS.ws`, a standard WebSocket) and parses frames itself with
// JSON.parse. It uses only standard WebSocket/timer APIs, so it runs in Bun and in browsers.
import { treaty } from "@elysiajs/eden";
import type { App } from "./app.ts";
import type { ErrorCode, Json } from "./protocol.ts";

/** The /connect route as Eden sees it: frame types come from the server's zod schemas through `App`. */
type ConnectRoute = App["~Routes"]["connect"]["subscribe"];
/** Every frame a client may send. */
export type ClientFrame = ConnectRoute["body"];
/** Every frame the server sends. */
export type ServerFrame = ConnectRoute["response"][200];
export type { ErrorCode, Json };

type FrameOf<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;
export type MessageFrame = FrameOf<"message">;
export type WelcomeFrame = FrameOf<"welcome">;

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
  /** Publishes made while disconnected wait in order up to this many; beyond it they reject with QueueFullError. */
  maxQueuedPublishes?: number;
  /** How long publish() and ping() wait for the server's ack or pong once sent. */
  requestTimeoutMs?: number;
  /** Query parameters for the upgrade (e.g. a token). */
  query?: Record<string, string>;
}

export interface ClientEvents {
  /** A connection is ready: welcome received, subscriptions restored, queued publishes sent. */
  open: { connectionId: string; heartbeat: WelcomeFrame["heartbeat"]; reconnected: boolean };
  /** A connection ended. `willReconnect` is false after close() or when attempts ran out. */
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delayMs: number };
  /** A server error frame that no request was waiting for (e.g. a refused subscribe), or a socket error. */
  error: { error: Error };
}

/** The server answered a request with an error frame. */
export class SwitchboardError extends Error {
  override name = "SwitchboardError";
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
/** publish() while disconnected with the queue already full. */
export class QueueFullError extends Error {
  override name = "QueueFullError";
}
/** No ack or pong within requestTimeoutMs. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}
/** The connection dropped after the frame was sent and before its reply, or the client closed / gave up. */
export class ConnectionLostError extends Error {
  override name = "ConnectionLostError";
}

type Handler<T = Json> = (data: T, frame: MessageFrame) => void;
type Listener<K extends keyof ClientEvents> = (event: ClientEvents[K]) => void;

interface Pending {
  resolve(value: number): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  sentAt: number;
}

interface Queued {
  frame: Extract<ClientFrame, { type: "publish" }> & { id: number };
  pending: Pending;
}

const DEFAULTS = { baseMs: 250, capMs: 10_000, maxAttempts: Infinity };

/** Full-jitter exponential backoff (attempt counts from 1). Exported for tests and custom schedules. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(random() * ceiling);
}

export class SwitchboardClient {
  /** "connecting" until the first welcome; "open"; "reconnecting" between sockets; "closed" for good. */
  state: "connecting" | "open" | "reconnecting" | "closed" = "connecting";
  connectionId: string | undefined;

  private socket: WebSocket | undefined;
  private readonly topics = new Map<string, Set<Handler<never>>>();
  private readonly pending = new Map<number, Pending>();
  private readonly queue: Queued[] = [];
  private readonly listeners: { [K in keyof ClientEvents]: Set<Listener<K>> } = {
    open: new Set(),
    close: new Set(),
    reconnecting: new Set(),
    error: new Set(),
  };
  private nextId = 1;
  private attempt = 0;
  private everOpened = false;
  private lastFrameAt = 0;
  /** Id of the liveness ping in flight, if any. */
  private probeId: number | undefined;
  private heartbeat: WelcomeFrame["heartbeat"] | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly reconnect: Required<ReconnectOptions> | false;
  private readonly maxQueued: number;
  private readonly timeoutMs: number;

  constructor(
    private readonly url: string,
    private readonly options: ClientOptions = {},
  ) {
    this.reconnect = options.reconnect === false ? false : { ...DEFAULTS, ...options.reconnect };
    this.maxQueued = options.maxQueuedPublishes ?? 1000;
    this.timeoutMs = options.requestTimeoutMs ?? 10_000;
    this.open();
  }

  on<K extends keyof ClientEvents>(event: K, listener: Listener<K>): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  /** Resolves at the next `open` (immediately if open now); rejects if the client closes for good first. */
  ready(): Promise<void> {
    if (this.state === "open") return Promise.resolve();
    if (this.state === "closed") return Promise.reject(new ConnectionLostError("client is closed"));
    return new Promise((resolve, reject) => {
      const offOpen = this.on("open", () => {
        offOpen();
        offClose();
        resolve();
      });
      const offClose = this.on("close", (e) => {
        if (e.willReconnect) return;
        offOpen();
        offClose();
        reject(new ConnectionLostError(`closed with ${e.code} ${e.reason}`));
      });
    });
  }

  /**
   * Delivers every message on `topic` to `handler` until the returned function is called. Held topics are
   * resubscribed after every reconnect. A refused subscribe (invalid_topic, too_many_topics) is reported as
   * an `error` event carrying a SwitchboardError, and the topic is dropped.
   */
  subscribe<T extends Json = Json>(topic: string, handler: Handler<T>): () => void {
    let handlers = this.topics.get(topic);
    if (handlers === undefined) {
      handlers = new Set();
      this.topics.set(topic, handlers);
      if (this.state === "open") this.send({ type: "subscribe", topic });
    }
    handlers.add(handler as Handler<never>);
    return () => {
      const held = this.topics.get(topic);
      if (held === undefined || !held.delete(handler as Handler<never>) || held.size > 0) return;
      this.topics.delete(topic);
      if (this.state === "open") this.send({ type: "unsubscribe", topic });
    };
  }

  /**
   * Publishes `data` to `topic`. Resolves on the server's ack, rejects with SwitchboardError on its error
   * frame, TimeoutError without a reply, ConnectionLostError if the connection drops before the ack (the
   * message may or may not have been delivered: at-most-once). While disconnected, publishes are queued
   * in order up to maxQueuedPublishes and sent after the subscriptions are restored.
   */
  publish(topic: string, data: Json): Promise<void> {
    if (this.state === "closed") return Promise.reject(new ConnectionLostError("client is closed"));
    const id = this.nextId++;
    const frame = { type: "publish", topic, data, id } as const;
    return new Promise<number>((resolve, reject) => {
      const pending: Pending = { resolve, reject, timer: undefined, sentAt: 0 };
      if (this.state === "open") this.request(id, frame, pending);
      else if (this.queue.length >= this.maxQueued) {
        reject(new QueueFullError(`publish queue is full (${this.maxQueued} waiting for a connection)`));
      } else this.queue.push({ frame, pending });
    }).then(() => undefined);
  }

  /** Application-level round trip to the server, in milliseconds. Rejects when not connected. */
  ping(): Promise<number> {
    if (this.state !== "open") return Promise.reject(new ConnectionLostError(`not connected (${this.state})`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => this.request(id, { type: "ping", id }, { resolve, reject, timer: undefined, sentAt: 0 }));
  }

  /** Closes for good: no reconnect; queued and unanswered requests reject with ConnectionLostError. */
  close(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    clearTimeout(this.retryTimer);
    this.stopWatchdog();
    const socket = this.socket;
    this.socket = undefined;
    this.failAll(new ConnectionLostError("client closed"));
    if (socket !== undefined) {
      this.detach(socket);
      socket.close(1000, "client closed");
    }
    this.emit("close", { code: 1000, reason: "client closed", willReconnect: false });
  }

  // --- connection lifecycle ---------------------------------------------------------------------------

  private open(): void {
    // treaty<App> builds the /connect URL (http -> ws, query string) and opens the socket; we keep only
    // the standard WebSocket it made.
    const base = this.url.replace(/^ws(s?):\/\//, "http$1://");
    const edenSocket = treaty<App>(base).connect.subscribe(this.options.query ? { query: this.options.query } : undefined);
    const socket = edenSocket.ws;
    this.socket = socket;
    this.lastFrameAt = performance.now();
    this.probeId = undefined;
    socket.onmessage = (event) => this.onMessage(event.data);
    socket.onclose = (event) => this.onClose(socket, event.code, event.reason);
    socket.onerror = () => {
      // Failed attempts while reconnecting are reported by `close`/`reconnecting`; only a live link's error is news.
      if (this.state === "open") this.emit("error", { error: new Error(`WebSocket error on ${socket.url}`) });
    };
    // Until a welcome arrives, the attempt is bounded by the request timeout.
    this.startWatchdog(Math.min(this.timeoutMs, 1000));
  }

  private onWelcome(frame: WelcomeFrame): void {
    this.connectionId = frame.connectionId;
    this.heartbeat = frame.heartbeat;
    const reconnected = this.everOpened;
    this.everOpened = true;
    this.attempt = 0;
    this.state = "open";
    this.startWatchdog(Math.max(10, Math.floor(frame.heartbeat.intervalMs / 4)));
    // One burst: every held topic, then the queued publishes in order. The server handles a connection's
    // frames in order, so each publish goes out after the subscriptions it may depend on.
    for (const topic of this.topics.keys()) this.send({ type: "subscribe", topic });
    for (const { frame: publish, pending } of this.queue.splice(0)) this.request(publish.id, publish, pending);
    this.emit("open", { connectionId: frame.connectionId, heartbeat: frame.heartbeat, reconnected });
  }

  private onClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.socket) return; // an old socket we already replaced
    this.socket = undefined;
    this.stopWatchdog();
    // Sent but unanswered: the outcome is unknown, so the caller decides (at-most-once).
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(new ConnectionLostError(`connection lost (${code}) before the reply`));
    }
    const policy = this.reconnect;
    const willReconnect = policy !== false && this.attempt < policy.maxAttempts;
    this.emit("close", { code, reason, willReconnect });
    if (policy === false || !willReconnect) {
      this.state = "closed";
      this.failAll(new ConnectionLostError(`connection closed (${code} ${reason}) and not reconnecting`));
      return;
    }
    this.state = "reconnecting";
    this.attempt++;
    const delayMs = backoffDelay(this.attempt, policy.baseMs, policy.capMs);
    this.emit("reconnecting", { attempt: this.attempt, delayMs });
    this.retryTimer = setTimeout(() => {
      if (this.state === "reconnecting") this.open();
    }, delayMs);
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
      // Still connecting: give up on this attempt after the request timeout.
      if (silentMs >= this.timeoutMs) this.abandon(socket, 4000, "no welcome from server");
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
    let frame: ServerFrame;
    try {
      frame = JSON.parse(raw) as ServerFrame; // not Eden's parser: data must arrive exactly as published
    } catch {
      this.emit("error", { error: new Error(`server sent a frame that is not JSON: ${raw.slice(0, 80)}`) });
      return;
    }
    switch (frame.type) {
      case "message": {
        const handlers = this.topics.get(frame.topic);
        if (handlers === undefined) return;
        for (const handler of handlers) {
          try {
            (handler as Handler<Json>)(frame.data, frame);
          } catch (error) {
            this.emit("error", { error: error instanceof Error ? error : new Error(String(error)) });
          }
        }
        return;
      }
      case "pong":
        if (frame.id === this.probeId) this.probeId = undefined;
        else this.settle(frame.id, undefined);
        return;
      case "ack":
        this.settle(frame.id, undefined);
        return;
      case "error": {
        const error = new SwitchboardError(frame.code, frame.message);
        if (typeof frame.id === "number" && this.pending.has(frame.id)) this.settle(frame.id, error);
        else this.emit("error", { error });
        return;
      }
      case "subscribed":
      case "unsubscribed":
        return;
      case "welcome":
        this.onWelcome(frame);
        return;
    }
  }

  private request(id: number, frame: ClientFrame, pending: Pending): void {
    pending.sentAt = performance.now();
    pending.timer = setTimeout(() => {
      if (this.pending.delete(id)) pending.reject(new TimeoutError(`no reply to ${frame.type} within ${this.timeoutMs} ms`));
    }, this.timeoutMs);
    this.pending.set(id, pending);
    this.send(frame);
  }

  /** Our ids are numbers; a reply with any other id is not ours to settle. */
  private settle(id: unknown, error: Error | undefined): void {
    if (typeof id !== "number") return;
    const pending = this.pending.get(id);
    if (pending === undefined) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(performance.now() - pending.sentAt);
  }

  private send(frame: ClientFrame): void {
    this.socket?.send(JSON.stringify(frame));
  }

  private failAll(error: Error): void {
    for (const [, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    for (const { pending } of this.queue.splice(0)) pending.reject(error);
  }

  private emit<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void {
    for (const listener of this.listeners[event]) listener(payload);
  }
}

/** Connects to a switchboard server (`http://host:port` or `ws://host:port`); reconnects until close(). */
export function connect(url: string, options?: ClientOptions): SwitchboardClient {
  return new SwitchboardClient(url, options);
}
