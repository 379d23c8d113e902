// Cross-node fan-out over Redis pub/sub, on Bun's built-in RedisClient.
//
// - Local first: a publish is delivered to this node's subscribers (the hub's native publish), then sent to
//   Redis as `<nodeId>|<frame>` on channel `sb:<topic>`. The frame is serialized once; the Redis payload is
//   that same string behind a prefix. Nodes drop payloads carrying their own id, so the origin never
//   delivers twice, and Redis keeps per-channel order, so one publisher's order holds on every node.
// - Interest only: channel subscriptions follow the hub's interest through one state machine per channel
//   (./redis-channels.ts), so traffic a node does not need never reaches it.
// - Failure: Bun's RedisClient neither restores subscriptions after a reconnect nor, with its offline queue,
//   refuses commands while down, and a Redis that hangs (SIGSTOP) looks connected while every command queues
//   without bound (docs/bun-notes.md). So this broker owns the lifecycle: fresh publisher + subscriber clients
//   per connection, no offline queue, a PING health check with a deadline (a stalled Redis is dropped and
//   reconnected like a lost one), a bound on bytes sent but not yet answered (past it cross-node copies are
//   dropped and counted), and backoff between attempts.
import { RedisClient } from "bun";
import { systemClock, type Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { PUBLISHED, type Broker, type BrokerStatus, type Deliver } from "./broker.ts";
import { RedisChannels } from "./redis-channels.ts";

const CHANNEL_PREFIX = "sb:";
const SEPARATOR = "|";

export interface RedisBrokerOptions {
  url: string;
  log: Logger;
  /** A PING (health check) or a connection attempt unanswered this long marks Redis stalled. */
  timeoutMs: number;
  /** Cross-node bytes sent but not yet acknowledged by Redis; beyond it publishes are not sent (dropped). */
  maxPendingBytes: number;
  /** How long `subscribed` waits for Redis to confirm before replying anyway (the node is then degraded). */
  confirmMs?: number;
  /** Backoff between reconnect attempts: full jitter up to min(capMs, baseMs * 2^attempt). */
  baseMs?: number;
  capMs?: number;
  clock?: Clock;
}

export class RedisBroker implements Broker {
  /** Unique per process: marks this node's own payloads so it skips them when Redis echoes them back. */
  readonly nodeId = crypto.randomUUID().slice(0, 8);
  /**
   * sent/received: payloads to and from Redis. dropped: cross-node copies not sent (Redis unreachable,
   * stalled, or over maxPendingBytes) or whose PUBLISH failed. stalls: health checks that timed out.
   */
  readonly counters = { sent: 0, received: 0, dropped: 0, reconnects: 0, stalls: 0, subscribe_timeouts: 0, subscribe_failures: 0 };

  private deliver: Deliver | undefined;
  private pub: RedisClient | undefined;
  private ready = false;
  private lastError = "connecting";
  private closed = false;
  /** Ends the current connection (lost, stalled, broken, or close()). */
  private hangUp: ((reason: string) => void) | undefined;
  private wake: (() => void) | undefined;
  private readonly prefix: string;
  private readonly channels: RedisChannels;
  private readonly clock: Clock;
  /** Bytes handed to the current publisher connection and not yet answered; reset with each connection. */
  private pendingBytes = 0;
  private generation = 0;
  private pingSentAt = -1;
  private stopHealth: (() => void) | undefined;

  constructor(private readonly options: RedisBrokerOptions) {
    this.prefix = `${this.nodeId}${SEPARATOR}`;
    this.clock = options.clock ?? systemClock;
    this.channels = new RedisChannels(
      {
        failed: (channel, op, error) => {
          this.counters.subscribe_failures++;
          const message = error instanceof Error ? error.message : String(error);
          options.log.warn(`redis_${op}_failed`, { topic: channel.slice(CHANNEL_PREFIX.length), error: message });
          if (op === "unsubscribe") this.hangUp?.(`UNSUBSCRIBE failed: ${message}`);
        },
        confirmTimedOut: (channel) => {
          this.counters.subscribe_timeouts++;
          options.log.warn("redis_subscribe_slow", { topic: channel.slice(CHANNEL_PREFIX.length), waitedMs: options.confirmMs ?? 2000 });
        },
      },
      options.confirmMs ?? 2000,
      options.baseMs ?? 100,
    );
  }

  start(deliver: Deliver): void {
    this.deliver = deliver;
    this.stopHealth = this.clock.every(Math.max(10, Math.floor(this.options.timeoutMs / 4)), this.checkHealth);
    void this.run();
  }

  publish(topic: string, frame: string): Promise<void> {
    this.deliver!(topic, frame);
    const pub = this.pub;
    const size = frame.length + this.prefix.length;
    if (pub === undefined || !this.ready || this.pendingBytes + size > this.options.maxPendingBytes) {
      this.counters.dropped++;
      return PUBLISHED;
    }
    this.counters.sent++;
    this.pendingBytes += size;
    const generation = this.generation;
    return pub.publish(CHANNEL_PREFIX + topic, this.prefix + frame).then(
      () => {
        if (generation === this.generation) this.pendingBytes -= size;
      },
      () => {
        if (generation === this.generation) this.pendingBytes -= size;
        this.counters.dropped++;
      },
    );
  }

  subscribe(topic: string): Promise<void> | undefined {
    const confirmed = this.channels.want(CHANNEL_PREFIX + topic);
    // While Redis is unreachable, waiting cannot make cross-node delivery true: confirm at once (the node is
    // degraded and says so on /readyz); the channel is subscribed as soon as Redis is back.
    return this.ready ? confirmed : undefined;
  }

  unsubscribe(topic: string): void {
    this.channels.drop(CHANNEL_PREFIX + topic);
  }

  status(): BrokerStatus {
    return this.ready ? { kind: "redis", ready: true } : { kind: "redis", ready: false, detail: this.lastError };
  }

  gauges(): Record<string, number> {
    const { wanted, subscribed } = this.channels.counts();
    return { pending_bytes: this.pendingBytes, channels_wanted: wanted, channels_subscribed: subscribed };
  }

  /** True when Redis subscriptions equal local interest right now (tests wait for it). */
  converged(): boolean {
    return this.ready && this.channels.converged();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopHealth?.();
    this.hangUp?.("broker closed");
    this.wake?.();
  }

  /** Redis -> local subscribers. The payload is `<origin node>|<frame>`; our own come back and are skipped. */
  private readonly onPayload = (payload: string, channel: string): void => {
    if (payload.startsWith(this.prefix)) return;
    const cut = payload.indexOf(SEPARATOR);
    if (cut < 0 || this.deliver === undefined) return;
    this.counters.received++;
    this.deliver(channel.slice(CHANNEL_PREFIX.length), payload.slice(cut + 1));
  };

  /** A PING unanswered for timeoutMs means Redis hangs (SIGSTOP, overload): drop it and reconnect. */
  private readonly checkHealth = (): void => {
    const pub = this.pub;
    if (pub === undefined || !this.ready) return;
    const now = this.clock.now();
    if (this.pingSentAt >= 0) {
      if (now - this.pingSentAt < this.options.timeoutMs) return;
      this.counters.stalls++;
      this.hangUp?.(`redis did not answer PING within ${this.options.timeoutMs} ms`);
      return;
    }
    this.pingSentAt = now;
    const generation = this.generation;
    pub.send("PING", []).then(
      () => {
        if (generation === this.generation) this.pingSentAt = -1;
      },
      () => {}, // a failed PING closes the client, which onclose reports
    );
  };

  /** Connect, restore interest, wait until the connection ends, back off, repeat until close(). */
  private async run(): Promise<void> {
    const { url, log, timeoutMs } = this.options;
    const baseMs = this.options.baseMs ?? 100;
    const capMs = this.options.capMs ?? 5000;
    let attempt = 0;
    while (!this.closed) {
      const clientOptions = { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: timeoutMs };
      const pub = new RedisClient(url, clientOptions);
      const sub = new RedisClient(url, clientOptions);
      const ended = new Promise<string>((resolve) => {
        pub.onclose = (error) => resolve(error?.message ?? "connection closed");
        sub.onclose = (error) => resolve(error?.message ?? "connection closed");
        this.hangUp = resolve;
      });
      // A Redis that accepts TCP but never answers (stopped) would hold connect() forever: bound it.
      const deadline = Bun.sleep(timeoutMs).then(() => `no answer from Redis within ${timeoutMs} ms`);
      try {
        const connected = Promise.all([pub.connect(), sub.connect()]).then(
          () => undefined,
          (error: Error) => error.message,
        );
        const failure = await Promise.race([connected, ended, deadline]);
        if (failure !== undefined) throw new Error(failure);
        if (this.closed) break;
        this.generation++;
        this.pendingBytes = 0;
        this.pingSentAt = -1;
        this.pub = pub;
        this.ready = true;
        this.channels.connected({
          subscribe: (channel) => sub.subscribe(channel, this.onPayload),
          unsubscribe: (channel) => sub.unsubscribe(channel),
        });
        if (attempt > 0 || this.counters.reconnects > 0) log.info("redis_restored", { node: this.nodeId, channels: this.channels.counts().wanted });
        else log.info("redis_connected", { node: this.nodeId });
        attempt = 0;
        this.lastError = await ended;
        if (this.closed) break;
        this.counters.reconnects++;
        const stalled = this.lastError.startsWith("redis did not answer");
        log.warn(stalled ? "redis_stalled" : "redis_lost", {
          node: this.nodeId,
          error: this.lastError,
          note: "local delivery continues; cross-node messages are dropped until Redis is back",
        });
      } catch (error) {
        this.lastError = error instanceof Error ? error.message : String(error);
        if (attempt === 0) log.warn("redis_unreachable", { node: this.nodeId, error: this.lastError });
      } finally {
        this.ready = false;
        this.generation++;
        this.pendingBytes = 0;
        this.pub = undefined;
        this.hangUp = undefined;
        this.channels.disconnected();
        for (const client of [pub, sub]) {
          client.onclose = null;
          try {
            client.close();
          } catch {
            // already closed
          }
        }
      }
      if (this.closed) break;
      attempt++;
      const delay = Math.floor(Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20)));
      await Promise.race([Bun.sleep(delay), new Promise<void>((resolve) => (this.wake = resolve))]);
    }
  }
}
