// Where a published frame goes. The frame is serialized once by the caller; a broker only moves the string.
// `memory` (the default) is Bun's native topic fan-out within this process; `redis` (src/redis-broker.ts)
// also hands frames to the other nodes that have subscribers for the topic.
import type { Server } from "bun";
import type { Config } from "./config.ts";

export interface BrokerStatus {
  kind: "memory" | "redis";
  /** False while the broker cannot reach other nodes: local delivery goes on, cross-node does not. */
  ready: boolean;
  detail?: string;
}

export interface Broker {
  /** Delivers `frame` to every subscriber of `topic`: local ones through Bun's native publish, remote ones too. */
  publish(topic: string, frame: string): void;
  /**
   * The local subscriber count of `topic` may have changed (a subscribe, an unsubscribe, a close). A networked
   * broker subscribes upstream for the first local subscriber and unsubscribes after the last. Resolves once
   * remote messages for the topic will arrive (bounded in time), so `subscribed` can be sent after it.
   */
  interestChanged(topic: string): Promise<void> | undefined;
  /** Called once the server is listening: the broker publishes through it. */
  attach(server: Server<unknown>): void;
  status(): BrokerStatus;
  /** Subscribers of `topic` in this process (Bun's native count), for the deliveries metric. */
  localSubscribers(topic: string): number;
  /** Broker-specific counters for /metrics (Redis: sent, received, dropped, reconnects). */
  readonly counters?: Record<string, number>;
  close(): Promise<void>;
}

/** Frames at least this long are compressed when permessage-deflate is on; shorter ones cost more than they save. */
const COMPRESS_FROM_BYTES = 256;

/** The frame length from which sends are compressed: never when PERMESSAGE_DEFLATE is off. */
export const compressFromFor = (config: Pick<Config, "PERMESSAGE_DEFLATE">): number =>
  config.PERMESSAGE_DEFLATE ? COMPRESS_FROM_BYTES : Infinity;

/** Single process: one native `server.publish` per frame; uWS fans it out without a JS loop. */
export class MemoryBroker implements Broker {
  protected server: Server<unknown> | undefined;
  constructor(protected readonly compressFrom: number = Infinity) {}
  attach(server: Server<unknown>): void {
    this.server = server;
  }
  publish(topic: string, frame: string): void {
    this.local(topic, frame);
  }
  /** Native fan-out to this process's subscribers. */
  protected local(topic: string, frame: string): void {
    if (this.server === undefined) throw new Error("broker used before the server listens");
    this.server.publish(topic, frame, frame.length >= this.compressFrom);
  }
  interestChanged(_topic: string): Promise<void> | undefined {
    return undefined; // Bun's native topics are all the interest a single process needs
  }
  status(): BrokerStatus {
    return { kind: "memory", ready: true };
  }
  localSubscribers(topic: string): number {
    return this.server?.subscriberCount(topic) ?? 0;
  }
  async close(): Promise<void> {
    this.server = undefined;
  }
}
