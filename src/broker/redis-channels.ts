// One state machine per Redis channel, driven by the hub's interest: idle -> subscribing -> subscribed ->
// unsubscribing -> idle. Only one command per channel is ever in flight, and every completion re-checks what
// is wanted now, so any interleaving converges to "Redis subscriptions == local interest":
// - a subscribe then an unsubscribe before Redis answered: the UNSUBSCRIBE waits for the SUBSCRIBE reply
//   (Bun's RedisClient throws on an UNSUBSCRIBE while it holds no subscription, and a second SUBSCRIBE of a
//   channel doubles its deliveries: neither can happen here);
// - a subscribe during a reconnect, or while the channels are being restored: it is just wanted, and the
//   new connection subscribes everything wanted;
// - a failed SUBSCRIBE or UNSUBSCRIBE: the connection is reported broken and the broker starts a fresh one
//   (Bun's client keeps the listener of a refused SUBSCRIBE, so the same connection would deliver that
//   channel twice once it works, and it closes a subscriber connection on an error reply anyway). The
//   channel is retried with backoff (reported once, and again when it works); a SUBSCRIBE in flight when the
//   connection dies counts as failed too, so a channel Redis refuses cannot make the connection flap;
// A completion or retry acts only on the channel object it was started for, on the connection it was started
// on: a channel dropped and wanted again meanwhile is a new object, and an older connection's replies are
// recognised by its generation. Otherwise a stale retry could delete the newer object from the map and let
// the channel be subscribed twice.

type State = "idle" | "subscribing" | "subscribed" | "unsubscribing";

interface Channel {
  readonly name: string;
  wanted: boolean;
  state: State;
  /** Resolves the promise subscribers wait on: once Redis confirmed, or after the confirm deadline. */
  confirm: (() => void) | undefined;
  confirmed: Promise<void> | undefined;
  /** SUBSCRIBE failures in a row (drives the retry backoff; the first and the recovery are reported). */
  failures: number;
  /** No SUBSCRIBE before this time (Date.now() ms) after a failure; 0 for none. */
  notBefore: number;
  retry: ReturnType<typeof setTimeout> | undefined;
}

/** The subscriber connection in use; `undefined` while Redis is unreachable. */
export interface ChannelTransport {
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
}

export interface ChannelEvents {
  /**
   * A SUBSCRIBE or UNSUBSCRIBE failed: the connection must be replaced. `first` is false for repeated
   * SUBSCRIBE failures of the same channel (report those once).
   */
  failed(channel: string, op: "subscribe" | "unsubscribe", error: unknown, first: boolean): void;
  /** A channel that had failed is subscribed now, after `failures` attempts. */
  recovered(channel: string, failures: number): void;
  /** A subscription was confirmed to clients without Redis confirming it in time. */
  confirmTimedOut(channel: string): void;
}

/** Longest wait between SUBSCRIBE retries of one channel. */
const RETRY_CAP_MS = 30_000;

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
   * The channel is wanted. With a connection: `undefined` when Redis already delivers it, otherwise a promise
   * resolved once it does, or after `confirmMs` (the channel stays wanted and is subscribed when Redis
   * answers). Without one: `undefined` (nothing to wait for; the next connection subscribes it).
   */
  want(name: string): Promise<void> | undefined {
    let channel = this.channels.get(name);
    if (channel === undefined) {
      channel = { name, wanted: true, state: "idle", confirm: undefined, confirmed: undefined, failures: 0, notBefore: 0, retry: undefined };
      this.channels.set(name, channel);
    }
    channel.wanted = true;
    this.reconcile(channel);
    if (channel.state === "subscribed" || this.transport === undefined) return undefined;
    return (channel.confirmed ??= this.waitFor(channel));
  }

  /** No local subscriber is left. */
  drop(name: string): void {
    const channel = this.channels.get(name);
    if (channel === undefined) return;
    channel.wanted = false;
    this.settle(channel); // nobody waits for a channel nobody wants
    this.reconcile(channel);
  }

  /**
   * The subscriber connection changed: a fresh one (holding no channel yet: subscribe everything wanted), or
   * none (Redis unreachable: nothing is subscribed any more; interest is kept).
   */
  use(transport: ChannelTransport | undefined): void {
    this.generation++;
    this.transport = transport;
    for (const channel of [...this.channels.values()]) {
      if (channel.state === "subscribing") {
        // The connection died with this SUBSCRIBE in flight (Bun closes it on an error reply): count it.
        this.backOff(channel);
        this.events.failed(channel.name, "subscribe", new Error("connection closed during SUBSCRIBE"), channel.failures === 1);
      }
      channel.state = "idle";
      if (transport === undefined) this.settle(channel); // waiting cannot help: confirm now, subscribe later
      this.reconcile(channel);
    }
  }

  /** Whether Redis has confirmed `name` on the current connection. */
  isSubscribed(name: string): boolean {
    return this.channels.get(name)?.state === "subscribed";
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

  private waitFor(channel: Channel): Promise<void> {
    let resolve!: () => void;
    const confirmed = new Promise<void>((r) => (resolve = r));
    const timer = setTimeout(() => {
      if (channel.confirm !== finish) return;
      this.events.confirmTimedOut(channel.name);
      this.settle(channel);
    }, this.confirmMs);
    const finish = () => {
      clearTimeout(timer);
      resolve();
    };
    channel.confirm = finish;
    return confirmed;
  }

  private settle(channel: Channel): void {
    const confirm = channel.confirm;
    channel.confirm = undefined;
    channel.confirmed = undefined;
    confirm?.();
  }

  /** True while `channel` is the map's object for its name and `generation` the current connection's. */
  private current(channel: Channel, generation: number): boolean {
    return generation === this.generation && this.channels.get(channel.name) === channel;
  }

  private reconcile(channel: Channel): void {
    const transport = this.transport;
    if (channel.state === "subscribing" || channel.state === "unsubscribing") return; // its completion re-checks
    if (channel.state === "idle") {
      if (!channel.wanted) {
        clearTimeout(channel.retry);
        if (this.channels.get(channel.name) === channel) this.channels.delete(channel.name);
      } else if (transport !== undefined) {
        const wait = channel.notBefore - Date.now();
        if (wait <= 0) this.run(channel, transport, "subscribe");
        else this.retryLater(channel, wait);
      }
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
        if (!this.current(channel, generation)) return;
        channel.state = op === "subscribe" ? "subscribed" : "idle";
        if (op === "subscribe") {
          if (channel.failures > 0) this.events.recovered(channel.name, channel.failures);
          channel.failures = 0;
          channel.notBefore = 0;
          this.settle(channel);
        }
        this.reconcile(channel);
      },
      (error: unknown) => {
        if (!this.current(channel, generation)) return;
        if (op === "subscribe") this.backOff(channel);
        // The broker replaces the connection: use() then starts every channel afresh (this one after its backoff).
        this.events.failed(channel.name, op, error, op === "unsubscribe" || channel.failures === 1);
      },
    );
  }

  /** Counts a SUBSCRIBE failure and backs the channel off: no new SUBSCRIBE of it before `notBefore`. */
  private backOff(channel: Channel): void {
    channel.failures++;
    channel.notBefore = Date.now() + Math.min(RETRY_CAP_MS, this.retryMs * 2 ** Math.min(channel.failures - 1, 16));
  }

  private retryLater(channel: Channel, wait: number): void {
    if (channel.retry !== undefined) return;
    channel.retry = setTimeout(() => {
      channel.retry = undefined;
      if (this.channels.get(channel.name) === channel) this.reconcile(channel);
    }, wait);
    (channel.retry as { unref?: () => void }).unref?.();
  }
}
