// The local hub: this process's subscribers. Delivery is Bun's native publish (uWS fans one serialized frame
// out to every subscribed socket with no JS loop); interest is counted here, including subscriptions still
// waiting for the broker's confirmation, which Bun's own count cannot see (a socket is natively subscribed
// only once `subscribed` is sent, so no message can precede that reply).
import type { Server, ServerWebSocket } from "bun";
import type { Recovery } from "./history/recovery.ts";

/** Native topics of batching sockets: `$` is not a character of topic names, so none can collide. */
const BATCH_PREFIX = "$batch:";

export class Hub {
  private server: Server<unknown> | undefined;
  /** Local subscriptions per topic, pending or active: the broker's interest follows this count. */
  private readonly interest = new Map<string, number>();
  /** Subscriptions whose history is being read: live messages of their topic are buffered for them. */
  private readonly recoveries = new Map<string, Set<Recovery>>();
  /**
   * Batched delivery (`?batch=1`): topics some batching socket holds, with the native topic those sockets
   * subscribe to instead of the topic itself. Empty (one size check per message) until a batching socket comes.
   */
  private readonly batched = new Map<string, string>();
  /** Messages of batched topics delivered in this event-loop tick, published as one frame per topic at its end. */
  private pending = new Map<string, string[]>();
  private flushScheduled = false;

  /**
   * `maxBatchBytes`: no batch frame is longer (MAX_PAYLOAD_BYTES); a message longer than it goes alone.
   * `batchDelayMs`: how long a batch may wait for more (BATCH_MAX_DELAY_MS; 0: the end of the tick).
   */
  constructor(
    private readonly compressFrom: number,
    private readonly maxBatchBytes = Infinity,
    private readonly batchDelayMs = 0,
  ) {}

  attach(server: Server<unknown>): void {
    this.server = server;
  }

  detach(): void {
    this.server = undefined;
  }

  /** Whether a listening server delivers for it (the plugin attaches it when the app starts). */
  get attached(): boolean {
    return this.server !== undefined;
  }

  /**
   * Delivers one serialized frame to every active local subscriber of `topic`, and, for history messages,
   * to every recovery of the topic in flight (one `size` check when there is none).
   */
  readonly deliver = (topic: string, frame: string, offset = 0, epoch?: string): void => {
    if (this.recoveries.size !== 0 && offset > 0) this.hold(topic, frame, offset, epoch);
    this.server?.publish(topic, frame, frame.length >= this.compressFrom);
    if (this.batched.size !== 0 && this.batched.has(topic)) this.queue(topic, frame);
  };

