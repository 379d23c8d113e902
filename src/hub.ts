// The local hub: this process's subscribers. Delivery is Bun's native publish (uWS fans one serialized frame
// out to every subscribed socket with no JS loop); interest is counted here, including subscriptions still
// waiting for the broker's confirmation, which Bun's own count cannot see (a socket is natively subscribed
// only once `subscribed` is sent, so no message can precede that reply).
import type { Server, ServerWebSocket } from "bun";
import type { Recovery } from "./history/recovery.ts";

export class Hub {
  private server: Server<unknown> | undefined;
  /** Local subscriptions per topic, pending or active: the broker's interest follows this count. */
  private readonly interest = new Map<string, number>();
  /** Subscriptions whose history is being read: live messages of their topic are buffered for them. */
  private readonly recoveries = new Map<string, Set<Recovery>>();

  constructor(private readonly compressFrom: number) {}

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
  };

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

  /** Recoveries in flight (for tests: none may be left behind). */
  get recovering(): number {
    let count = 0;
    for (const waiting of this.recoveries.values()) count += waiting.size;
    return count;
  }

  /** Active local subscribers (Bun's native count): the deliveries one publish makes here. */
  subscribers(topic: string): number {
    return this.server?.subscriberCount(topic) ?? 0;
  }

  /** One more local subscription of `topic` (the broker is asked for every one: it is idempotent). */
  join(topic: string): void {
    this.interest.set(topic, (this.interest.get(topic) ?? 0) + 1);
  }

  /** One fewer; true when it was the last (the broker may stop listening). */
  leave(topic: string): boolean {
    const count = (this.interest.get(topic) ?? 1) - 1;
    if (count > 0) this.interest.set(topic, count);
    else this.interest.delete(topic);
    return count <= 0;
  }

  /** Local subscriptions per topic, pending ones included (read-only: the cluster view lists them). */
  get interests(): ReadonlyMap<string, number> {
    return this.interest;
  }

  /** Local subscriptions of `topic`, pending ones included. */
  interestIn(topic: string): number {
    return this.interest.get(topic) ?? 0;
  }

  /** Starts native delivery of `topic` to `ws` (the subscription is confirmed). */
  activate(ws: ServerWebSocket<unknown>, topic: string): void {
    ws.subscribe(topic);
  }

  deactivate(ws: ServerWebSocket<unknown>, topic: string): void {
    ws.unsubscribe(topic);
  }
}
