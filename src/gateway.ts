// The socket lifecycle: Bun's native WebSocket handlers for both routes (open, message, close, error), the
// heartbeat wiring, the rate limit, frame parsing and routing to the topic pipeline, recovery and drain.
// Topic work lives in src/topics/pipeline.ts; per-connection bookkeeping in src/connections.ts.
//
// Elysia owns the HTTP surface and performs the upgrade (so Eden gets its types from the `.ws()` routes), but
// frames are handled here on Bun's raw ServerWebSocket: Elysia's per-message wrapper costs ~4x a raw echo,
// auto-parses "123" into 123, swallows handler errors and validates responses backwards (docs/bun-notes.md).
// On open, Elysia's request context (which it stores in `ws.data` for the life of the socket) is replaced by
// a `Conn` of a few fields, which keeps idle connections small.
import type { ServerWebSocket, WebSocketHandler } from "bun";
import type { Identity } from "./auth/tokens.ts";
import type { BrokerStatus, Broker } from "./broker/broker.ts";
import { compressFromFor } from "./broker/broker.ts";
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import { Conn, ConnectionRegistry, type Slot } from "./connections.ts";
import { Heartbeat } from "./heartbeat.ts";
import { Hub } from "./hub.ts";
import { MAX_JSON_DEPTH, textNestsTooDeep } from "./json-depth.ts";
import { errorFields, type Logger } from "./log.ts";
import { closeLabel, Metrics } from "./metrics.ts";
import { ClientFrame, Close, encode, ErrorText, type ControlCommand, type FrameId, Route, type ErrorCode } from "./protocol.ts";
import { TopicPipeline, type PublishOutcome, type Refusal } from "./topics/pipeline.ts";
import type { TopicRules } from "./topics/rules.ts";
import type { HistoryRead } from "./history/history.ts";
import type { Presence, PresenceList, PresenceStats } from "./presence/presence.ts";


export { Conn };
type Socket = ServerWebSocket<Conn>;

/**
 * An /echo socket's Conn, also held as a plain property of Bun's socket object. `ws.data` is a native
 * accessor: reading it is a call into Bun, ~45 instructions per message (callgrind), 2% of a whole raw echo;
 * an own property is an inline-cached load. Only /echo sockets carry it: on /connect it would add ~32 bytes
 * of heap per idle connection to save a share of a frame's work too small to measure.
 */
const ECHO_CONN = Symbol("echoConn");
type EchoSocket = Socket & { [ECHO_CONN]?: Conn };

/** What the upgrade hook (src/auth/admission.ts) leaves in Elysia's context for `open` to pick up. */
export interface Admitted {
  /** The upgrade asked for batched delivery (`?batch=1`). */
  batch?: boolean;
  /** The gateway whose admission let this socket in: sockets of the app's other `.ws()` routes have none. */
  gateway?: Gateway;
  route?: string;
  identity?: Identity;
  slot?: Slot;
  clientIp?: string;
}

export class Gateway {
  readonly registry: ConnectionRegistry;
  readonly metrics = new Metrics();
  readonly hub: Hub;
  readonly topics: TopicPipeline;
  readonly heartbeat: Heartbeat<Conn>;
  /** Set on shutdown: upgrades are refused and every socket is closed with 1001. */
  draining = false;
  /**
   * Whether the listening app carries these Bun options (payload limit, backpressure, the `error` hook): false
   * when the plugin was used on a sub-app, whose WebSocket config Elysia does not pass up. Elysia's dispatcher
   * would then run sockets with Bun's defaults (16 MiB frames, slow consumers never dropped): refused instead.
   */
  serverOptions = true;
  /** The Bun websocket handlers; pass them to `listen({ websocket })`, they replace Elysia's dispatcher. */
  readonly websocket: WebSocketHandler<Conn>;

