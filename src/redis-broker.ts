// Cross-node fan-out over Redis pub/sub, on Bun's built-in RedisClient.
//
// - Local first: every publish goes to this node's subscribers through Bun's native publish, then to Redis
//   as `<nodeId>|<frame>` on channel `sb:<topic>`. The frame is serialized once; the Redis payload is that
//   same string behind a prefix. Nodes drop payloads carrying their own id, so the origin node never
//   delivers twice, and Redis keeps per-channel order, so one publisher's order holds on every node.
// - Interest only: a node SUBSCRIBEs to `sb:<topic>` while it has at least one local subscriber (Bun's
//   `server.subscriberCount`), so traffic it does not need never reaches it.
// - Failure: Bun's RedisClient neither restores subscriptions after a reconnect nor, with an offline queue,
//   refuses commands while down (see ../shared/docs/bun-elysia-pitfalls.md). So this broker owns the
//   lifecycle: fresh publisher + subscriber clients per connection, no offline queue (a publish during an
//   outage fails at once: at-most-once across nodes, never a hang), backoff between attempts, and on every
//   (re)connect it subscribes to exactly the topics that have local subscribers now.
import { RedisClient, type Server } from "bun";
import { MemoryBroker, type BrokerStatus } from "./broker.ts";
import type { Logger } from "./log.ts";

const CHANNEL_PREFIX = "sb:";
const SEPARATOR = "|";
/** How long `subscribed` waits for Redis to confirm before replying anyway (the node is then degraded). */
const SUBSCRIBE_CONFIRM_MS = 2000;

export interface RedisBrokerOptions {
  url: string;
  log: Logger;
  compressFrom: number;
  /** Backoff between reconnect attempts: full jitter up to min(capMs, baseMs * 2^attempt). */
  baseMs?: number;
  capMs?: number;
}

export class RedisBroker extends MemoryBroker {
  /** Unique per process: marks this node's own payloads so it skips them when Redis echoes them back. */
  readonly nodeId = crypto.randomUUID().slice(0, 8);
  /** Published to Redis, and cross-node payloads dropped because Redis was unreachable. */
  /** sent/received/dropped: payloads to and from Redis; delivered: local deliveries of remote messages. */
  readonly counters = { sent: 0, received: 0, dropped: 0, reconnects: 0, delivered: 0 };

  private pub: RedisClient | undefined;
  private sub: RedisClient | undefined;
  /** Channels subscribed on the current `sub` client (subscribing twice would double deliveries). */
  private channels = new Set<string>();
  private ready = false;
  private lastError = "connecting";
  private closed = false;
  private wake: (() => void) | undefined;
  private readonly prefix: string;

  constructor(private readonly options: RedisBrokerOptions) {
    super(options.compressFrom);
    this.prefix = `${this.nodeId}${SEPARATOR}`;
  }

  override attach(server: Server<unknown>): void {
    super.attach(server);
    void this.run();
  }

  override publish(topic: string, frame: string): void {
    this.local(topic, frame);
    const pub = this.pub;
    if (pub === undefined || !this.ready) {
      this.counters.dropped++;
      return;
    }
    this.counters.sent++;
    pub.publish(CHANNEL_PREFIX + topic, this.prefix + frame).catch(() => void this.counters.dropped++);
  }

  override interestChanged(topic: string): Promise<void> | undefined {
    const channel = CHANNEL_PREFIX + topic;
    const wanted = this.server !== undefined && this.server.subscriberCount(topic) > 0;
    if (wanted === this.channels.has(channel)) return wanted ? Promise.resolve() : undefined;
    const sub = this.sub;
    if (wanted) {
      this.channels.add(channel);
      if (sub === undefined || !this.ready) return Promise.resolve(); // restored on reconnect
      const confirmed = sub.subscribe(channel, this.onPayload).then(
        () => undefined,
        (error: Error) => this.options.log.warn("redis_subscribe_failed", { topic, error: error.message }),
      );
      return Promise.race([confirmed, Bun.sleep(SUBSCRIBE_CONFIRM_MS)]);
    }
    this.channels.delete(channel);
    if (sub !== undefined && this.ready) sub.unsubscribe(channel).catch(() => {});
    return undefined;
  }

