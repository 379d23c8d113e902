// The cross-node broker: how a published frame reaches the subscribers of every node, and how a node tells
// the others which topics it needs. Composed beside the local hub (src/hub.ts), never inherited from it.
import type { Config } from "../config.ts";
import type { HistoryOptions, HistoryQuery, HistoryRead } from "../history/history.ts";
import type { ControlCommand } from "../protocol.ts";

export interface BrokerStatus {
  kind: "memory" | "redis";
  /** False while the broker cannot reach other nodes: local delivery goes on, cross-node does not. */
  ready: boolean;
  detail?: string;
}

/**
 * Where a broker hands messages for this node's subscribers: the hub's native publish. History messages come
 * with their offset, and, from Redis, their epoch (so the node can tell that its stream of a topic broke).
 */
export type Deliver = (topic: string, frame: string, offset?: number, epoch?: string) => void;

/**
 * Where a broker hands a command of the control channel, on every node: the node applies it to its own
 * connections and returns how many it acted on.
 */
export type ControlHandler = (command: ControlCommand) => number;

/**
 * The broker could not hand a control command to the other nodes (Redis down, or the link lost before Redis
 * confirmed it); the message says whether this node applied it.
 */
export class BrokerUnavailable extends Error {
  override name = "BrokerUnavailable";
}

/**
 * Delivery contract (today: at-most-once across nodes, exactly-once and in order within a node).
 *
 * - `publish(topic, frame)` delivers `frame` to this node's active subscribers of `topic` before it returns
 *   (so a socket's own publishes keep their order locally), then hands it to the other nodes. Across nodes a
 *   message is delivered at most once: when the transport is down, stalled or over its queue bound, the
 *   cross-node copy is dropped and counted, never queued without bound and never retried (a retry could
 *   duplicate). Per topic, the messages of one publisher keep their order on every node. The promise
 *   settles when the cross-node hand-off is done or dropped; it never rejects (it will carry the message's
 *   position once history exists).
 * - `subscribe(topic)` is called for every local subscription of `topic` and is idempotent. It returns
 *   `undefined` when messages from other nodes already arrive for `topic` (or cannot, while the transport is
 *   down: the broker keeps the interest and subscribes when it is back), else a promise that resolves once
 *   they will (or after a bounded wait if the transport does not answer). The caller confirms the
 *   subscription to the client only then.
 * - `unsubscribe(topic)` is called when the last local subscription of `topic` is gone. Any interleaving of
 *   subscribe/unsubscribe calls, reconnects and failed commands converges to "upstream subscriptions ==
 *   topics with local interest".
 */
export interface Broker {
  // Frames handed to publish/append/announce are one line of JSON (the protocol's serializers make them so):
  // the Redis broker sends a topic's frames of one tick joined by "\n", and receivers split on it.
  /**
   * Called once, before any publish: where messages for local subscribers go, whom to tell when the
   * transport is back after a loss (messages of other nodes may have been missed meanwhile; `owns` says which
   * topics, when the link that came back carries only some of them), and where commands of the control
   * channel go.
   */
  start(deliver: Deliver, restored?: (owns?: (topic: string) => boolean) => void, control?: ControlHandler): void;
  publish(topic: string, frame: string): Promise<void>;
  /**
   * History contract (HISTORY_SIZE > 0; src/history/history.ts has the store's part). `append` stores the
   * message `head` (a message frame without its end) under the topic's next offset, then delivers
   * `head,"offset":N}` to the subscribers of every node, this one included, in offset order: per topic a total
   * order, the same on every node. It returns the offset once stored (a plain number when that is
   * synchronous) and rejects with HistoryUnavailable when the store cannot take it: then nothing is delivered
   * anywhere, so a retry creates no gap. A rejection after a timeout may still have been stored (the store
   * was slow, not down): a retry then stores the message twice, under two offsets.
   * `read` answers a history query; it rejects with HistoryUnavailable too. Brokers built without history
   * throw on both. `retention`: the topic's own (its definition's), else the store's defaults.
   */
  append(topic: string, head: string, retention?: HistoryOptions): number | Promise<number>;
  /**
   * A presence event (`join`/`leave` frame of `topic`) for the topic's `presence: true` subscribers on every
   * node, this one included (delivered on the internal topic `presenceTopic(topic)`). At most once per node;
   * across nodes best effort like a history-less publish: dropped while the transport is down.
   */
  announce(topic: string, frame: string): void;
  /** Whether this broker was built with a history store (append and read work). */
  readonly storesHistory: boolean;
  read(topic: string, query: HistoryQuery): HistoryRead | Promise<HistoryRead>;
  subscribe(topic: string): Promise<void> | undefined;
  unsubscribe(topic: string): void;
  /**
   * Control contract (the HTTP API's disconnect and unsubscribe): `control(command)` hands a small command to
   * every node, this one included, and each applies it to its own connections (the `control` handler of
   * start()). This node applies it before control() returns, synchronously, and the result carries what its
   * handler returned (connections acted on here); other nodes report nothing back.
   * - It throws or rejects with BrokerUnavailable when the transport is down (or past its pending-bytes bound):
   *   then no node applied it, this one included. A rejection after the command was sent (the connection
   *   dropped before the transport confirmed it) means this node applied it and others may or may not have:
   *   commands are idempotent, so a retry is safe.
   * - Across nodes it is at most once and not kept: a node whose own link is down when the command is sent
   *   never sees it (it is not queued or replayed after a reconnect). A node subscribes to the channel for its
   *   whole life and reports itself ready (status()) only while it is subscribed.
   */
  control(command: ControlCommand): number | Promise<number>;
  status(): BrokerStatus;
  /** The history store's figures when it lives in this process (the memory broker's), for /metrics. */
  readonly historyStats?: { counters: Record<string, number>; gauges(): Record<string, number> };
  /** Broker-specific counters for /metrics. */
  readonly counters?: Record<string, number>;
  /** Broker-specific gauges for /metrics. */
  gauges?(): Record<string, number>;
  close(): Promise<void>;
}

/** The settled promise every synchronous publish returns: no allocation per message. */
export const PUBLISHED: Promise<void> = Promise.resolve();

/** Frames at least this long are compressed when permessage-deflate is on; shorter ones cost more than they save. */
const COMPRESS_FROM_BYTES = 256;

/** The frame length from which sends are compressed: never when PERMESSAGE_DEFLATE is off. */
export const compressFromFor = (config: Pick<Config, "PERMESSAGE_DEFLATE">): number =>
  config.PERMESSAGE_DEFLATE ? COMPRESS_FROM_BYTES : Infinity;