  private seq = 0;
  /** Makes connection ids unique across processes and restarts without coordination. */
  private readonly idPrefix = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36);
  /** The read deadline announced in the welcome frame (interval + wait). */
  private readonly readDeadlineMs: number;
  private readonly stopSweep: () => void;

  constructor(
    private readonly config: Config,
    private readonly broker: Broker,
    private readonly log: Logger,
    clock: Clock,
    private readonly presence: Presence,
    rules: TopicRules,
  ) {
    this.readDeadlineMs = config.PING_INTERVAL_MS + config.PING_WAIT_MS;
    this.registry = new ConnectionRegistry(config, clock);
    this.hub = new Hub(compressFromFor(config), config.MAX_PAYLOAD_BYTES, config.BATCH_MAX_DELAY_MS);
    this.topics = new TopicPipeline(
      this.hub,
      broker,
      this.metrics,
      {
        send: (conn, frame) => this.send(conn.ws, frame),
        reject: (conn, code, message, id) => this.reject(conn.ws, code, message, id),
      },
      {
        maxTopics: config.MAX_TOPICS_PER_CONNECTION,
        rules,
        recoveryBudgetBytes: Math.floor(config.BACKPRESSURE_LIMIT_BYTES / 2),
        connections: () => this.registry.open,
        presence,
        connectionIdOf: (conn) => this.connectionId(conn),
        maxPresenceClients: config.PRESENCE_MAX_CLIENTS,
        control: (command) => this.applyControl(command),
        draining: () => this.draining,
      },
    );
    this.heartbeat = new Heartbeat<Conn>({
      intervalMs: config.PING_INTERVAL_MS,
      waitMs: config.PING_WAIT_MS,
      clock,
      ping: (conn) => void conn.ws.ping(),
      timeout: (conn) => {
        this.metrics.heartbeatTimeouts++;
        this.log.debug("heartbeat_timeout", { connectionId: this.connectionId(conn) });
        conn.ws.close(Close.heartbeatTimeout.code, Close.heartbeatTimeout.reason);
      },
      expire: (conn) => {
        this.metrics.tokenExpiries++;
        this.closeAfterBatches(conn.ws, Close.tokenExpired);
      },
      failed: (conn, error) => this.fail(conn, error, "heartbeat"),
    });
    // Idle identities' rate buckets are forgotten once they would be full again (bounded memory).
    this.stopSweep = this.registry.rate.enabled ? clock.every(1000, () => this.registry.rate.sweep()) : () => {};
    this.websocket = this.handlers();
    this.DispatchedConn = dispatchedConn(this.websocket);
  }

  /** Open WebSocket connections (both routes). */
  get connections(): Set<Conn> {
    return this.registry.open;
  }

  /** Connections per client address, open or being admitted (only with MAX_CONNECTIONS_PER_IP). */
  get perIp(): Map<string, number> {
    return this.registry.perIp;
  }

  /** Renders /metrics with the gauges read now. */
  renderMetrics(): string {
    let echo = 0;
    for (const conn of this.registry.open) if (conn.echo) echo++;
    const broker = this.broker.status();
    return this.metrics.render({
      connections: { connect: this.registry.open.size - echo, echo },
      brokerReady: broker.ready,
      brokerKind: broker.kind,
      redis: this.broker.counters,
      redisGauges: this.broker.gauges?.(),
      history: this.broker.historyStats && { counters: this.broker.historyStats.counters, gauges: this.broker.historyStats.gauges() },
      presence: this.presence.gauges?.(),
    });
  }

  /** What /readyz reports: the broker's reachability, and whether we are draining. */
  readiness(): { ready: boolean; broker: BrokerStatus } {
    const broker = this.broker.status();
    // Not attached to a listening server (the plugin used inside group()): every upgrade would be refused.
    return { ready: broker.ready && !this.draining && this.hub.attached, broker };
  }

  connectionId(conn: Conn): string {
    return `${this.idPrefix}-${conn.seq.toString(36)}`;
  }

  /**
   * Sends a command of the HTTP API (disconnect, unsubscribe) to every node, this one included, through the
   * broker's control channel: the connections it acted on here, or BrokerUnavailable (src/broker/broker.ts).
   */
  control(command: ControlCommand): number | Promise<number> {
    return this.broker.control(command);
  }

  /**
   * A command of the control channel, from any node (this one included), applied to this node's `/connect`
   * connections: `disconnect` closes them with 4003, `unsubscribe` ends their subscription of the topic as
   * their own unsubscribe would and tells them (reason `server`). Returns how many it acted on.
   */
  private applyControl(command: ControlCommand): number {
    // A copy: closing a connection removes it from the user's set.
    const targets = command.user !== undefined ? [...this.registry.ofUser(command.user)] : this.withConnectionId(command.connectionId!);
    let acted = 0;
    for (const conn of targets) {
      if (conn.closed || conn.echo) continue;
      if (command.type === "disconnect") {
        this.closeAfterBatches(conn.ws, Close.disconnected);
        acted++;
      } else if (this.topics.end(conn, command.topic, "server")) {
        acted++;
      }
    }
    if (acted > 0) {
      const { type, ...target } = command;
      this.log.info("control_applied", { command: type, ...target, connections: acted });
    }
    return acted;
  }

  /**
   * The connection named `id` if it is open in this process. Ids are `<process prefix>-<seq in base 36>`: another
   * process's id costs a string comparison; one of this process, a walk of its connections (no index: an
   * admin command is rare, and an index would cost every connection memory).
   */
  private withConnectionId(id: string): Conn[] {
    const own = `${this.idPrefix}-`;
    if (!id.startsWith(own)) return [];
    const digits = id.slice(own.length);
    const seq = Number.parseInt(digits, 36);
    if (!Number.isSafeInteger(seq) || seq.toString(36) !== digits) return [];
    for (const conn of this.registry.open) if (conn.seq === seq) return [conn];
    return [];
  }

  /** Closes every socket with 1001; close handlers run synchronously, so the set empties as we go. */
  drain(): void {
    this.draining = true;
    for (const conn of [...this.registry.open]) this.closeAfterBatches(conn.ws, Close.shuttingDown);
  }

  stop(): void {
    this.heartbeat.stop();
    this.stopSweep();
  }

  /** Recovery: a failure in a handler closes that one connection with 1011; everything else goes on. */
  private fail(conn: Conn | undefined, error: unknown, where: string): void {
    this.log.error("handler_failed", {
      where,
      connectionId: conn ? this.connectionId(conn) : undefined,
      ...errorFields(error),
    });
    if (conn !== undefined && !conn.closed) {
      this.closeAfterBatches(conn.ws, Close.internalError);
    }
  }

  private handlers(): WebSocketHandler<Conn> {
    // Constants of the hot path, read from the closure rather than through `this` on every frame.
    const { heartbeat, metrics, registry } = this;
    const compressFrom = compressFromFor(this.config);
    const rate = registry.rate;
    const limited = rate.enabled;
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
      // Elysia's own dispatcher would stay in place for handlers not given here; we need no drain callback,
      // and leaving Elysia's costs a JS call every time a socket's send buffer drains. (So an embedding app's
      // own `.ws()` routes get no `drain` while these handlers are Bun's.)
      drain: undefined,

      // A socket this gateway did not admit belongs to another `.ws()` route of the app (or another
      // switchboard): every event of it goes where Elysia's dispatcher would send it, its `ws.data`.
      open: (ws) => {
        if ((ws.data as unknown as Admitted).gateway === this) this.opened(ws, Conn);
        else void (ws.data as unknown as ElysiaSocketData).open?.(ws);
      },

      message: (ws, raw) => {
        const echo = (ws as EchoSocket)[ECHO_CONN];
        if (echo !== undefined) {
          // /echo: parity with the gws / tungstenite echo servers, nothing but the send (and one count: an
          // echo is a frame in and a frame out, added up at scrape time). sendText/sendBinary rather than
          // send: Bun's JIT calls their typed fast paths directly, skipping send's sniffing of the argument
          // (~40 fewer instructions per echo); the opcode stays the one received.
          echo.seen = heartbeat.tick;
          const compress = raw.length >= compressFrom;
          if (typeof raw === "string") ws.sendText(raw, compress);
          else ws.sendBinary(raw, compress);
          metrics.echoes++;
          metrics.echoPayload += raw.length;
          return;
        }
        const conn = ws.data;
        if (!(conn instanceof Conn)) return void (conn as ElysiaSocketData).message?.(ws, raw);
        conn.seen = heartbeat.tick;
        metrics.framesIn++;
        metrics.bytesIn += raw.length;
        if (limited && !this.withinRate(ws, conn, raw)) return;
        this.onFrame(ws, conn, raw);
      },

      ping: (ws) => {
        if (ws.data instanceof Conn) ws.data.seen = heartbeat.tick; // Bun answers the ping with a pong itself
        else void (ws.data as ElysiaSocketData).ping?.(ws);
      },
      pong: (ws) => {
        if (ws.data instanceof Conn) ws.data.seen = heartbeat.tick;
        else void (ws.data as ElysiaSocketData).pong?.(ws);
      },

      close: (ws, code, reason) => {
        const conn = ws.data;
        if (!(conn instanceof Conn)) return void (conn as ElysiaSocketData).close?.(ws, code, reason);
        // Counted once, also for a socket refused in `open` (already marked closed there).
        this.metrics.closes.inc(closeLabel(code));
        if (conn.closed) return;
        conn.closed = true;
        registry.remove(conn);
        heartbeat.untrack(conn);
        this.topics.leave(conn);
        // The client's own code and reason are its business: debug only, and the reason cut short.
        if (code !== 1000 && code !== 1001 && code !== 1005 && code !== 1006) {
          this.log.debug("close", { connectionId: this.connectionId(conn), code, reason: reason.slice(0, 64) });
        }
      },

      // Bun calls this when any handler above throws synchronously: recover that one socket.
      error: (error, ws) => {
        const conn = ws.data instanceof Conn ? ws.data : undefined;
        this.fail(conn, error, "websocket");
        // Ours, failed in `open` before its Conn existed: nothing would ever serve it.
        if (conn === undefined && (ws.data as unknown as Admitted).gateway === this) ws.close(Close.internalError.code, Close.internalError.reason);
      },
    };
  }

  /** A socket opened: its Conn (of `Kind`) replaces Elysia's request context, and it is counted and greeted. */
  private opened(ws: Socket, Kind: typeof Conn): void {
    const { heartbeat, registry } = this;
    const admitted = ws.data as unknown as Admitted;
    const conn = new Kind(ws, ++this.seq, admitted.route === Route.echo);
    ws.data = conn; // drops Elysia's request context
    if (conn.echo) (ws as EchoSocket)[ECHO_CONN] = conn;
    if (!registry.add(conn, admitted.slot)) {
      // The reservation expired before the socket opened and its place may be taken: do not overshoot.
      conn.closed = true;
      ws.close(Close.tryAgainLater.code, Close.tryAgainLater.reason);
      return;
    }
    heartbeat.track(conn);
    this.metrics.upgradesAccepted.inc(conn.echo ? "echo" : "connect");
    if (admitted.identity !== undefined) {
      registry.identify(conn, admitted.identity);
      if (admitted.identity.expiresAtMs !== undefined) heartbeat.expireAt(conn, admitted.identity.expiresAtMs);
    }
    if (registry.rate.enabled && !conn.echo) conn.bucket = registry.rate.acquire(admitted.identity?.sub ?? `ip:${admitted.clientIp ?? "?"}`);
    if (admitted.batch === true && !conn.echo) conn.batch = true;
    if (!conn.echo) {
      this.send(ws, encode.welcome(this.connectionId(conn), this.config.PING_INTERVAL_MS, this.readDeadlineMs, conn.batch));
    }
  }

  /**
   * `open` under Elysia's own dispatcher (an app listening without `websocket: sb.websocket`), which calls
   * `ws.data.<event>(ws, ...)` for every event: the Conn it gets is one whose methods call the same handlers.
   * Bun options (payload limit, backpressure, deflate) come from the app's `websocket` config then, which the
   * plugin sets (src/plugin.ts). A throw is this connection's failure, as with the native handlers.
   */
  readonly dispatchedOpen = (ws: Socket): void => {
    if (!this.serverOptions) {
      const slot = (ws.data as unknown as Admitted).slot;
      if (slot !== undefined) this.registry.release(slot);
      this.log.error("bun_options_missing", { hint: "app.use(switchboard(...)) on the app that listens, or listen({ websocket: sb.websocket })" });
      ws.close(Close.internalError.code, Close.internalError.reason);
      return;
    }
    try {
      this.opened(ws, this.DispatchedConn);
    } catch (error) {
      this.fail(ws.data instanceof Conn ? ws.data : undefined, error, "open");
      // Failed before its Conn existed: nothing would ever serve it.
      if (!(ws.data instanceof Conn)) ws.close(Close.internalError.code, Close.internalError.reason);
    }
  };

  /** Conns for Elysia's dispatcher: methods on the prototype, so no connection carries more than a Conn. */
  private readonly DispatchedConn: typeof Conn;

  /**
   * The server closes a socket it serves (a kick, the drain, an expired token, the rate limit, a failed
   * handler): the pending batches go first, so a batching client gets what was published before the close, as
   * the others do (after the first close of a loop there is nothing left to send).
   */
  private closeAfterBatches(ws: Socket, close: { code: number; reason: string }): void {
    this.hub.flushNow();
    ws.close(close.code, close.reason);
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

  /** The identity's token bucket: a refused frame gets `rate_limited`; sustained abuse is closed (1008). */
  private withinRate(ws: Socket, conn: Conn, raw: string | Buffer): boolean {
    const verdict = this.registry.rate.take(conn.bucket!);
    if (verdict === "ok") return true;
    this.metrics.rateLimited++;
    if (verdict === "close") {
      this.log.info("rate_limit_close", { connectionId: this.connectionId(conn) });
      this.closeAfterBatches(ws, Close.rateLimit);
    } else {
      this.reject(ws, "rate_limited", `over ${this.registry.rate.perSecond} messages per second: slow down`, cheapIdOf(raw));
    }
    return false;
  }

  /** /connect: one JSON text frame -> the topic pipeline, at most one reply per frame. */
  private onFrame(ws: Socket, conn: Conn, raw: string | Buffer): void {
    if (typeof raw !== "string") return this.reject(ws, "unsupported_binary", ErrorText.binary, cheapIdOf(raw));
    if (textNestsTooDeep(raw)) return this.reject(ws, "invalid_message", TOO_DEEP);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      return this.reject(ws, "invalid_json", ErrorText.notJson);
    }
    const parsed = ClientFrame.safeParse(value);
    if (!parsed.success) {
      const message = parsed.error.issues
        .map((issue) => (issue.path.length ? `${issue.path.join(".")}: ${issue.message}` : issue.message))
        .join("; ");
      return this.reject(ws, "invalid_message", message, validIdOf(value));
    }
    const frame = parsed.data;
    switch (frame.type) {
      case "publish": {
        const outcome = this.topics.publish(frame.topic, frame.data, conn);
        if (typeof outcome === "number") {
          if (frame.id !== undefined) this.send(ws, encode.ack(frame.id, outcome));
        } else if (outcome instanceof Promise) {
          const id = frame.id;
          void outcome.then((settled) => {
            if (!conn.closed) this.answerPublish(ws, settled, id);
          });
        } else {
          this.reject(ws, outcome.code, outcome.message, frame.id);
        }
        return;
      }
      case "subscribe":
        return this.topics.subscribe(conn, frame.topic, frame.id, frame.since, frame.presence === true || frame.info !== undefined ? { joinLeave: frame.presence, info: frame.info } : undefined);
      case "presence":
      case "presence_stats": {
        const { topic, id } = frame;
        const stats = frame.type === "presence_stats";
        const read = this.topics.readPresence(topic, stats, conn.identity);
        const answer = (result: Refusal | PresenceList | PresenceStats) => {
          if (conn.closed) return;
          if ("code" in result) return this.reject(ws, result.code, result.message, id);
          if ("users" in result) return this.send(ws, encode.presenceStats(topic, result.clients, result.users, id));
          this.sendLarge(ws, encode.presence(topic, result.clients, result.truncated, id), id);
        };
        if (read instanceof Promise) void read.then(answer);
        else answer(read);
        return;
      }
      case "unsubscribe":
        return this.topics.unsubscribe(conn, frame.topic, frame.id);
      case "ping":
        return this.send(ws, encode.pong(frame.id));
      case "history": {
        const { topic, since, limit, id } = frame;
        const read = this.topics.readHistory(topic, since, limit, conn.identity);
        const answer = (result: Refusal | HistoryRead) => {
          if (conn.closed) return;
          if ("code" in result) return this.reject(ws, result.code, result.message, id);
          this.sendLarge(ws, encode.history(topic, result, result.messages, id), id);
        };
        if (read instanceof Promise) void read.then(answer);
        else answer(read);
        return;
      }
    }
  }

  /**
   * A reply that may be large (history, presence): each is bounded to half the backpressure limit, but many
   * asked at once would pass it and get the socket dropped, so one that no longer fits what the client has not
   * read yet is refused instead.
   */
  private sendLarge(ws: Socket, reply: string, id: FrameId | undefined): void {
    if (ws.getBufferedAmount() + reply.length > this.config.BACKPRESSURE_LIMIT_BYTES / 2) {
      return this.reject(ws, "unavailable", "earlier replies on this connection are still unread: ask again once they are", id);
    }
    this.send(ws, reply);
  }

  /** A publish's ack (with its offset when stored in history) or its refusal. */
  private answerPublish(ws: Socket, outcome: PublishOutcome, id: FrameId | undefined): void {
    if (typeof outcome !== "number") this.reject(ws, outcome.code, outcome.message, id);
    else if (id !== undefined) this.send(ws, encode.ack(id, outcome));
  }
}