  override status(): BrokerStatus {
    return this.ready ? { kind: "redis", ready: true } : { kind: "redis", ready: false, detail: this.lastError };
  }

  override async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    this.drop();
    await super.close();
  }

  /** Redis -> local subscribers. The payload is `<origin node>|<frame>`; our own come back and are skipped. */
  private readonly onPayload = (payload: string, channel: string): void => {
    if (payload.startsWith(this.prefix)) return;
    const cut = payload.indexOf(SEPARATOR);
    if (cut < 0 || this.server === undefined) return;
    this.counters.received++;
    this.counters.delivered += this.server.subscriberCount(channel.slice(CHANNEL_PREFIX.length));
    this.server.publish(channel.slice(CHANNEL_PREFIX.length), payload.slice(cut + 1), payload.length - cut - 1 >= this.compressFrom);
  };

  /** Connect, subscribe to current interest, wait for a close, back off, repeat until close(). */
  private async run(): Promise<void> {
    const { url, log } = this.options;
    const baseMs = this.options.baseMs ?? 100;
    const capMs = this.options.capMs ?? 5000;
    let attempt = 0;
    while (!this.closed) {
      const clientOptions = { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: 2000 };
      const pub = new RedisClient(url, clientOptions);
      const sub = new RedisClient(url, clientOptions);
      const lost = new Promise<string>((resolve) => {
        pub.onclose = (error) => resolve(error?.message ?? "connection closed");
        sub.onclose = (error) => resolve(error?.message ?? "connection closed");
        this.wake = () => resolve("broker closed");
      });
      try {
        await Promise.race([Promise.all([pub.connect(), sub.connect()]), lost.then((m) => Promise.reject(new Error(m)))]);
        // Interest as it is now: topics with local subscribers (others may have come and gone while down).
        this.pub = pub;
        this.sub = sub;
        this.channels = new Set(this.localTopics().map((topic) => CHANNEL_PREFIX + topic));
        if (this.channels.size > 0) await sub.subscribe([...this.channels], this.onPayload);
        this.ready = true;
        if (attempt > 0 || this.counters.reconnects > 0) log.info("redis_restored", { node: this.nodeId, channels: this.channels.size });
        else log.info("redis_connected", { node: this.nodeId });
        attempt = 0;
        this.lastError = await lost;
        if (this.closed) break;
        this.counters.reconnects++;
        log.warn("redis_lost", { node: this.nodeId, error: this.lastError, note: "local delivery continues; cross-node messages are dropped until Redis is back" });
      } catch (error) {
        this.lastError = error instanceof Error ? error.message : String(error);
        if (attempt === 0) log.warn("redis_unreachable", { node: this.nodeId, error: this.lastError });
      }
      this.ready = false;
      this.drop(pub, sub);
      if (this.closed) break;
      attempt++;
      const delay = Math.floor(Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20)));
      await Promise.race([Bun.sleep(delay), new Promise<void>((resolve) => (this.wake = resolve))]);
    }
  }

  /** Topics of the wanted channels (kept while down) that still have local subscribers. */
  private localTopics(): string[] {
    const topics: string[] = [];
    for (const channel of this.channels) {
      const topic = channel.slice(CHANNEL_PREFIX.length);
      if (this.server !== undefined && this.server.subscriberCount(topic) > 0) topics.push(topic);
    }
    return topics;
  }

  private drop(pub = this.pub, sub = this.sub): void {
    this.ready = false;
    if (this.pub === pub) this.pub = undefined;
    if (this.sub === sub) this.sub = undefined;
    for (const client of [pub, sub]) {
      if (client === undefined) continue;
      client.onclose = null;
      try {
        client.close();
      } catch {
        // already closed
      }
    }
  }
}
