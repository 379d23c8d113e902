// Where a published frame goes. The frame is serialized once by the caller; a broker only moves the string.
// `memory` (the default) is Bun's native topic fan-out within this process; a networked broker (Redis, see
// the scale-out issue) implements the same interface and also hands frames to other nodes.
import type { Server } from "bun";

export interface Broker {
  /** Delivers `frame` to every subscriber of `topic` (local ones through Bun's native publish). */
  publish(topic: string, frame: string): void;
  /** Called once the server is listening: the broker publishes through it. */
  attach(server: Server<unknown>): void;
  close(): Promise<void>;
}

/** Single process: one native `server.publish` per frame; uWS fans it out without a JS loop. */
export class MemoryBroker implements Broker {
  private server: Server<unknown> | undefined;
  constructor(private readonly compressFrom: number = Infinity) {}
  attach(server: Server<unknown>): void {
    this.server = server;
  }
  publish(topic: string, frame: string): void {
    if (this.server === undefined) throw new Error("broker used before the server listens");
    this.server.publish(topic, frame, frame.length >= this.compressFrom);
  }
  async close(): Promise<void> {
    this.server = undefined;
  }
}