export const TOO_DEEP = `JSON nests deeper than ${MAX_JSON_DEPTH} levels`;

/**
 * The frame's id if it is a valid one (FrameId: a string of at most 64 characters or a finite number), so
 * that a client can match the error to its request. Checked by hand: it runs on refused frames, which must
 * stay cheaper than accepted ones.
 */
function validIdOf(value: unknown): FrameId | undefined {
  if (typeof value !== "object" || value === null || !("id" in value)) return undefined;
  const id = value.id;
  if (typeof id === "string") return id.length <= 64 ? id : undefined;
  return typeof id === "number" && Number.isFinite(id) ? id : undefined;
}

/** Frames refused before parsing (rate limit, binary) still answer with their id when it is cheap to read. */
const CHEAP_ID_MAX_BYTES = 1024;
function cheapIdOf(raw: string | Buffer): FrameId | undefined {
  if (raw.length > CHEAP_ID_MAX_BYTES) return undefined;
  try {
    return validIdOf(JSON.parse(typeof raw === "string" ? raw : raw.toString("utf8")));
  } catch {
    return undefined;
  }
}

const NO_PAYLOAD = Buffer.alloc(0);

/** What Elysia keeps in `ws.data` of its own routes' sockets: the handlers its dispatcher calls. */
interface ElysiaSocketData {
  open?(ws: Socket): unknown;
  message?(ws: Socket, raw: string | Buffer): unknown;
  close?(ws: Socket, code: number, reason: string): unknown;
  ping?(ws: Socket): unknown;
  pong?(ws: Socket): unknown;
}

/**
 * A Conn class for Elysia's dispatcher, which calls `ws.data.message(ws, raw)` (and close, ping, pong): its
 * methods hand each event to the gateway's handlers, the same ones Bun calls directly otherwise. A throw goes
 * back through the dispatcher to Bun, which calls the handlers' `error` (kept in the app's websocket config).
 */
function dispatchedConn(handlers: WebSocketHandler<Conn>): typeof Conn {
  return class DispatchedConn extends Conn {
    message(ws: Socket, raw: string | Buffer<ArrayBuffer>): void {
      void handlers.message?.(ws, raw);
    }
    close(ws: Socket, code: number, reason: string): void {
      void handlers.close?.(ws, code, reason);
    }
    ping(ws: Socket): void {
      void handlers.ping?.(ws, NO_PAYLOAD);
    }
    pong(ws: Socket): void {
      void handlers.pong?.(ws, NO_PAYLOAD);
    }
  };
}
