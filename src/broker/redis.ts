// Cross-node fan-out over Redis pub/sub, on Bun's built-in RedisClient.
//
// - Local first: a publish is delivered to this node's subscribers (the hub's native publish), then sent to
//   Redis as `<nodeId>|<frame>` on channel `sb:<topic>`, at the end of the tick with the topic's other
//   messages of that tick (`<nodeId>|<frame>\n<frame>...`: one PUBLISH per topic per tick). The frame is
//   serialized once; the Redis payload is those strings behind a prefix. Nodes drop payloads carrying their
//   own id, so the origin never delivers twice, and Redis keeps per-channel order, so one publisher's order
//   holds on every node. History messages go the same way, a topic's of one tick in one script call (the script
//   assigns their offsets and PUBLISHes them together).
// - Interest only: channel subscriptions follow the hub's interest through one state machine per channel
//   (./redis-channels.ts), so traffic a node does not need never reaches it. One channel is held for the
//   node's whole life whatever the interest: the control channel `sb:$ctl` of the API's commands.
// - Failure: Bun's RedisClient neither restores subscriptions after a reconnect nor, with its offline queue,
//   refuses commands while down, and a Redis that hangs (SIGSTOP) looks connected while every command queues
//   without bound (docs/bun-notes.md). So this broker owns the lifecycle: fresh publisher + subscriber clients
//   per connection, no offline queue, a health check with a deadline, a bound on what is sent but not yet
//   answered (past it cross-node copies are dropped and counted), and backoff between attempts.
// - Health: every timeoutMs/4 both connections send a PING (RESP3 allows it in subscriber mode), and both
//   answers must come back within timeoutMs. That catches a hung Redis and a half-open subscriber connection
//   (killed by a NAT while the publisher still works), and keeps an idle subscriber from being cut for
//   idleness. A connection that dies soon after it was made does not reset the reconnect backoff, so a
//   Redis that drops us at once (or refuses a channel: see ./redis-channels.ts) is not hammered.
import { RedisClient } from "bun";
import { systemClock, type Clock } from "../clock.ts";
import { errorFields, type Logger } from "../log.ts";
import { ControlCommand } from "../protocol.ts";
import { HistoryUnavailable, type HistoryOptions, type HistoryQuery, type HistoryRead } from "../history/history.ts";
import {
  APPEND_SCRIPT,
  APPEND_SHA,
  appendArgs,
  eachHistoryFrame,
  parseRead,
  READ_SCRIPT,
  READ_SHA,
  readArgs,
  runIdOf,
  type RedisHistoryOptions,
} from "../history/redis.ts";
import { BrokerUnavailable, PUBLISHED, type Broker, type BrokerStatus, type ControlHandler, type Deliver } from "./broker.ts";
import { evalOrLoad, type RedisSend } from "./lua.ts";
import { RedisChannels } from "./redis-channels.ts";
import { presenceTopic } from "../presence/presence.ts";

const CHANNEL_PREFIX = "sb:";
/** Marks a presence event on a topic's channel (node ids are hex, history payloads start with `#`). */
const EVENT_MARK = "!";
/**
 * The control channel: commands for every node's connections (src/broker/broker.ts), `<origin node>|<JSON>`.
 * `$` is outside the topic rule, so no topic's channel can be this one. Every node subscribes to it for its life.
 */
const CONTROL_CHANNEL = `${CHANNEL_PREFIX}$ctl`;
/**
 * History reads of messages in flight per node. Each is bounded to half the backpressure limit (512 KiB by
 * default), so this bounds replies in flight to ~32 MiB; a read past it is refused as unavailable (the typed
 * client retries a refused subscribe after about a second).
 */
const MAX_READS_IN_FLIGHT = 64;

/**
 * A plain PUBLISH carries at most this many frame characters: a tick's messages of one topic past it go in
 * several (each receiving node splits a batch before delivering, so a huge one would hold its loop).
 */
const MAX_BATCH_CHARS = 64 * 1024;

/** A topic's history publishes of this tick, stored by one script call at its end. */
interface PendingAppends {
  link: Link;
  heads: string[];
  /** Characters reserved on the link (each head and its separator). */
  chars: number;
  retention: HistoryOptions | undefined;
  /** Each append's promise, in the order of `heads`. */
  settle: PromiseWithResolvers<number>[];
}

