// One process alone: a publish is the hub's native fan-out and nothing else; there are no other nodes to
// subscribe at, so every subscription is effective at once.
import { PUBLISHED, type Broker, type BrokerStatus, type Deliver } from "./broker.ts";

export class MemoryBroker implements Broker {
  private deliver: Deliver | undefined;

  start(deliver: Deliver): void {
    this.deliver = deliver;
  }
  publish(topic: string, frame: string): Promise<void> {
    if (this.deliver === undefined) throw new Error("broker used before start()");
    this.deliver(topic, frame);
    return PUBLISHED;
  }
  subscribe(_topic: string): undefined {
    return undefined;
  }
  unsubscribe(_topic: string): void {}
  status(): BrokerStatus {
    return { kind: "memory", ready: true };
  }
  async close(): Promise<void> {
    this.deliver = undefined;
  }
}
