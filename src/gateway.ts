// The WebSocket side of the server: one small state object per connection, the native Bun handlers for both
// routes, the /connect protocol, heartbeat wiring, recovery and drain.
//
// Elysia owns the HTTP surface and performs the upgrade (so Eden gets its types from the `.ws()` routes), but
// frames are handled here on Bun's raw ServerWebSocket: Elysia's per-message wrapper costs ~4x a raw echo,
// auto-parses "123" into 123, swallows handler errors and validates responses backwards (see
// ../shared/docs/bun-elysia-pitfalls.md). On open, Elysia's request context (which it stores in `ws.data`
// for the life of the socket) is replaced by a `Conn` of a few fields, which keeps idle connections small.
import type { ServerWebSocket, WebSocketHandler } from "bun";
import { compressFromFor, type Broker, type BrokerStatus } from "./broker.ts";
import type { Config } from "./config.ts";
import { Heartbeat, type Beating } from "./heartbeat.ts";
import type { Identity } from "./auth.ts";
import { MAX_JSON_DEPTH, textNestsTooDeep } from "./json-depth.ts";
import { errorFields, type Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import {
  ClientFrame,
  CloseCode,
  CloseReason,
  encode,
  FrameId,
  isValidTopic,
  type ErrorCode,
  type Json,
} from "./protocol.ts";

/** The routes that upgrade to WebSocket; the admission hook records which one in `data` for `open`. */
export const ECHO_ROUTE = "/echo";
export const CONNECT_ROUTE = "/connect";

export class Conn implements Beating {
  seen = 0;
  pinged = -1;
  closed = false;
  /**
   * Topics held, created on the first subscribe (idle connections pay nothing). Bun keeps its own set, but it
   * is already empty when the close handler runs, and the broker must hear which topics lost a subscriber.
   */
  topics: Set<string> | undefined = undefined;
  /** Verified token (auth mode only): topic permissions for subscribe and publish. */
  identity: Identity | undefined = undefined;
  /** Client address, kept only when MAX_CONNECTIONS_PER_IP counts it. */
  ip: string | undefined = undefined;
  // Token bucket (RATE_LIMIT_MSGS_PER_S > 0): tokens left, when it was last refilled, and recent refusals.
  tokens = 0;
  refilledAt = 0;
  strikes = 0;
  constructor(
    readonly ws: ServerWebSocket<Conn>,
    readonly seq: number,
    readonly echo: boolean,
  ) {}
}

type Socket = ServerWebSocket<Conn>;

/** What the upgrade hook (src/admission.ts) leaves in Elysia's context for `open` to pick up. */
export interface Admitted {
  route?: string;
  identity?: Identity;
  clientIp?: string;
}

export class Gateway {
  readonly connections = new Set<Conn>();
  readonly metrics = new Metrics();
  /** Open connections per client IP (only with MAX_CONNECTIONS_PER_IP). */
  readonly perIp = new Map<string, number>();
  readonly heartbeat: Heartbeat<Conn>;
  /** Set on shutdown: upgrades are refused and every socket is closed with 1001. */
  draining = false;
  /** The Bun websocket handlers; pass them to `listen({ websocket })`, they replace Elysia's dispatcher. */
  readonly websocket: WebSocketHandler<Conn>;

  private seq = 0;
  /** Makes connection ids unique across processes and restarts without coordination. */
  private readonly idPrefix = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36);
  private readonly compressFrom: number;
  private readonly welcomeTimeoutMs: number;
  private readonly rate: number;

  constructor(
    private readonly config: Config,
    private readonly broker: Broker,
    private readonly log: Logger,
  ) {
    this.compressFrom = compressFromFor(config);
    this.welcomeTimeoutMs = config.PING_INTERVAL_MS + config.PING_WAIT_MS;
    this.heartbeat = new Heartbeat<Conn>({
      intervalMs: config.PING_INTERVAL_MS,
      waitMs: config.PING_WAIT_MS,
      ping: (conn) => void conn.ws.ping(),
      timeout: (conn) => {
        this.metrics.heartbeatTimeouts++;
        this.log.debug("heartbeat_timeout", { connectionId: this.connectionId(conn) });
        conn.ws.close(CloseCode.heartbeatTimeout, CloseReason.heartbeatTimeout);
      },
      expire: (conn) => {
        this.metrics.tokenExpiries++;
        conn.ws.close(CloseCode.tokenExpired, CloseReason.tokenExpired);
      },
      failed: (conn, error) => this.fail(conn, error, "heartbeat"),
    });
    this.rate = config.RATE_LIMIT_MSGS_PER_S / 1000; // tokens per ms
    this.websocket = this.handlers();
  }

  /** Publishes `data` to `topic` as one serialized frame (sockets and POST /publish both come here). */
  /** `data` came from JSON.parse within the nesting limit (src/json-depth.ts), so serializing it cannot fail. */
  publish(topic: string, data: Json): void {
    this.metrics.publishes++;
    this.metrics.deliveries += this.broker.localSubscribers(topic);
    this.broker.publish(topic, encode.message(topic, data));
  }

  /** Renders /metrics with the gauges read now. */
  renderMetrics(): string {
    let echo = 0;
    for (const conn of this.connections) if (conn.echo) echo++;
    const broker = this.broker.status();
    return this.metrics.render({
      connections: { connect: this.connections.size - echo, echo },
      brokerReady: broker.ready,
      brokerKind: broker.kind,
      redis: this.broker.counters,
    });
  }

  /** What /readyz reports: the broker's reachability, and whether we are draining. */
  readiness(): { ready: boolean; broker: BrokerStatus } {
    const broker = this.broker.status();
    return { ready: broker.ready && !this.draining, broker };
  }

  connectionId(conn: Conn): string {
    return `${this.idPrefix}-${conn.seq.toString(36)}`;
  }

  /** Closes every socket with 1001; close handlers run synchronously, so the set empties as we go. */
  drain(): void {
    this.draining = true;
    for (const conn of [...this.connections]) conn.ws.close(CloseCode.shuttingDown, CloseReason.shuttingDown);
  }

  stop(): void {
    this.heartbeat.stop();
  }

  /** Recovery: a failure in a handler closes that one connection with 1011; everything else goes on. */
  private fail(conn: Conn | undefined, error: unknown, where: string): void {
    this.log.error("handler_failed", {
      where,
      connectionId: conn ? this.connectionId(conn) : undefined,
      ...errorFields(error),
    });
    if (conn !== undefined && !conn.closed) conn.ws.close(CloseCode.internalError, CloseReason.internalError);
  }

  private handlers(): WebSocketHandler<Conn> {
    // Constants of the hot path, read from the closure rather than through `this` on every frame.
    const { heartbeat, connections, metrics, compressFrom, rate } = this;
    return {
      // Bun options; `idleTimeout: 0` because Bun's idle timer is reset by our own sends and so cannot detect
      // a dead peer that we keep publishing to. The heartbeat module owns deadlines instead.
      idleTimeout: 0,
      sendPings: false,
      perMessageDeflate: this.config.PERMESSAGE_DEFLATE,
      maxPayloadLength: this.config.MAX_PAYLOAD_BYTES,
      // uWS drops a consumer whose buffer passes the limit (see README, "Backpressure"). This bounds memory
      // per slow consumer without any JS on the fan-out path.
      backpressureLimit: this.config.BACKPRESSURE_LIMIT_BYTES,
      closeOnBackpressureLimit: true,
      publishToSelf: true,

      open: (ws) => {
        const admitted = ws.data as unknown as Admitted;
        const conn = new Conn(ws, ++this.seq, admitted.route === ECHO_ROUTE);
        ws.data = conn; // drops Elysia's request context
        connections.add(conn);
        heartbeat.track(conn);
        this.metrics.upgradesAccepted.inc(conn.echo ? "echo" : "connect");
        if (admitted.clientIp !== undefined && this.config.MAX_CONNECTIONS_PER_IP > 0) {
          conn.ip = admitted.clientIp;
          this.perIp.set(conn.ip, (this.perIp.get(conn.ip) ?? 0) + 1);
        }
        if (admitted.identity !== undefined) {
          conn.identity = admitted.identity;
          if (conn.identity.expiresAtMs !== undefined) heartbeat.expireAt(conn, conn.identity.expiresAtMs);
        }
        if (this.rate > 0) {
          conn.tokens = this.config.RATE_LIMIT_BURST;
          conn.refilledAt = performance.now();
        }
        if (!conn.echo) {
          this.send(ws, encode.welcome(this.connectionId(conn), this.config.PING_INTERVAL_MS, this.welcomeTimeoutMs));
        }
      },

      message: (ws, raw) => {
        const conn = ws.data;
        conn.seen = heartbeat.tick;
        if (conn.echo) {
          // /echo: parity with the gws / tungstenite echo servers, nothing but the send (and one count: an
          // echo is a frame in and a frame out, added up at scrape time).
          ws.send(raw, raw.length >= compressFrom);
          metrics.echoes++;
          metrics.echoPayload += raw.length;
          return;
        }
        metrics.framesIn++;
        metrics.bytesIn += raw.length;
        if (rate === 0 || this.admit(ws, conn)) this.onFrame(ws, conn, raw);
      },

      ping: (ws) => {
        ws.data.seen = heartbeat.tick; // Bun answers the ping with a pong itself
      },
      pong: (ws) => {
        ws.data.seen = heartbeat.tick;
      },

      close: (ws, code, reason) => {
        const conn = ws.data;
        if (!(conn instanceof Conn) || conn.closed) return;
        conn.closed = true;
        connections.delete(conn);
        this.metrics.closes.inc(code);
        if (conn.ip !== undefined) {
          const left = (this.perIp.get(conn.ip) ?? 1) - 1;
          if (left > 0) this.perIp.set(conn.ip, left);
          else this.perIp.delete(conn.ip);
        }
        if (conn.topics !== undefined) for (const topic of conn.topics) void this.broker.interestChanged(topic);
        if (code !== 1000 && code !== 1001 && code !== 1005 && code !== 1006) {
          this.log.info("close", { connectionId: this.connectionId(conn), code, reason });
        }
      },

      // Bun calls this when any handler above throws synchronously: recover that one socket.
      error: (error, ws) => {
        const conn = ws.data instanceof Conn ? ws.data : undefined;
        this.fail(conn, error, "websocket");
      },
    };
  }

  /** Sends one frame to one socket, counted. */
  private send(ws: Socket, frame: string): void {
    ws.send(frame);
    this.metrics.framesOut++;
    this.metrics.bytesOut += frame.length;
  }

  private reject(ws: Socket, code: ErrorCode, message: string, id?: FrameId): void {
    this.metrics.errors.inc(code);
    this.send(ws, encode.error(code, message, id));
  }

  /**
   * Token bucket on inbound /connect frames. A refused frame gets `rate_limited`; refusals decay at half the
   * allowed rate, so a client that keeps sending 1.5x the rate or more piles up strikes and is closed (1008)
   * once they pass the burst size, while a short burst only costs it a few errors.
   */
  private admit(ws: Socket, conn: Conn): boolean {
    const now = performance.now();
    const elapsed = now - conn.refilledAt;
    conn.refilledAt = now;
    conn.tokens = Math.min(this.config.RATE_LIMIT_BURST, conn.tokens + elapsed * this.rate);
    conn.strikes = Math.max(0, conn.strikes - (elapsed * this.rate) / 2);
    if (conn.tokens >= 1) {
      conn.tokens -= 1;
      return true;
    }
    this.metrics.rateLimited++;
    if (++conn.strikes > this.config.RATE_LIMIT_BURST) {
      this.log.info("rate_limit_close", { connectionId: this.connectionId(conn) });
      ws.close(CloseCode.policyViolation, CloseReason.rateLimit);
    } else {
      this.reject(ws, "rate_limited", `over ${this.config.RATE_LIMIT_MSGS_PER_S} messages per second: slow down`);
    }
    return false;
  }

  /** /connect: one JSON text frame -> at most one reply, plus a native fan-out for publish. */
  private onFrame(ws: Socket, conn: Conn, raw: string | Buffer): void {
    if (typeof raw !== "string") {
      return this.reject(ws, "unsupported_binary", "binary frames are not supported on /connect: send JSON text");
    }
    if (textNestsTooDeep(raw)) return this.reject(ws, "invalid_message", TOO_DEEP);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      return this.reject(ws, "invalid_json", "frame is not valid JSON");
    }
    const parsed = ClientFrame.safeParse(value);
    if (!parsed.success) {
      const message = parsed.error.issues
        .map((issue) => (issue.path.length ? `${issue.path.join(".")}: ${issue.message}` : issue.message))
        .join("; ");
      return this.reject(ws, "invalid_message", message, validIdOf(value));
    }
    const frame = parsed.data;
    const identity = conn.identity;

    switch (frame.type) {
      case "publish": {
        if (!isValidTopic(frame.topic)) return this.reject(ws, "invalid_topic", TOPIC_RULE, frame.id);
        if (identity !== undefined && !identity.permissions.canPublish(frame.topic)) {
          return this.reject(ws, "forbidden", `not allowed to publish to ${frame.topic}`, frame.id);
        }
        this.publish(frame.topic, frame.data);
        if (frame.id !== undefined) this.send(ws, encode.ack(frame.id));
        return;
      }
      case "subscribe": {
        if (!isValidTopic(frame.topic)) return this.reject(ws, "invalid_topic", TOPIC_RULE, frame.id);
        if (identity !== undefined && !identity.permissions.canSubscribe(frame.topic)) {
          return this.reject(ws, "forbidden", `not allowed to subscribe to ${frame.topic}`, frame.id);
        }
        const topics = (conn.topics ??= new Set());
        if (topics.has(frame.topic)) return this.send(ws, encode.subscribed(frame.topic, frame.id));
        if (topics.size >= this.config.MAX_TOPICS_PER_CONNECTION) {
          const limit = this.config.MAX_TOPICS_PER_CONNECTION;
          return this.reject(ws, "too_many_topics", `at most ${limit} topics per connection`, frame.id);
        }
        topics.add(frame.topic);
        ws.subscribe(frame.topic);
        const upstream = this.broker.interestChanged(frame.topic);
        const reply = encode.subscribed(frame.topic, frame.id);
        // With a networked broker, confirm only once messages from other nodes will arrive too.
        if (upstream === undefined) this.send(ws, reply);
        else void upstream.then(() => conn.closed || this.send(ws, reply));
        return;
      }
      case "unsubscribe": {
        if (!isValidTopic(frame.topic)) return this.reject(ws, "invalid_topic", TOPIC_RULE, frame.id);
        if (conn.topics?.delete(frame.topic) !== true) {
          return this.reject(ws, "not_subscribed", `not subscribed to ${frame.topic}`, frame.id);
        }
        ws.unsubscribe(frame.topic);
        void this.broker.interestChanged(frame.topic);
        this.send(ws, encode.unsubscribed(frame.topic, frame.id));
        return;
      }
      case "ping":
        this.send(ws, encode.pong(frame.id));
        return;
    }
  }
}

export const TOO_DEEP = `JSON nests deeper than ${MAX_JSON_DEPTH} levels`;
const TOPIC_RULE = "topic must be 1-200 characters of letters, digits and . _ - : /";

/** The frame's id if it is a valid one, so that a client can match the error to its request. */
function validIdOf(value: unknown): FrameId | undefined {
  if (typeof value !== "object" || value === null || !("id" in value)) return undefined;
  const id = FrameId.safeParse(value.id);
  return id.success ? id.data : undefined;
}