/** The plain publishes of one topic in this tick, sent as one PUBLISH at its end. */
interface Outgoing {
  /** `<node>|<frame>` then `\n<frame>` per later message (frames are JSON: never a raw newline). */
  payload: string;
  messages: number;
  /** The link the bytes were reserved on: a batch outliving its connection is dropped. */
  link: Link;
}

/** An error Redis itself replied with (the command ran, or was refused), as opposed to a connection failure. */
const isServerReply = (error: unknown): boolean => (error as { code?: unknown } | null)?.code === "ERR_REDIS_SERVER_ERROR";
const SEPARATOR = "|";
/** Sharded: the instance's place in REDIS_URL, as the first node to connect listed it (`$`: no topic's key). */
const PLACEMENT_KEY = `${CHANNEL_PREFIX}$shard`;

export interface RedisBrokerOptions {
  url: string;
  log: Logger;
  /** A health PING or a connection attempt unanswered this long marks Redis stalled. */
  timeoutMs: number;
  /** Cross-node payload (frame characters) sent but not yet acknowledged; beyond it publishes are dropped. */
  maxPendingBytes: number;
  /** How long `subscribed` waits for a connected Redis to confirm before replying anyway. */
  confirmMs?: number;
  /** Backoff between reconnect attempts: full jitter up to min(capMs, baseMs * 2^attempt). */
  baseMs?: number;
  capMs?: number;
  clock?: Clock;
  /** More Lua scripts to load on every connection before it is used (the presence store's: src/presence/redis.ts). */
  scripts?: readonly string[];
  /** History on (HISTORY_SIZE > 0): publishes to history go through the append script (src/history/redis.ts). */
  history?: RedisHistoryOptions;
  /**
   * This instance's place in REDIS_URL (`index` of `count`), checked against other nodes' on every connection.
   * `refused` is shared by a node's brokers: once any instance refused the node's list, none of them writes a
   * place on an empty instance (a misconfigured node must not be the one to place a restarted Redis).
   */
  placement?: { index: number; count: number; refused: { value: boolean } };
  /** This node's id, shared by the brokers of several instances (one id per node in logs and payloads). */
  nodeId?: string;
}

/** One connection to Redis (publisher + subscriber) and what is in flight on it. */
class Link {
  /** Sizes of PUBLISHes awaiting their reply, oldest first (Redis answers a connection in order). */
  private readonly sizes: number[] = [];
  private head = 0;
  pendingBytes = 0;
  /** The connected Redis's run_id (history epochs are bound to it); set before the link is used. */
  runId = "";
  /** The last batch sent on this connection: replies come in order, so once it settles all before it have. */
  last: Promise<unknown> | undefined;
  /** The history scripts being (re)loaded on this connection. */
  scriptsLoading: Promise<unknown> | undefined;
  /** When the health PINGs in flight were sent (-1: none), and how many of the two are still unanswered. */
  probeSentAt = -1;
  probesOut = 0;
  readonly onPong = (): void => {
    if (--this.probesOut === 0) this.probeSentAt = -1;
  };
  /** Shared reply handlers: no closure per publish. */
  readonly onSent = (): void => void this.settled();
  readonly onFailed = (): void => {
    this.settled();
    this.countFailure();
  };

  constructor(
    readonly pub: RedisClient,
    readonly sub: RedisClient,
    private readonly countFailure: () => void,
  ) {}

  sent(size: number): void {
    this.sizes.push(size);
    this.pendingBytes += size;
  }

  /** Bytes counted as pending now, for a command sent later (a batch of this tick): `sentReserved` sends them. */
  reserve(size: number): void {
    this.pendingBytes += size;
  }

  sentReserved(size: number): void {
    this.sizes.push(size);
  }

  private settled(): void {
    this.pendingBytes -= this.sizes[this.head++] ?? 0;
    if (this.head === this.sizes.length) {
      this.sizes.length = 0;
      this.head = 0;
    }
  }
}