  /** A message for the batching subscribers of `topic`: sent with the others of this tick, at its end. */
  private queue(topic: string, frame: string): void {
    let frames = this.pending.get(topic);
    if (frames === undefined) this.pending.set(topic, (frames = []));
    frames.push(frame);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      if (this.batchDelayMs === 0) setImmediate(this.flush);
      else setTimeout(this.flush, this.batchDelayMs);
    }
  }

  /** End of the tick: every batched topic's messages, each topic's as one frame (or a few, past maxBatchBytes). */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const pending = this.pending;
    this.pending = new Map();
    for (const [topic, frames] of pending) this.publishBatch(topic, frames);
  };

  /**
   * Publishes `frames` (one topic's, in order) to its batching subscribers: joined by "\n", each batch within
   * maxBatchBytes. JSON never holds a raw newline, so a client splits on it. A topic nobody batches any more is
   * forgotten here.
   */
  private publishBatch(topic: string, frames: readonly string[]): void {
    const name = this.batched.get(topic);
    const server = this.server;
    if (name === undefined || server === undefined) return;
    if (server.subscriberCount(name) === 0) {
      this.batched.delete(topic);
      return;
    }
    let batch = frames[0]!;
    if (frames.length > 1) {
      // The bound is in bytes of UTF-8 (JSON keeps non-ASCII text as is), counted only when there is a batch.
      let bytes = Buffer.byteLength(batch);
      for (let i = 1; i < frames.length; i++) {
        const frame = frames[i]!;
        const size = Buffer.byteLength(frame);
        if (bytes + 1 + size > this.maxBatchBytes) {
          server.publish(name, batch, batch.length >= this.compressFrom);
          batch = frame;
          bytes = size;
        } else {
          batch += "\n" + frame;
          bytes += 1 + size;
        }
      }
    }
    server.publish(name, batch, batch.length >= this.compressFrom);
  }

  /**
   * Sends every pending batch now: before the server closes sockets (a kick, the drain, an expired token), whose
   * batching clients must get what was published before, as the others do.
   */
  flushNow(): void {
    if (this.flushScheduled) this.flush(); // a timer still set finds nothing pending (or a later batch)
  }

  /** Sends what `topic` has pending now: before a batching socket joins or leaves it, so none gets another's. */
  private flushTopic(topic: string): void {
    const frames = this.pending.get(topic);
    if (frames === undefined) return;
    this.pending.delete(topic);
    this.publishBatch(topic, frames);
  }

  /** Hands a history message to the recoveries of `topic` in flight only (active subscribers have it). */
  hold(topic: string, frame: string, offset: number, epoch: string | undefined): void {
    const waiting = this.recoveries.get(topic);
    if (waiting !== undefined) for (const recovery of waiting) recovery.add(frame, offset, epoch);
  }

  /** From now on, live messages of `topic` are also handed to `recovery`. */
  watch(topic: string, recovery: Recovery): void {
    let waiting = this.recoveries.get(topic);
    if (waiting === undefined) this.recoveries.set(topic, (waiting = new Set()));
    waiting.add(recovery);
  }

  unwatch(topic: string, recovery: Recovery): void {
    const waiting = this.recoveries.get(topic);
    if (waiting?.delete(recovery) && waiting.size === 0) this.recoveries.delete(topic);
  }

  /** Topics with a batch topic (for tests: none may be left behind once nobody holds them). */
  get batchedTopics(): number {
    return this.batched.size;
  }

  /** Recoveries in flight (for tests: none may be left behind). */
  get recovering(): number {
    let count = 0;
    for (const waiting of this.recoveries.values()) count += waiting.size;
    return count;
  }

  /** Active local subscribers (Bun's native count, batching ones included): the deliveries one publish makes here. */
  subscribers(topic: string): number {
    const server = this.server;
    if (server === undefined) return 0;
    const name = this.batched.size === 0 ? undefined : this.batched.get(topic);
    return server.subscriberCount(topic) + (name === undefined ? 0 : server.subscriberCount(name));
  }

  /** One more local subscription of `topic` (the broker is asked for every one: it is idempotent). */
  join(topic: string): void {
    this.interest.set(topic, (this.interest.get(topic) ?? 0) + 1);
  }

  /** One fewer; true when it was the last (the broker may stop listening). */
  leave(topic: string): boolean {
    const count = (this.interest.get(topic) ?? 1) - 1;
    if (count > 0) {
      this.interest.set(topic, count);
      return false;
    }
    this.interest.delete(topic);
    // Nobody here holds it any more: its batch topic and what was pending for it go (a quiet topic would
    // otherwise keep its entry forever, and the size check in deliver would never be free again).
    if (this.batched.size !== 0 && this.batched.delete(topic)) this.pending.delete(topic);
    return true;
  }

  /** Local subscriptions per topic, pending ones included (read-only: the cluster view lists them). */
  get interests(): ReadonlyMap<string, number> {
    return this.interest;
  }

  /** Local subscriptions of `topic`, pending ones included. */
  interestIn(topic: string): number {
    return this.interest.get(topic) ?? 0;
  }

  /**
   * Starts native delivery of `topic` to `ws` (the subscription is confirmed); `batch`: through the topic's batch
   * topic. What is pending for the batch topic goes out first: it precedes this subscription.
   */
  activate(ws: ServerWebSocket<unknown>, topic: string, batch = false): void {
    if (!batch) return void ws.subscribe(topic);
    this.flushTopic(topic);
    let name = this.batched.get(topic);
    if (name === undefined) this.batched.set(topic, (name = `${BATCH_PREFIX}${topic}`));
    ws.subscribe(name);
  }

  /** Stops it; for a batching socket, after what is pending (sent before the subscription ended). */
  deactivate(ws: ServerWebSocket<unknown>, topic: string, batch = false): void {
    if (!batch) return void ws.unsubscribe(topic);
    this.flushTopic(topic);
    ws.unsubscribe(this.batched.get(topic) ?? `${BATCH_PREFIX}${topic}`);
  }
}
