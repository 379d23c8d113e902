// Topics spread over several Redis instances (REDIS_URL lists them, comma-separated): a topic lives on one
// instance, chosen by a hash of its name, and everything of the topic goes there: its channel, its history
// (offset, epoch, stream) and its presence. One Redis is single-threaded, and with history on it tops out near
// 50,000 publishes/s (docs/capacity.md); N instances carry N times that, as Centrifugo's sharded Redis engine does.
//
// Composed, not inherited: one RedisBroker per instance, each with its own connections, health check, backoff
// and channel state machine; this class routes by topic and aggregates. Every node connects to every instance.
// - The instance of a topic is `jump(fnv1a(topic), N)` (Lamping & Veach's jump consistent hash): every node
//   computes the same one as long as all list the same instances in the same order. Appending an instance
//   moves ~1/N of the topics (to the new one) and no other; moved topics start a new history epoch there
//   (clients recover with `recovered: false`). Reordering or removing instances moves most topics.
// - The API's control commands and the cluster's node records use the first instance.
// - Ready only while every instance is: a node that cannot reach one instance cannot serve its topics.
import type { HistoryOptions, HistoryQuery, HistoryRead } from "../history/history.ts";
import type { ControlCommand } from "../protocol.ts";
import type { Broker, BrokerStatus, ControlHandler, Deliver } from "./broker.ts";
import type { RedisSend } from "./lua.ts";
import type { RedisBroker } from "./redis.ts";

/** FNV-1a, 32 bits, over the UTF-16 code units of `text`: cheap, and the same on every node. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/**
 * Jump consistent hash: a bucket in [0, buckets) for `key`, moving only ~1/(n+1) of the keys (to the new
 * bucket) when a bucket is added. The published algorithm's 64-bit LCG, in 32-bit halves (no BigInt per call).
 */
export function jumpHash(key: number, buckets: number): number {
  // key = key * 2862933555777941757 + 1 (mod 2^64), as (hi, lo) 32-bit halves.
  let lo = key >>> 0;
  let hi = 0;
  let b = -1;
  let j = 0;
  while (j < buckets) {
    b = j;
    // (hi:lo) * (0x27BB2EE6:0x87B0B0FD) + 1
    const aLo = 0x87b0b0fd;
    const aHi = 0x27bb2ee6;
    const loLo = (lo & 0xffff) * (aLo & 0xffff);
    const loHi = (lo >>> 16) * (aLo & 0xffff) + (loLo >>> 16);
    const mid = (lo & 0xffff) * (aLo >>> 16) + (loHi & 0xffff);
    const carry = (loHi >>> 16) + (mid >>> 16) + (lo >>> 16) * (aLo >>> 16);
    const newLo = (((mid & 0xffff) << 16) | (loLo & 0xffff)) >>> 0;
    const newHi = (carry + Math.imul(lo, aHi) + Math.imul(hi, aLo)) >>> 0;
    lo = (newLo + 1) >>> 0;
    hi = lo === 0 ? (newHi + 1) >>> 0 : newHi;
    // j = (b + 1) * 2^31 / ((key >>> 33) + 1)
    j = Math.floor(((b + 1) * 2147483648) / ((hi >>> 1) + 1));
  }
  return b;
}

export class ShardedBroker implements Broker {
  constructor(readonly shards: readonly RedisBroker[]) {
    if (shards.length < 2) throw new Error("a sharded broker needs at least two instances");
  }

  /** The instance `topic` lives on. */
  shardOf(topic: string): RedisBroker {
    return this.shards[jumpHash(fnv1a(topic), this.shards.length)]!;
  }

  /** This node's id on the first instance (the cluster's node records live there). */
  get nodeId(): string {
    return this.shards[0]!.nodeId;
  }

  start(deliver: Deliver, restored?: (owns?: (topic: string) => boolean) => void, control?: ControlHandler): void {
    for (const shard of this.shards) {
      // Only the instance that came back can have missed messages: its own topics are checked.
      shard.start(deliver, restored && (() => restored((topic) => this.shardOf(topic) === shard)), control);
    }
  }

  publish(topic: string, frame: string): Promise<void> {
    return this.shardOf(topic).publish(topic, frame);
  }

  append(topic: string, head: string, retention?: HistoryOptions): number | Promise<number> {
    return this.shardOf(topic).append(topic, head, retention);
  }

  announce(topic: string, frame: string): void {
    this.shardOf(topic).announce(topic, frame);
  }

  get storesHistory(): boolean {
    return this.shards[0]!.storesHistory;
  }

  read(topic: string, query: HistoryQuery): HistoryRead | Promise<HistoryRead> {
    return this.shardOf(topic).read(topic, query);
  }

  subscribe(topic: string): Promise<void> | undefined {
    return this.shardOf(topic).subscribe(topic);
  }

  unsubscribe(topic: string): void {
    this.shardOf(topic).unsubscribe(topic);
  }

  /** On the first instance's control channel, which every node hears. */
  control(command: ControlCommand): number | Promise<number> {
    return this.shards[0]!.control(command);
  }

  /** Commands for `topic`'s instance (its keys live there); without a topic, the first instance's. */
  sendFor(topic?: string): RedisSend {
    return (topic === undefined ? this.shards[0]! : this.shardOf(topic)).send;
  }

  status(): BrokerStatus {
    const servers = new Map<string, number>();
    for (const [i, shard] of this.shards.entries()) {
      const status = shard.status();
      if (!status.ready) return { kind: "redis", ready: false, detail: `redis ${i + 1} of ${this.shards.length}: ${status.detail ?? "not ready"}` };
      // One server listed twice (another spelling, another DB number): pub/sub is per server, so its control
      // channel would be heard twice. Spelled the same it is refused at start-up; this catches the rest.
      const twin = servers.get(shard.runId);
      if (twin !== undefined) {
        return { kind: "redis", ready: false, detail: `redis ${twin + 1} and ${i + 1} of ${this.shards.length} are the same Redis server (run_id ${shard.runId}): list each server once` };
      }
      if (shard.runId !== "") servers.set(shard.runId, i);
    }
    return { kind: "redis", ready: true };
  }

  /** Every instance's counters, summed (read at scrape time). */
  get counters(): Record<string, number> {
    return sum(this.shards.map((shard) => shard.counters));
  }

  gauges(): Record<string, number> {
    return sum(this.shards.map((shard) => shard.gauges()));
  }

  /** True when every instance's subscriptions equal local interest (tests wait for it). */
  converged(): boolean {
    return this.shards.every((shard) => shard.converged());
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((shard) => shard.close()));
  }
}

function sum(records: readonly Record<string, number>[]): Record<string, number> {
  const total: Record<string, number> = {};
  for (const record of records) for (const [key, value] of Object.entries(record)) total[key] = (total[key] ?? 0) + value;
  return total;
}