export class RedisBroker implements Broker {
  /** Unique per process: marks this node's own payloads so it skips them when Redis echoes them back. */
  readonly nodeId: string;
  /**
   * sent/received: messages to and from Redis (batches: the PUBLISHes and history script calls carrying them).
   * dropped: cross-node copies not sent (Redis unreachable, stalled, or over maxPendingBytes). failed: PUBLISHes Redis refused or never answered (connection lost).
   * stalls: health probes that did not come back in time.
   */
  readonly counters = {
    sent: 0,
    received: 0,
    /** PUBLISHes and history script calls (a topic's messages of one tick share one). */
    batches: 0,
    dropped: 0,
    failed: 0,
    reconnects: 0,
    stalls: 0,
    subscribe_timeouts: 0,
    subscribe_failures: 0,
    reads_refused: 0,
    /** Control commands sent by this node, received from others, and received but not understood (dropped). */
    control_sent: 0,
    control_received: 0,
    control_invalid: 0,
    /** Presence events (join/leave) sent to other nodes, received from any node, not sent (Redis down). */
    events_sent: 0,
    events_received: 0,
    events_dropped: 0,
  };
  /** History reads of messages awaiting their reply (bounded by MAX_READS_IN_FLIGHT). */
  private readsInFlight = 0;
  /** Plain publishes of this tick per topic: one PUBLISH each at its end (`flushOutbox`). */
  private outbox = new Map<string, Outgoing>();
  /** History publishes of this tick per topic: one script call each at its end. */
  private appends = new Map<string, PendingAppends>();
  private flushScheduled = false;
  private deliver: Deliver | undefined;
  private restored: (() => void) | undefined;
  private onControl: ControlHandler | undefined;
  private link: Link | undefined;
  private lastError = "connecting";
  private closed = false;
  /** Ends the current connection (lost, stalled, broken, or close()). */
  private hangUp: ((reason: string) => void) | undefined;
  private wake: (() => void) | undefined;
  private readonly prefix: string;
  private readonly channels: RedisChannels;
  private readonly clock: Clock;
  private stopHealth: (() => void) | undefined;

  constructor(private readonly options: RedisBrokerOptions) {
    this.nodeId = options.nodeId ?? crypto.randomUUID().slice(0, 8);
    this.prefix = `${this.nodeId}${SEPARATOR}`;
    this.clock = options.clock ?? systemClock;
    const topicOf = (channel: string) => channel.slice(CHANNEL_PREFIX.length);
    this.channels = new RedisChannels(
      {
        failed: (channel, op, error, first) => {
          this.counters.subscribe_failures++;
          const message = error instanceof Error ? error.message : String(error);
          if (first) options.log.warn(`redis_${op}_failed`, { topic: topicOf(channel), error: message, note: "reconnecting; the channel is retried with backoff" });
          this.hangUp?.(`${op.toUpperCase()} failed: ${message}`);
        },
        recovered: (channel, failures) => options.log.info("redis_subscribe_recovered", { topic: topicOf(channel), failures }),
        confirmTimedOut: (channel) => {
          this.counters.subscribe_timeouts++;
          options.log.warn("redis_subscribe_slow", { topic: topicOf(channel), waitedMs: options.confirmMs ?? 2000 });
        },
      },
      options.confirmMs ?? 2000,
      options.baseMs ?? 100,
    );
  }

  start(deliver: Deliver, restored?: () => void, control?: ControlHandler): void {
    this.deliver = deliver;
    this.restored = restored;
    this.onControl = control;
    this.channels.want(CONTROL_CHANNEL); // never dropped: subscribed on every connection, restored like the others
    this.stopHealth = this.clock.every(Math.max(10, Math.floor(this.options.timeoutMs / 4)), this.checkHealth);
    void this.run();
  }

  /**
   * Presence events go to this node's watchers at once (before the caller subscribes a joiner to them), then on
   * the topic's own channel as `!<node>|<frame>` to every other node subscribed to the topic (the ones with
   * local subscribers, watchers included); the origin skips its own copy.
   */
  announce(topic: string, frame: string): void {
    this.deliver?.(presenceTopic(topic), frame);
    // The topic's messages published before it in this tick go first (plain or history: a topic has one kind).
    const pending = this.outbox.get(topic);
    if (pending !== undefined) this.sendBatch(topic, pending);
    const appends = this.appends.get(topic);
    if (appends !== undefined) this.store(topic, appends);
    const link = this.link;
    if (link === undefined) {
      this.counters.events_dropped++;
      return;
    }
    this.counters.events_sent++;
    void link.pub.publish(CHANNEL_PREFIX + topic, EVENT_MARK + this.prefix + frame).then(undefined, this.countFailure);
  }

