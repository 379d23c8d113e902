// One process alone: a publish is the hub's native fan-out and nothing else; there are no other nodes to
// subscribe at, so every subscription is effective at once. History, when on, is this process's memory
// (src/history/memory.ts): storing and delivering are one synchronous step, so offsets are in order for free.
import type { HistoryOptions, HistoryQuery, HistoryRead } from "../history/history.ts";
import type { MemoryHistory } from "../history/memory.ts";
import type { ControlCommand } from "../protocol.ts";
import { presenceTopic } from "../presence/presence.ts";
import { PUBLISHED, type Broker, type BrokerStatus, type ControlHandler, type Deliver } from "./broker.ts";

export class MemoryBroker implements Broker {
  private deliver: Deliver | undefined;
  private onControl: ControlHandler | undefined;

  constructor(readonly history?: MemoryHistory) {}

  get storesHistory(): boolean {
    return this.history !== undefined;
  }

  start(deliver: Deliver, _restored?: () => void, control?: ControlHandler): void {
    this.deliver = deliver;
    this.onControl = control;
  }
  /** There is no other node: the command is applied here, now. */
  control(command: ControlCommand): number {
    return this.onControl?.(command) ?? 0;
  }
  publish(topic: string, frame: string): Promise<void> {
    if (this.deliver === undefined) throw new Error("broker used before start()");
    this.deliver(topic, frame);
    return PUBLISHED;
  }
  append(topic: string, head: string, retention?: HistoryOptions): number {
    if (this.deliver === undefined || this.history === undefined) throw new Error("broker without history, or used before start()");
    const stored = this.history.append(topic, head, retention);
    this.deliver(topic, stored.frame, stored.offset);
    return stored.offset;
  }
  read(topic: string, query: HistoryQuery): HistoryRead {
    if (this.history === undefined) throw new Error("broker without history");
    return this.history.read(topic, query);
  }
  announce(topic: string, frame: string): void {
    this.deliver?.(presenceTopic(topic), frame);
  }
  subscribe(_topic: string): undefined {
    return undefined;
  }
  /** The last local subscriber left: the topic's position outlives it by the history TTL. */
  unsubscribe(topic: string): void {
    this.history?.touch(topic);
  }
  status(): BrokerStatus {
    return { kind: "memory", ready: true };
  }
  get historyStats(): MemoryHistory | undefined {
    return this.history;
  }
  async close(): Promise<void> {
    this.deliver = undefined;
    this.history?.close();
  }
}
