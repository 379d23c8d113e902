// One state machine per Redis channel, driven by the hub's interest: idle -> subscribing -> subscribed ->
// unsubscribing -> idle. Only one command per channel is ever in flight, and every completion re-checks what
// is wanted now, so any interleaving converges to "Redis subscriptions == local interest":
// - a subscribe then an unsubscribe before Redis answered: the UNSUBSCRIBE waits for the SUBSCRIBE reply
//   (Bun's RedisClient throws on an UNSUBSCRIBE while it holds no subscription, and a second SUBSCRIBE of a
//   channel doubles its deliveries: neither can happen here);
// - a subscribe during a reconnect, or while the channels are being restored: it is just wanted, and the
//   new connection subscribes everything wanted;
// - a failed SUBSCRIBE: retried after `retryMs` while still wanted;
// - a failed UNSUBSCRIBE: the connection is reported broken (the broker reconnects and starts clean).
// Completions of an older connection are recognised by its generation and ignored.

type State = "idle" | "subscribing" | "subscribed" | "unsubscribing";

interface Channel {
  readonly name: string;
  wanted: boolean;
  state: State;
  /** Resolves the promise subscribers wait on: once Redis confirmed, or after the confirm deadline. */
  confirm: (() => void) | undefined;
  confirmed: Promise<void> | undefined;
}

/** The subscriber connection in use; `undefined` while Redis is unreachable. */
export interface ChannelTransport {
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
}

export interface ChannelEvents {
  /** A SUBSCRIBE failed (it will be retried) or an UNSUBSCRIBE failed (`broken`: reconnect). */
  failed(channel: string, op: "subscribe" | "unsubscribe", error: unknown): void;
  /** A subscription was confirmed to clients without Redis confirming it in time. */
  confirmTimedOut(channel: string): void;
}

export class RedisChannels {
  private readonly channels = new Map<string, Channel>();
  private transport: ChannelTransport | undefined;
  private generation = 0;

  constructor(
    private readonly events: ChannelEvents,
    private readonly confirmMs: number,
    private readonly retryMs: number,
  ) {}

  /**
   * The channel is wanted. `undefined` when Redis already delivers it; otherwise a promise resolved once it
   * does, or after `confirmMs` (then the channel stays wanted and is subscribed when Redis answers).
   */
  want(name: string): Promise<void> | undefined {
    let channel = this.channels.get(name);
    if (channel === undefined) {
      channel = { name, wanted: true, state: "idle", confirm: undefined, confirmed: undefined };
      this.channels.set(name, channel);
    }
    channel.wanted = true;
    this.reconcile(channel);
    if (channel.state === "subscribed") return undefined;
    if (channel.confirmed === undefined) {
      let resolve!: () => void;
      channel.confirmed = new Promise<void>((r) => (resolve = r));
      const timer = setTimeout(() => {
        if (channel.confirm !== finish) return;
        this.events.confirmTimedOut(name);
        this.settle(channel);
      }, this.confirmMs);
      const finish = () => {
        clearTimeout(timer);
        resolve();
      };
      channel.confirm = finish;
    }
    return channel.confirmed;
  }

  /** No local subscriber is left. */
  drop(name: string): void {
    const channel = this.channels.get(name);
    if (channel === undefined) return;
    channel.wanted = false;
    this.settle(channel); // nobody waits for a channel nobody wants
    this.reconcile(channel);
  }

  /** A fresh subscriber connection (it holds no channel yet): subscribe everything wanted. */
  connected(transport: ChannelTransport): void {
    this.generation++;
    this.transport = transport;
    for (const channel of [...this.channels.values()]) {
      channel.state = "idle";
      this.reconcile(channel);
    }
  }

  /** The subscriber connection is gone: nothing is subscribed any more; interest is kept. */
  disconnected(): void {
    this.generation++;
    this.transport = undefined;
    for (const channel of [...this.channels.values()]) {
      channel.state = "idle";
      this.reconcile(channel);
    }
  }

  /** Channels wanted (by local interest) and channels Redis has confirmed on the current connection. */
  counts(): { wanted: number; subscribed: number } {
    let wanted = 0;
    let subscribed = 0;
    for (const channel of this.channels.values()) {
      if (channel.wanted) wanted++;
      if (channel.state === "subscribed") subscribed++;
    }
    return { wanted, subscribed };
  }

  /** Every channel that is wanted is subscribed and nothing else is: for tests and /readyz detail. */
  converged(): boolean {
    for (const channel of this.channels.values()) {
      if (channel.wanted !== (channel.state === "subscribed")) return false;
    }
    return true;
  }

  private settle(channel: Channel): void {
    const confirm = channel.confirm;
    channel.confirm = undefined;
    channel.confirmed = undefined;
    confirm?.();
  }

  private reconcile(channel: Channel): void {
    const transport = this.transport;
    if (channel.state === "subscribing" || channel.state === "unsubscribing") return; // its completion re-checks
    if (channel.state === "idle") {
      if (!channel.wanted) this.channels.delete(channel.name);
      else if (transport !== undefined) this.run(channel, transport, "subscribe");
    } else if (!channel.wanted && transport !== undefined) {
      this.run(channel, transport, "unsubscribe");
    }
  }

  private run(channel: Channel, transport: ChannelTransport, op: "subscribe" | "unsubscribe"): void {
    const generation = this.generation;
    channel.state = op === "subscribe" ? "subscribing" : "unsubscribing";
    let reply: Promise<unknown>;
    try {
      reply = op === "subscribe" ? transport.subscribe(channel.name) : transport.unsubscribe(channel.name);
    } catch (error) {
      reply = Promise.reject(error); // Bun's client may throw synchronously; treat it like a failed reply
    }
    reply.then(
      () => {
        if (generation !== this.generation) return;
        channel.state = op === "subscribe" ? "subscribed" : "idle";
        if (op === "subscribe") this.settle(channel);
        this.reconcile(channel);
      },
      (error: unknown) => {
        if (generation !== this.generation) return;
        this.events.failed(channel.name, op, error);
        if (op === "unsubscribe") return; // the broker reconnects: connected() starts every channel afresh
        channel.state = "idle";
        const retry = setTimeout(() => generation === this.generation && this.reconcile(channel), this.retryMs);
        (retry as { unref?: () => void }).unref?.();
      },
    );
  }
}