  /**
   * One command on the command connection, for stores beside the broker (presence, the cluster's node records);
   * rejects while Redis is down. One function for the broker's life: stores may key their state by it.
   */
  readonly send: RedisSend = (command, args) => {
    const link = this.link;
    if (link === undefined) return Promise.reject(new Error(`redis unreachable: ${this.lastError}`));
    return link.pub.send(command, args);
  };

  /** The commands of `topic`'s Redis: this one (a sharded broker routes by topic). */
  sendFor(_topic?: string): RedisSend {
    return this.send;
  }

  /**
   * Local subscribers at once; other nodes at the end of the tick: a topic's messages of one tick go in one
   * PUBLISH (`<node>|<frame>\n<frame>...`), so Redis and every receiving node handle one message per topic per
   * tick rather than one per publish. Order holds: a topic's batches leave in tick order on one connection.
   * Dropped (counted) while Redis is unreachable or past maxPendingBytes, and when the connection is lost
   * before the tick ends.
   */
  publish(topic: string, frame: string): Promise<void> {
    this.deliver!(topic, frame);
    const link = this.link;
    const size = frame.length + 1;
    if (link === undefined || link.pendingBytes + size + this.prefix.length > this.options.maxPendingBytes) {
      this.counters.dropped++;
      return PUBLISHED;
    }
    link.reserve(size);
    const out = this.outbox.get(topic);
    if (out === undefined || out.link !== link) {
      if (out !== undefined) this.sendBatch(topic, out); // of a connection lost this tick: counted as dropped
      this.outbox.set(topic, { payload: this.prefix + frame, messages: 1, link });
      this.scheduleFlush();
    } else {
      out.payload += "\n" + frame;
      out.messages++;
      if (out.payload.length > MAX_BATCH_CHARS) this.sendBatch(topic, out);
    }
    return PUBLISHED;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flushOutbox);
  }

  /** End of the tick: one PUBLISH per topic with plain messages, one script call per topic with history ones. */
  private readonly flushOutbox = (): void => {
    this.flushScheduled = false;
    if (this.outbox.size !== 0) {
      const outbox = this.outbox;
      this.outbox = new Map();
      for (const [topic, out] of outbox) this.sendBatch(topic, out);
    }
    if (this.appends.size !== 0) {
      const appends = this.appends;
      this.appends = new Map();
      for (const [topic, out] of appends) this.store(topic, out);
    }
  };

  /** Sends `topic`'s pending batch now (it leaves the outbox): also before a presence event of the topic. */
  private sendBatch(topic: string, out: Outgoing): void {
    if (this.outbox.get(topic) === out) this.outbox.delete(topic);
    const link = out.link;
    if (link !== this.link) {
      this.counters.dropped += out.messages; // the connection ended this tick: its reservation went with it
      return;
    }
    this.counters.sent += out.messages;
    this.counters.batches++;
    link.sentReserved(out.payload.length - this.prefix.length + 1);
    link.last = link.pub.publish(CHANNEL_PREFIX + topic, out.payload).then(link.onSent, link.onFailed);
  }

  /**
   * History topics: at the end of the tick one script stores the topic's messages of the tick under their
   * offsets and PUBLISHes them (one payload); every node, this one included, delivers them from the channel,
   * so all see the stream's order. Refused (HistoryUnavailable) while Redis is unreachable or over
   * maxPendingBytes, and when the script fails or the connection drops before its reply (the stall check drops
   * a hung connection within ~timeoutMs, which rejects what was in flight).
   */
  append(topic: string, head: string, retention?: HistoryOptions): Promise<number> {
    this.requireHistory();
    const link = this.link;
    const size = head.length + 1;
    if (link === undefined) return Promise.reject(new HistoryUnavailable(`redis unreachable: ${this.lastError}`));
    if (link.pendingBytes + size + topic.length + 64 > this.options.maxPendingBytes) {
      this.counters.dropped++;
      return Promise.reject(new HistoryUnavailable("redis is not keeping up (REDIS_MAX_PENDING_BYTES reached)"));
    }
    link.reserve(size);
    const settle = Promise.withResolvers<number>();
    let out = this.appends.get(topic);
    if (out === undefined || out.link !== link) {
      if (out !== undefined) this.store(topic, out); // of a connection lost this tick: refused
      this.appends.set(topic, (out = { link, heads: [head], chars: size, retention, settle: [settle] }));
      this.scheduleFlush();
    } else {
      out.heads.push(head);
      out.settle.push(settle);
      out.chars += size;
      if (out.chars > MAX_BATCH_CHARS) this.store(topic, out);
    }
    return settle.promise;
  }

  /** Sends `topic`'s appends of this tick as one script call (they leave the outbox). */
  private store(topic: string, out: PendingAppends): void {
    if (this.appends.get(topic) === out) this.appends.delete(topic);
    const link = out.link;
    if (link !== this.link) {
      this.counters.dropped += out.heads.length; // not sent: refused, as a publish while Redis is down is
      for (const { reject } of out.settle) reject(new HistoryUnavailable(`redis connection lost: ${this.lastError}`));
      return;
    }
    this.counters.sent += out.heads.length;
    this.counters.batches++;
    link.sentReserved(out.chars);
    // EVALSHA only: no EVAL fallback on NOSCRIPT. A fallback would send these publishes again after later ones
    // of the same connection, which may already have succeeded (another node reloaded the script): one
    // publisher's order would break. The scripts are loaded before a connection is used; a NOSCRIPT (SCRIPT
    // FLUSH, a failover) refuses them as unavailable (they were not run) and reloads them.
    const args = appendArgs(topic, CHANNEL_PREFIX + topic, out.heads, this.options.history!, link.runId, out.retention);
    link.last = link.pub.send("EVALSHA", [APPEND_SHA, ...args]).then(
      (reply) => {
        link.onSent();
        const [first, stored] = reply as [number, number];
        for (let i = 0; i < out.settle.length; i++) {
          if (i < stored) out.settle[i]!.resolve(first + i);
          else out.settle[i]!.reject(new HistoryUnavailable("redis refused the message (its stream could not take it)"));
        }
      },
      (error: unknown) => {
        link.onFailed();
        const message = error instanceof Error ? error.message : String(error);
        if (message.startsWith("NOSCRIPT")) this.loadScripts(link);
        // A reply from Redis (an error) means the script did not store them; a dropped connection means the
        // command may have run or may still run (a hung Redis executes what it had read once it wakes).
        const refusal = new HistoryUnavailable(`redis: ${message}`, !isServerReply(error));
        for (const { reject } of out.settle) reject(refusal);
      },
    );
  }

  /**
   * This instance's place in REDIS_URL (`<index>/<count>`) must be the same on every node, or nodes would put a
   * topic on different instances (its messages and offsets forked, silently): a node listing 2 instances beside
   * one listing 3 (a rolling change of the list) or them in another order. The first node to connect writes its
   * place (`SETNX`, no TTL); a node whose list disagrees is refused with the reason, and retries. A Redis
   * restarted empty forgets it, and the next agreeing node to connect writes it again. Undefined when it matches.
   */
  private async checkPlacement(pub: RedisClient, { index, count, refused }: NonNullable<RedisBrokerOptions["placement"]>): Promise<string | undefined> {
    const mine = `${index}/${count}`;
    try {
      const stored = refused.value ? await pub.send("GET", [PLACEMENT_KEY]) : (await Promise.all([pub.send("SETNX", [PLACEMENT_KEY, mine]), pub.send("GET", [PLACEMENT_KEY])]))[1];
      if (stored === mine) return undefined;
      refused.value = true;
      if (stored === null) return `REDIS_URL disagrees with another instance's placement, so this node does not place this empty instance: it waits for a node that agrees`;
      const [theirIndex, theirCount] = String(stored).split("/");
      return (
        `REDIS_URL lists this instance as number ${index + 1} of ${count}, but a node listing it as number ${Number(theirIndex) + 1} of ${theirCount} was here first: ` +
        `every node must list the same instances in the same order (to change the list: stop every node, DEL ${PLACEMENT_KEY} on each instance, start them with the new list)`
      );
    } catch (error) {
      return `placement check failed: ${error instanceof Error ? error.message : String(error)}`;
    }
  }

  /** Loads both scripts on `link` (once at a time): before a connection is used, and after a NOSCRIPT. */
  private loadScripts(link: Link): Promise<unknown> {
    const scripts = [...(this.options.history === undefined ? [] : [APPEND_SCRIPT, READ_SCRIPT]), ...(this.options.scripts ?? [])];
    return (link.scriptsLoading ??= Promise.all(scripts.map((script) => link.pub.send("SCRIPT", ["LOAD", script]))).finally(
      () => (link.scriptsLoading = undefined),
    ));
  }

  read(topic: string, query: HistoryQuery): Promise<HistoryRead> {
    const history = this.requireHistory();
    const link = this.link;
    if (link === undefined) return Promise.reject(new HistoryUnavailable(`redis unreachable: ${this.lastError}`));
    // Reads of messages (not of a position alone) are bounded in number as well as in bytes each: their replies
    // share the command connection with publishes and health PINGs, and a burst of them (a reconnect storm, or
    // a client asking for history in a loop) must not hold those up past the stall deadline.
    const heavy = query.limit > 0;
    if (heavy && this.readsInFlight >= MAX_READS_IN_FLIGHT) {
      this.counters.reads_refused++;
      return Promise.reject(new HistoryUnavailable(`${MAX_READS_IN_FLIGHT} history reads in flight on this node: retry`));
    }
    if (heavy) this.readsInFlight++;
    // A read may run late after a NOSCRIPT: EVAL is fine here (an append never falls back, see above).
    return evalOrLoad((command, args) => link.pub.send(command, args), READ_SCRIPT, READ_SHA, readArgs(topic, query, history, link.runId)).then(
      (reply) => {
        if (heavy) this.readsInFlight--;
        return parseRead(reply, query.since);
      },
      (error: unknown) => {
        if (heavy) this.readsInFlight--;
        throw new HistoryUnavailable(`redis: ${error instanceof Error ? error.message : String(error)}`, !isServerReply(error));
      },
    );
  }

  get storesHistory(): boolean {
    return this.options.history !== undefined;
  }

  private requireHistory(): RedisHistoryOptions {
    if (this.options.history === undefined) throw new Error("redis broker built without history");
    return this.options.history;
  }

  subscribe(topic: string): Promise<void> | undefined {
    return this.channels.want(CHANNEL_PREFIX + topic);
  }

  unsubscribe(topic: string): void {
    this.channels.drop(CHANNEL_PREFIX + topic);
  }

  /**
   * Applied here first, then PUBLISHed on the control channel once (the other nodes apply it when it arrives;
   * this node skips its own copy). Refused, and applied nowhere, while Redis is unreachable or past
   * maxPendingBytes; resolves with this node's count once Redis took it (PUBLISH answered).
   */
  control(command: ControlCommand): Promise<number> {
    // What this node published before the command goes first (a "why you are kicked" message before the kick),
    // as when every publish was its own PUBLISH on this connection. Across instances (sharded) no order is kept.
    this.flushOutbox();
    const link = this.link;
    const payload = this.prefix + JSON.stringify(command);
    if (link === undefined) return Promise.reject(new BrokerUnavailable(`redis unreachable (${this.lastError}): applied on no node`));
    if (link.pendingBytes + payload.length > this.options.maxPendingBytes) {
      return Promise.reject(new BrokerUnavailable("redis is not keeping up (REDIS_MAX_PENDING_BYTES reached): applied on no node"));
    }
    const applied = this.onControl?.(command) ?? 0;
    this.counters.control_sent++;
    link.sent(payload.length);
    return link.pub.publish(CONTROL_CHANNEL, payload).then(
      () => {
        link.onSent();
        return applied;
      },
      (error: unknown) => {
        link.onFailed();
        const message = error instanceof Error ? error.message : String(error);
        throw new BrokerUnavailable(`redis: ${message}: applied on this node; other nodes may or may not have it (a retry is safe)`);
      },
    );
  }

  /** Ready: connected, and hearing the control channel (a command sent now reaches this node). */
  status(): BrokerStatus {
    if (this.link === undefined) return { kind: "redis", ready: false, detail: this.lastError };
    if (!this.channels.isSubscribed(CONTROL_CHANNEL)) return { kind: "redis", ready: false, detail: "subscribing to the control channel" };
    return { kind: "redis", ready: true };
  }

  gauges(): Record<string, number> {
    const { wanted, subscribed } = this.channels.counts();
    return { pending_bytes: this.link?.pendingBytes ?? 0, channels_wanted: wanted, channels_subscribed: subscribed };
  }

  /** The connected Redis's run_id ("" while none is connected): a sharded broker checks no server is listed twice. */
  get runId(): string {
    return this.link?.runId ?? "";
  }

  /** True when Redis subscriptions equal local interest right now (tests wait for it). */
  converged(): boolean {
    return this.link !== undefined && this.channels.converged();
  }

  async close(): Promise<void> {
    // What was published before close() still leaves, as it would have at the end of the tick, and what is on its
    // way gets its answer (bounded: a hung Redis must not hold the shutdown).
    this.flushOutbox();
    const last = this.link?.last;
    if (last !== undefined) await Promise.race([last, Bun.sleep(this.options.timeoutMs)]);
    this.closed = true;
    this.stopHealth?.();
    this.hangUp?.("broker closed");
    this.wake?.();
  }

  /**
   * Redis -> local subscribers. The payload is `<origin node>|<frame>`, and our own come back and are skipped;
   * or, for history topics, `#<offset>#<epoch>|<frame>` from the append script, delivered by every node.
   */
  private readonly onPayload = (payload: string, channel: string): void => {
    if (payload.charCodeAt(0) === 33 /* ! */) {
      if (this.deliver === undefined || payload.startsWith(this.prefix, 1)) return; // ours: delivered when sent
      const cut = payload.indexOf(SEPARATOR);
      if (cut < 0) return;
      this.counters.events_received++;
      this.deliver(presenceTopic(channel.slice(CHANNEL_PREFIX.length)), payload.slice(cut + 1));
      return;
    }
    if (payload.charCodeAt(0) === 35 /* # */) {
      if (this.deliver === undefined) return;
      const topic = channel.slice(CHANNEL_PREFIX.length);
      eachHistoryFrame(payload, (frame, offset, epoch) => this.deliverOne(topic, frame, offset, epoch));
      return;
    }
    if (payload.startsWith(this.prefix)) return;
    const cut = payload.indexOf(SEPARATOR);
    if (cut < 0 || this.deliver === undefined) return;
    const topic = channel.slice(CHANNEL_PREFIX.length);
    // One message, or a batch: one tick's messages of the topic from one node, in order.
    let start = cut + 1;
    for (let line = payload.indexOf("\n", start); line >= 0; start = line + 1, line = payload.indexOf("\n", start)) {
      this.deliverOne(topic, payload.slice(start, line));
    }
    this.deliverOne(topic, payload.slice(start));
  };

  /** One message of a payload: a handler that throws loses that message, not the rest of its batch. */
  private deliverOne(topic: string, frame: string, offset?: number, epoch?: string): void {
    this.counters.received++;
    try {
      this.deliver!(topic, frame, offset, epoch);
    } catch (error) {
      this.options.log.error("handler_failed", { where: "redis_deliver", topic, ...errorFields(error) });
    }
  }

  /** Another node's control command: checked (it comes over the network), then applied to this node's connections. */
  private readonly onControlPayload = (payload: string): void => {
    if (payload.startsWith(this.prefix)) return; // ours: applied when it was sent
    let command: ControlCommand | undefined;
    try {
      const parsed = ControlCommand.safeParse(JSON.parse(payload.slice(payload.indexOf(SEPARATOR) + 1)));
      if (parsed.success) command = parsed.data;
    } catch {
      // not JSON: counted below
    }
    if (command === undefined) {
      this.counters.control_invalid++;
      this.options.log.warn("redis_control_invalid", { payload: payload.slice(0, 200) });
      return;
    }
    this.counters.control_received++;
    try {
      this.onControl?.(command);
    } catch (error) {
      this.options.log.error("handler_failed", { where: "control", ...errorFields(error) });
    }
  };

  private readonly countFailure = (): void => void this.counters.failed++;

  /** PINGs not answered within timeoutMs mean Redis or a connection hangs: drop it, reconnect. */
  private readonly checkHealth = (): void => {
    const link = this.link;
    if (link === undefined) return;
    const now = this.clock.now();
    if (link.probeSentAt >= 0) {
      if (now - link.probeSentAt < this.options.timeoutMs) return;
      this.counters.stalls++;
      this.hangUp?.(`redis did not answer PING within ${this.options.timeoutMs} ms`);
      return;
    }
    link.probeSentAt = now;
    link.probesOut = 2;
    // A failed PING closes its client, which onclose reports.
    for (const client of [link.pub, link.sub]) client.send("PING", []).then(link.onPong, () => {});
  };

  /** Connect, restore interest, wait until the connection ends, back off, repeat until close(). */
  private async run(): Promise<void> {
    const { url, log, timeoutMs } = this.options;
    const baseMs = this.options.baseMs ?? 100;
    const capMs = this.options.capMs ?? 5000;
    let attempt = 0;
    while (!this.closed) {
      const clientOptions = { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: timeoutMs };
      const pub = new RedisClient(url, clientOptions);
      const sub = new RedisClient(url, clientOptions);
      const ended = new Promise<string>((resolve) => {
        pub.onclose = (error) => resolve(error?.message ?? "connection closed");
        sub.onclose = (error) => resolve(error?.message ?? "connection closed");
        this.hangUp = resolve;
      });
      // A Redis that accepts TCP but never answers (stopped) would hold connect() forever: bound it.
      const deadline = Bun.sleep(timeoutMs).then(() => `no answer from Redis within ${timeoutMs} ms`);
      try {
        const connected = Promise.all([pub.connect(), sub.connect()]).then(
          () => undefined,
          (error: Error) => error.message,
        );
        const failure = await Promise.race([connected, ended, deadline]);
        if (failure !== undefined) throw new Error(failure);
        if (this.closed) break;
        const link = new Link(pub, sub, this.countFailure);
        if (this.options.history !== undefined || (this.options.scripts?.length ?? 0) > 0) {
          // Before any publish: a history publish (or a presence change) is an EVALSHA, which a Redis without the
          // script refuses; and epochs are bound to this Redis incarnation (src/history/redis.ts), so learn its
          // run_id first.
          const loaded = Promise.all([this.loadScripts(link), pub.send("INFO", ["server"])]).then(
            ([, info]) => void (link.runId = runIdOf(String(info))),
            (error: Error) => `SCRIPT LOAD / INFO failed: ${error.message}`,
          );
          const scriptFailure = await Promise.race([loaded, ended, Bun.sleep(timeoutMs).then(() => `SCRIPT LOAD / INFO unanswered within ${timeoutMs} ms`)]);
          if (scriptFailure !== undefined) throw new Error(scriptFailure);
          if (this.closed) break;
        }
        const placement = this.options.placement;
        if (placement !== undefined) {
          const mismatch = await Promise.race([this.checkPlacement(pub, placement), ended, Bun.sleep(timeoutMs).then(() => `placement check unanswered within ${timeoutMs} ms`)]);
          if (mismatch !== undefined) throw new Error(mismatch);
          if (this.closed) break;
        }
        this.link = link;
        this.channels.use({
          subscribe: (channel) => sub.subscribe(channel, channel === CONTROL_CHANNEL ? this.onControlPayload : this.onPayload),
          unsubscribe: (channel) => sub.unsubscribe(channel),
        });
        if (attempt > 0 || this.counters.reconnects > 0) {
          log.info("redis_restored", { node: this.nodeId, channels: this.channels.counts().wanted });
          this.restored?.();
        } else {
          log.info("redis_connected", { node: this.nodeId });
        }
        const connectedAt = performance.now();
        this.lastError = await ended;
        // Only a connection that lasted resets the backoff: one dropped at once is retried like a failed one.
        if (performance.now() - connectedAt >= timeoutMs) attempt = 0;
        if (this.closed) break;
        this.counters.reconnects++;
        const stalled = this.lastError.startsWith("redis did not answer");
        log.warn(stalled ? "redis_stalled" : "redis_lost", {
          node: this.nodeId,
          error: this.lastError,
          note: "local delivery continues; cross-node messages are dropped until Redis is back",
        });
      } catch (error) {
        this.lastError = error instanceof Error ? error.message : String(error);
        if (attempt === 0) log.warn("redis_unreachable", { node: this.nodeId, error: this.lastError });
      } finally {
        this.link = undefined;
        this.hangUp = undefined;
        this.channels.use(undefined);
        for (const client of [pub, sub]) {
          client.onclose = null;
          try {
            client.close();
          } catch {
            // already closed
          }
        }
      }
      if (this.closed) break;
      attempt++;
      const delay = Math.floor(Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20)));
      await Promise.race([Bun.sleep(delay), new Promise<void>((resolve) => (this.wake = resolve))]);
    }
  }
}
