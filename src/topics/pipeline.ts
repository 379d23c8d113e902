// The topic pipeline: publish, subscribe, unsubscribe, history and leave-on-close, the one path that socket
// frames and the HTTP API both go through. Checks (topic rule, permissions, per-connection topic cap) happen
// here, next to the bookkeeping they guard, so a limit is checked where it is counted.
//
// Ordering guarantee: a socket is natively subscribed to a topic in the same synchronous step that sends its
// `subscribed`, and only once the broker says messages from other nodes will arrive. So no `message` of T
// ever precedes T's `subscribed` on a connection, and `subscribed` means cross-node messages of T arrive.
//
// With history on, that step also carries the recovery: `subscribed` with the topic's position, the missed
// messages, the live ones that arrived while history was read (src/history/recovery.ts), then the native
// subscription. On Redis, this node also checks that each topic's stream continues (same epoch, offset + 1);
// when it breaks (its Redis link dropped messages, or the topic's history was reset), the topic's local
// subscribers are told to resubscribe with `since` (`unsubscribed`, reason `recover`) and recover from there.
import type { Identity } from "../auth/tokens.ts";
import type { Broker, ControlHandler } from "../broker/broker.ts";
import type { Conn, PendingSubscription } from "../connections.ts";
import { HistoryUnavailable, type HistoryRead } from "../history/history.ts";
import { plan, Recovery } from "../history/recovery.ts";
import { presenceTopic, type Presence, type PresenceEntry, type PresenceList, type PresenceStats } from "../presence/presence.ts";
import type { Hub } from "../hub.ts";
import type { Metrics } from "../metrics.ts";
import type { TopicRule, TopicRules } from "./rules.ts";
import {
  encode,
  ErrorText,
  HISTORY_LIMIT_MAX,
  isValidTopic,
  MAX_INFO_BYTES,
  messageHead,
  type ErrorCode,
  type FrameId,
  type Json,
  type Position,
  type UnsubscribeReason,
} from "../protocol.ts";

/** Why the pipeline refused an operation: an error frame on a socket, a 4xx (or 503) over HTTP. */
export interface Refusal {
  code: ErrorCode;
  message: string;
}

/** What a publish came to: the message's offset (0 with history off), or why it was refused. */
export type PublishOutcome = number | Refusal;

/** How the pipeline answers a connection (counted sends, owned by the gateway). */
export interface Replies {
  send(conn: Conn, frame: string): void;
  reject(conn: Conn, code: ErrorCode, message: string, id?: FrameId): void;
}

export interface PipelineOptions {
  maxTopics: number;
  /** Who is in each topic (one entry per active subscription), and how a connection is named in it. */
  presence: Presence;
  connectionIdOf: (conn: Conn) => string;
  /** Most entries a presence request returns (PRESENCE_MAX_CLIENTS). */
  maxPresenceClients: number;
  /** Each topic's options (its definition's, or the environment's defaults), and whether it is served at all. */
  rules: TopicRules;
  /**
   * Bytes a recovery may send in its one step (replay + buffered live messages): half the socket's
   * backpressure limit, since uWS drops a socket whose buffer passes the limit.
   */
  recoveryBudgetBytes: number;
  /** The open connections, walked only when a topic's stream breaks (rare: a Redis link lost messages). */
  connections: () => Iterable<Conn>;
  /** Whether this node is draining (shutdown): the HTTP API's publishes are refused then. */
  draining: () => boolean;
  /** Where the broker hands commands of its control channel (the gateway applies them). */
  control?: ControlHandler;
}

const INVALID_TOPIC: Refusal = { code: "invalid_topic", message: ErrorText.topicRule };

const UNAVAILABLE: Refusal = { code: "unavailable", message: ErrorText.unavailable };
const UNCONFIRMED: Refusal = { code: "unconfirmed", message: ErrorText.unconfirmed };
const UNREADABLE: Refusal = { code: "unavailable", message: ErrorText.unreadable };
const PRESENCE_UNAVAILABLE: Refusal = { code: "unavailable", message: "presence store unavailable: retry later" };
const SHUTTING_DOWN: Refusal = { code: "unavailable", message: "server shutting down: nothing was published; publish through another node" };
const UNKNOWN_TOPIC: Refusal = { code: "unknown_topic", message: ErrorText.unknownTopic };
/** Why a topic has no history (or presence): the server's setting, or the topic's definition. */
const isOff = (feature: string, rule: TopicRule, setting: string): Refusal => ({
  code: "not_available",
  message: rule.pattern === undefined ? `${feature} is off on this server (${setting})` : `${feature} is off for topics matching ${rule.pattern}`,
});
/** Longest a recovery waits for this node's stream to reach the client's `since` (normally a few ms). */
const STREAM_WAIT_MS = 2000;
/** Repeated subscribes of one topic waiting for the broker's confirmation, per connection. */
const MAX_WAITING_REPLIES = 16;

/** Most schema issues one `invalid_data` message lists (a hostile array can fail in every item). */
const MAX_DATA_ISSUES = 5;

/** `invalid_data` with zod's reasons: `data.text: Invalid input: expected string, received number`. */
function invalidData(rule: TopicRule, issues: readonly { path: readonly PropertyKey[]; message: string }[]): Refusal {
  const shown = issues.slice(0, MAX_DATA_ISSUES).map((i) => `${["data", ...i.path.map(String)].join(".")}: ${i.message}`);
  if (issues.length > MAX_DATA_ISSUES) shown.push(`and ${issues.length - MAX_DATA_ISSUES} more`);
  return { code: "invalid_data", message: `does not match the schema of ${rule.pattern}: ${shown.join("; ")}` };
}

/**
 * `data` through the topic's schema, serialized: its output as JSON, or why not. A schema that throws (a refine
 * that does, an async one) or whose output is not JSON (undefined, a BigInt) is the definition's bug: the
 * publish is refused like bad data, never a failed connection or a frame subscribers cannot parse.
 */
function checkedJson(rule: TopicRule, data: Json): string | Refusal {
  let output: unknown;
  try {
    const checked = rule.schema!.safeParse(data);
    if (!checked.success) return invalidData(rule, checked.error.issues);
    output = checked.data;
  } catch (error) {
    return { code: "invalid_data", message: `the schema of ${rule.pattern} failed: ${(error as Error).message}` };
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(output);
  } catch (error) {
    return { code: "invalid_data", message: `the output of the schema of ${rule.pattern} is not JSON: ${(error as Error).message}` };
  }
  return json ?? { code: "invalid_data", message: `the output of the schema of ${rule.pattern} is not JSON: ${typeof output}` };
}

export class TopicPipeline {
  /**
   * Redis only: per topic with local subscribers, the last position this node delivered natively. Every active
   * subscriber of the topic here has exactly the messages up to it; a later message at or below it is a copy
   * this node already delivered and is not delivered again.
   */
  private readonly cursors = new Map<string, Position>();
  /** Topics with subscribers here that were activated without a position (their read failed: Redis down). */
  private readonly unpositioned = new Set<string>();
  /** Recoveries waiting for this node's stream to reach their `since` (they resume from another node's). */
  private readonly behind = new Map<string, Map<PendingSubscription, Conn>>();

  constructor(
    private readonly hub: Hub,
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    private readonly replies: Replies,
    private readonly options: PipelineOptions,
  ) {
    broker.start(this.deliver, this.restored, options.control);
  }

  /**
   * The broker's link is back after a loss: messages other nodes published meanwhile never reached this node.
   * A topic that gets another message notices the jump (`follow`); a quiet one would not, so each followed
   * topic's position is read once its channel is confirmed again, and a topic that moved on (or changed epoch)
   * sends its subscribers here to recover. One small read per followed topic, per reconnect. `owns`: the topics
   * of the link that came back (a sharded broker's instance), when not all are.
   */
  private readonly restored = (owns?: (topic: string) => boolean): void => {
    for (const [topic, cursor] of this.cursors) {
      if (owns !== undefined && !owns(topic)) continue;
      const check = () => {
        let read: HistoryRead | Promise<HistoryRead>;
        try {
          read = this.broker.read(topic, { limit: 0, create: false });
        } catch {
          return;
        }
        void Promise.resolve(read).then(
          (position) => {
            // Still the same cursor (the topic was not dropped and followed again meanwhile) and behind.
            if (this.cursors.get(topic) !== cursor) return;
            if (position.epoch !== cursor.epoch || position.offset > cursor.offset) this.breakStream(topic, position.epoch, position.offset);
          },
          () => {}, // Redis lost again: the next reconnect checks again
        );
      };
      const confirmed = this.broker.subscribe(topic);
      if (confirmed === undefined) check();
      else void confirmed.then(check);
    }
  };

  /** Every message for this node's subscribers, local or from other nodes, goes out here. */
  private readonly deliver = (topic: string, frame: string, offset?: number, epoch?: string): void => {
    if (epoch !== undefined && this.cursors.size !== 0 && !this.follow(topic, offset!, epoch)) {
      this.hub.hold(topic, frame, offset!, epoch); // recoveries merge by offset; active subscribers have it
      return;
    }
    this.metrics.deliveries += this.hub.subscribers(topic);
    this.hub.deliver(topic, frame, offset, epoch);
    if (this.behind.size !== 0) this.catchUp(topic);
  };

  /**
   * Publishes `data` to `topic` as one serialized frame. `from` is the publishing socket; without one (the HTTP
   * API) every topic is allowed. A socket needs its token's permission (auth mode) and a topic clients may
   * publish to. A topic with a schema gets its output, or `invalid_data` and nothing is published. `data` came
   * from JSON.parse within the nesting limit (src/json-depth.ts), so serializing it cannot fail (a schema's
   * output is checked). With history on, the outcome is the stored message's offset (a promise when the store
   * is remote); `unavailable` when it could not be stored, and then nothing was delivered.
   */
  publish(topic: string, data: Json, from?: Conn): PublishOutcome | Promise<PublishOutcome> {
    if (!isValidTopic(topic)) return INVALID_TOPIC;
    // The HTTP API (or an embedding app) while this node drains: another node can take it (sockets are closed).
    if (from === undefined && this.options.draining()) return SHUTTING_DOWN;
    const rule = this.options.rules.of(topic);
    if (rule === undefined) return UNKNOWN_TOPIC;
    if (from !== undefined) {
      if (!rule.clientsPublish) return { code: "forbidden", message: `only the server publishes to topics matching ${rule.pattern}` };
      if (from.identity !== undefined && !from.identity.permissions.canPublish(topic)) {
        return { code: "forbidden", message: `not allowed to publish to ${topic}` };
      }
    }
    // `data` came from JSON.parse, so it serializes; a schema's output is checked (its definition may be wrong).
    const json = rule.schema === undefined ? JSON.stringify(data) : checkedJson(rule, data);
    if (typeof json !== "string") return json;
    // The whole frame without history; with it, the head the store completes with the offset.
    const frame = rule.history === undefined ? encode.message(topic, json) : messageHead(topic, json);
    if (rule.history === undefined) {
      this.metrics.publishes++;
      void this.broker.publish(topic, frame);
      return 0;
    }
    let stored: number | Promise<number>;
    try {
      stored = this.broker.append(topic, frame, rule.history);
    } catch (error) {
      return this.notStored(error);
    }
    if (typeof stored === "number") return this.stored(stored);
    return stored.then(this.stored, this.notStored);
  }

  private readonly stored = (offset: number): number => {
    this.metrics.publishes++;
    this.metrics.historyAppends++;
    return offset;
  };

  private readonly unreadable = (error: unknown): Refusal => {
    if (!(error instanceof HistoryUnavailable)) throw error;
    this.metrics.historyRefused.inc("unavailable");
    return UNREADABLE;
  };

  private readonly notStored = (error: unknown): Refusal => {
    if (!(error instanceof HistoryUnavailable)) throw error;
    this.metrics.historyRefused.inc(error.unconfirmed ? "unconfirmed" : "unavailable");
    return error.unconfirmed ? UNCONFIRMED : UNAVAILABLE;
  };

  subscribe(
    conn: Conn,
    topic: string,
    id: FrameId | undefined,
    since?: Position,
    presence?: { joinLeave?: boolean; info?: { [key: string]: Json } },
  ): void {
    if (!isValidTopic(topic)) return this.replies.reject(conn, "invalid_topic", ErrorText.topicRule, id);
    const rule = this.options.rules.of(topic);
    if (rule === undefined) return this.replies.reject(conn, UNKNOWN_TOPIC.code, UNKNOWN_TOPIC.message, id);
    if (presence?.info !== undefined && Buffer.byteLength(JSON.stringify(presence.info)) > MAX_INFO_BYTES) {
      return this.replies.reject(conn, "invalid_message", `info: at most ${MAX_INFO_BYTES} bytes as JSON (UTF-8)`, id);
    }
    if (conn.identity !== undefined && !conn.identity.permissions.canSubscribe(topic)) {
      return this.replies.reject(conn, "forbidden", `not allowed to subscribe to ${topic}`, id);
    }
    // Asked for what the topic's definition turns off: refused, so the client learns it rather than waiting.
    if (presence?.info !== undefined && !rule.presence) {
      return this.replies.reject(conn, "not_available", `presence is off for topics matching ${rule.pattern}: subscribe without info`, id);
    }
    if (presence?.joinLeave === true && !rule.joinLeave) {
      return this.replies.reject(conn, "not_available", `join/leave is off for topics matching ${rule.pattern}: subscribe without presence: true`, id);
    }
    const topics = (conn.topics ??= new Map());
    const held = topics.get(topic);
    if (held === null) return this.replies.send(conn, encode.subscribed(topic, id)); // idempotent
    if (held !== undefined) {
      // Answered with the first one, once confirmed; bounded, since confirmation may take seconds.
      if (held.replies.length >= MAX_WAITING_REPLIES) {
        return this.replies.reject(conn, "invalid_message", `already subscribing to ${topic}: wait for subscribed`, id);
      }
      held.replies.push(id);
      return;
    }
    if (topics.size >= this.options.maxTopics) {
      return this.replies.reject(conn, "too_many_topics", `at most ${this.options.maxTopics} topics per connection`, id);
    }
    const pending: PendingSubscription = { replies: [id], rule };
    if (since !== undefined) pending.since = since;
    if (presence?.joinLeave === true) pending.presence = true;
    if (presence?.info !== undefined) pending.info = presence.info;
    topics.set(topic, pending);
    this.hub.join(topic);
    const upstream = this.broker.subscribe(topic);
    if (upstream === undefined) this.confirmed(conn, topic, pending);
    else void upstream.then(() => this.confirmed(conn, topic, pending));
  }

  unsubscribe(conn: Conn, topic: string, id: FrameId | undefined): void {
    if (!isValidTopic(topic)) return this.replies.reject(conn, "invalid_topic", ErrorText.topicRule, id);
    if (!this.drop(conn, topic)) return this.replies.reject(conn, "not_subscribed", `not subscribed to ${topic}`, id);
    this.replies.send(conn, encode.unsubscribed(topic, id));
  }

  /**
   * The server ends `conn`'s subscription of `topic` (POST /api/unsubscribe: reason `server`; a broken stream:
   * `recover`) exactly as the client's unsubscribe would: native delivery stops, its presence entry goes (a
   * leave is announced), the topic is released, then `{"type":"unsubscribed","topic":T,"reason":R}` tells the
   * client, after every message of T it was sent. False when the connection does not hold the topic.
   */
  end(conn: Conn, topic: string, reason: UnsubscribeReason): boolean {
    if (!this.drop(conn, topic)) return false;
    this.replies.send(conn, encode.unsubscribed(topic, undefined, reason));
    return true;
  }

  /** Ends a subscription held (active or pending) and releases the topic; false when it is not held. */
  private drop(conn: Conn, topic: string): boolean {
    const held = conn.topics?.get(topic);
    if (held === undefined) return false;
    conn.topics!.delete(topic);
    if (held === null) this.withdraw(conn, topic);
    else {
      this.forget(topic, held);
      // A subscription cancelled before it was confirmed: its subscribes are answered first, so the replies
      // keep the order of the requests; no message was or will be delivered for it.
      for (const replyId of held.replies) this.replies.send(conn, encode.subscribed(topic, replyId));
    }
    this.release(topic);
    return true;
  }

  /** The connection closed: every topic it held loses a subscriber (Bun already dropped the native ones). */
  leave(conn: Conn): void {
    const topics = conn.topics;
    if (topics === undefined) return;
    conn.topics = undefined;
    for (const [topic, held] of topics) {
      if (held !== null) this.forget(topic, held);
      else this.absent(conn, topic);
      this.release(topic);
    }
  }

  /** A presence or presence_stats request: needs subscribe permission, like history. */
  readPresence(topic: string, stats: false, identity?: Identity): Refusal | PresenceList | Promise<Refusal | PresenceList>;
  readPresence(topic: string, stats: true, identity?: Identity): Refusal | PresenceStats | Promise<Refusal | PresenceStats>;
  readPresence(topic: string, stats: boolean, identity?: Identity): Refusal | PresenceList | PresenceStats | Promise<Refusal | PresenceList | PresenceStats>;
  readPresence(topic: string, stats: boolean, identity?: Identity): Refusal | PresenceList | PresenceStats | Promise<Refusal | PresenceList | PresenceStats> {
    if (!isValidTopic(topic)) return INVALID_TOPIC;
    const rule = this.options.rules.of(topic);
    if (rule === undefined) return UNKNOWN_TOPIC;
    if (identity !== undefined && !identity.permissions.canSubscribe(topic)) {
      return { code: "forbidden", message: `not allowed to see who is in ${topic}` };
    }
    if (!rule.presence) return isOff("presence", rule, "");
    const read = stats
      ? this.options.presence.stats(topic)
      : this.options.presence.list(topic, this.options.maxPresenceClients, this.options.recoveryBudgetBytes);
    // A shared store may fail (Redis down): the request is answered, never left hanging.
    return read instanceof Promise ? read.catch((): Refusal => PRESENCE_UNAVAILABLE) : read;
  }

  /** An active subscription ends here: native delivery of the topic (and its join/leave) stops, then `leave`. */
  private withdraw(conn: Conn, topic: string): void {
    this.hub.deactivate(conn.ws, topic, conn.batch);
    this.hub.deactivate(conn.ws, presenceTopic(topic));
    this.absent(conn, topic);
  }

  /** The connection's presence entry in `topic` is removed; a removal that took place is announced once. */
  private absent(conn: Conn, topic: string): void {
    if (this.options.rules.of(topic)?.presence === false) return; // it was never added
    const removed = this.options.presence.remove(topic, this.options.connectionIdOf(conn));
    if (removed instanceof Promise) void removed.then((entry) => entry && this.announce(topic, encode.leave(topic, entry)), () => {});
    else if (removed !== undefined) this.announce(topic, encode.leave(topic, removed));
  }

  /**
   * Join/leave go to the topic's `presence: true` subscribers on every node (the broker's `announce`), through
   * Bun's native publish on each, serialized once.
   */
  private announce(topic: string, frame: string): void {
    if (this.options.rules.of(topic)?.joinLeave !== true) return; // the topic's definition turns them off
    this.metrics.presenceEvents++;
    this.broker.announce(topic, frame);
  }

  /** Entries of other nodes found expired (a node that stopped refreshing: crashed): each left, announced once. */
  expired(topic: string, entries: readonly PresenceEntry[]): void {
    for (const entry of entries) this.announce(topic, encode.leave(topic, entry));
  }

  /**
   * Entries of this node announced gone (another node found them expired: this node was cut off longer than the
   * TTL), put back by its refresh: they are there again. The member itself must not hear its own join: it is
   * taken off the topic's join/leave for the moment of the announcement (rare: a walk of this node's connections).
   */
  rejoined(topic: string, entries: readonly PresenceEntry[]): void {
    const ids = new Set(entries.map((entry) => entry.connectionId));
    const members: Conn[] = [];
    for (const conn of this.options.connections()) {
      if (conn.topics?.get(topic) === null && ids.has(this.options.connectionIdOf(conn)) && conn.ws.isSubscribed(presenceTopic(topic))) members.push(conn);
    }
    for (const conn of members) this.hub.deactivate(conn.ws, presenceTopic(topic));
    for (const entry of entries) this.announce(topic, encode.join(topic, entry));
    for (const conn of members) this.hub.activate(conn.ws, presenceTopic(topic));
  }

  /**
   * A history request (socket frame or HTTP): the latest `limit` messages, or those after `since` when it names
   * the topic's epoch. Needs subscribe permission (sockets in auth mode).
   */
  readHistory(topic: string, since: Position | undefined, limit = HISTORY_LIMIT_MAX, identity?: Identity): Refusal | HistoryRead | Promise<Refusal | HistoryRead> {
    if (!isValidTopic(topic)) return INVALID_TOPIC;
    const rule = this.options.rules.of(topic);
    if (rule === undefined) return UNKNOWN_TOPIC;
    if (identity !== undefined && !identity.permissions.canSubscribe(topic)) {
      return { code: "forbidden", message: `not allowed to read the history of ${topic}` };
    }
    if (rule.history === undefined) return isOff("history", rule, "HISTORY_SIZE=0");
    let read: HistoryRead | Promise<HistoryRead>;
    try {
      read = this.broker.read(topic, { since, limit, create: false, maxBytes: this.options.recoveryBudgetBytes });
    } catch (error) {
      return this.unreadable(error);
    }
    this.metrics.historyReads++;
    return read instanceof Promise ? read.catch(this.unreadable) : read;
  }

  /** Local subscriptions of `topic`, pending ones included. */
  localInterest(topic: string): number {
    return this.hub.interestIn(topic);
  }

  /** The broker will deliver `topic` from other nodes: activate now, or first read the topic's position. */
  private confirmed(conn: Conn, topic: string, pending: PendingSubscription): void {
    const history = pending.rule.history;
    if (history === undefined) return this.activate(conn, topic, pending, undefined);
    if (this.stale(conn, topic, pending)) return;
    let read: HistoryRead | Promise<HistoryRead>;
    try {
      // A plain subscribe needs the position only; a resume, the missed messages, within what the socket can
      // take at once (the budget is per socket: other recoveries of this connection may be waiting in its buffer).
      const since = pending.since;
      const limit = since === undefined ? 0 : history.size;
      read = this.broker.read(topic, { since, limit, create: true, maxBytes: this.budgetOf(conn) });
    } catch (error) {
      return this.readFailed(conn, topic, pending, error);
    }
    if (!(read instanceof Promise)) return this.recover(conn, topic, pending, read);
    const recovery = (pending.recovery = new Recovery(this.options.recoveryBudgetBytes));
    this.hub.watch(topic, recovery);
    read.then(
      (result) => this.recover(conn, topic, pending, result),
      (error: unknown) => this.readFailed(conn, topic, pending, error),
    );
  }

  /**
   * The read came back: answer, replay, flush what arrived meanwhile, and go live, in one step. `waited`: a
   * read kept while the recovery waited for this node's stream, so older than the stream.
   */
  private recover(conn: Conn, topic: string, pending: PendingSubscription, read: HistoryRead, waited = false): void {
    if (this.stale(conn, topic, pending)) return this.forget(topic, pending);
    const live = pending.recovery;
    let stream = live === undefined ? undefined : this.cursors.get(topic);
    if (live !== undefined && stream === undefined && this.unpositioned.delete(topic)) {
      // Subscribers here were activated without a position (Redis was down): the node does not know what they
      // have, so it cannot take this read's position as theirs. Send them to recover; follow from the read.
      this.breakStream(topic, read.epoch, read.offset);
    }
    if (stream !== undefined && stream.epoch !== read.epoch && !waited) {
      // The topic's history was reset (Redis emptied or flushed) and this node has not yet seen a message of
      // the new epoch: its subscribers' positions are gone. The read is the newer truth: send them to recover
      // now, and follow the new epoch from the read's position.
      this.breakStream(topic, read.epoch, read.offset);
      stream = this.cursors.get(topic);
    }
    const result = plan(read, pending.since, live, this.budgetOf(conn), stream);
    if (result === undefined) return this.waitForStream(conn, topic, pending, read);
    this.forget(topic, pending);
    const { at, recovered, frames } = result;
    if (recovered !== undefined) this.metrics.recoveries.inc(recovered ? "recovered" : "not_recovered");
    this.activate(conn, topic, pending, at, recovered, frames);
    if (live !== undefined && stream === undefined) this.cursors.set(topic, { ...at });
  }

  /**
   * The client resumes from an offset this node has not delivered yet (another node was ahead): hold on to
   * the read and the live messages until this node's stream reaches it, or give up (recovered: false) after
   * STREAM_WAIT_MS, which only a stream that stopped would need.
   */
  private waitForStream(conn: Conn, topic: string, pending: PendingSubscription, read: HistoryRead): void {
    pending.read = read;
    let waiting = this.behind.get(topic);
    if (waiting === undefined) this.behind.set(topic, (waiting = new Map()));
    if (waiting.has(pending)) return;
    waiting.set(pending, conn);
    setTimeout(() => {
      if (!this.behind.get(topic)?.has(pending) || this.stale(conn, topic, pending)) return;
      this.forget(topic, pending);
      this.metrics.recoveries.inc("not_recovered");
      this.activate(conn, topic, pending, this.cursors.get(topic) ?? { epoch: read.epoch, offset: read.offset }, false, []);
    }, STREAM_WAIT_MS).unref();
  }

  /** This node's stream of `topic` moved on: recoveries that waited for it may finish now. */
  private catchUp(topic: string): void {
    const waiting = this.behind.get(topic);
    if (waiting === undefined) return;
    for (const [pending, conn] of [...waiting]) this.recover(conn, topic, pending, pending.read!, true);
  }

  /** A pending subscription is answered or gone: its live buffer and any wait for the stream go with it. */
  private forget(topic: string, pending: PendingSubscription): void {
    if (pending.recovery !== undefined) this.hub.unwatch(topic, pending.recovery);
    const waiting = this.behind.get(topic);
    if (waiting?.delete(pending) && waiting.size === 0) this.behind.delete(topic);
  }

  private readFailed(conn: Conn, topic: string, pending: PendingSubscription, error: unknown): void {
    const live = pending.recovery;
    this.forget(topic, pending);
    if (!(error instanceof HistoryUnavailable)) throw error;
    if (this.stale(conn, topic, pending)) return;
    if (pending.since === undefined) {
      // A plain subscribe goes on as without history: live messages from now on, no position to offer. The
      // topic is marked, so the first position this node takes for it later sends these subscribers to recover.
      if (live !== undefined && !this.cursors.has(topic)) this.unpositioned.add(topic);
      return this.activate(conn, topic, pending, undefined, undefined, live?.frames.map((m) => m.frame));
    }
    this.metrics.recoveries.inc("unavailable");
    conn.topics!.delete(topic);
    this.release(topic);
    for (const id of pending.replies) this.replies.reject(conn, "unavailable", `cannot recover ${topic}: ${ErrorText.unreadable}`, id);
  }

  /** What a recovery may still send `conn` at once: half the backpressure limit, less what it has not taken yet. */
  private budgetOf(conn: Conn): number {
    return Math.max(0, this.options.recoveryBudgetBytes - conn.ws.getBufferedAmount());
  }

  private stale(conn: Conn, topic: string, pending: PendingSubscription): boolean {
    // Unsubscribed, closed, or replaced by a newer subscription meanwhile: that path answered already.
    return conn.closed || conn.topics?.get(topic) !== pending;
  }

  private activate(
    conn: Conn,
    topic: string,
    pending: PendingSubscription,
    at: Position | undefined,
    recovered?: boolean,
    frames?: readonly string[],
  ): void {
    if (this.stale(conn, topic, pending)) return;
    conn.topics!.set(topic, null);
    for (const id of pending.replies) this.replies.send(conn, encode.subscribed(topic, id, at, recovered));
    if (frames !== undefined) for (const frame of frames) this.replies.send(conn, frame);
    if (!pending.rule.presence) return this.hub.activate(conn.ws, topic, conn.batch); // no entry, no join
    // The join goes out before this socket hears join/leave of the topic: members learn of it, it does not.
    const entry: PresenceEntry = { connectionId: this.options.connectionIdOf(conn), user: conn.identity?.sub ?? null };
    if (pending.info !== undefined) entry.info = pending.info;
    const added = this.options.presence.add(topic, entry);
    this.hub.activate(conn.ws, topic, conn.batch);
    if (!(added instanceof Promise)) {
      if (added) this.announce(topic, encode.join(topic, entry));
      if (pending.presence === true) this.hub.activate(conn.ws, presenceTopic(topic));
      return;
    }
    // A shared store answers later: the join goes out then (this node's watchers first), and only after it does
    // this socket start hearing join/leave, so it never hears its own.
    const joined = (fresh: boolean) => {
      if (fresh) this.announce(topic, encode.join(topic, entry));
      if (pending.presence === true && !conn.closed && conn.topics?.get(topic) === null) this.hub.activate(conn.ws, presenceTopic(topic));
    };
    void added.then(joined, () => joined(false));
  }

  /**
   * Redis: checks that `topic`'s stream on this node continues. False for a message this node already
   * delivered (a recovery read it from history before Redis delivered it here). A break (a jump, or a new
   * epoch) sends the topic's active subscribers here to recover, then goes on from the new position.
   */
  private follow(topic: string, offset: number, epoch: string): boolean {
    const cursor = this.cursors.get(topic);
    if (cursor === undefined) return true;
    if (cursor.epoch === epoch) {
      if (offset === cursor.offset + 1) {
        cursor.offset = offset;
        return true;
      }
      if (offset <= cursor.offset) return false;
    }
    this.breakStream(topic, epoch, offset);
    return true;
  }

  /**
   * This node's stream of `topic` broke: its active subscribers here are sent to recover (`unsubscribed`,
   * reason `recover`), and the node follows the topic from `epoch`/`offset` on. Walks the open connections:
   * rare (a Redis link that lost messages, a history reset), never per message.
   */
  private breakStream(topic: string, epoch: string, offset: number): void {
    const cursor = this.cursors.get(topic);
    if (cursor !== undefined) {
      cursor.epoch = epoch;
      cursor.offset = offset;
    }
    this.metrics.streamBreaks++;
    for (const conn of this.options.connections()) {
      // Active subscriptions only: a pending one takes its position from its own read.
      if (conn.topics?.get(topic) === null) this.end(conn, topic, "recover");
    }
  }

  private release(topic: string): void {
    if (this.hub.leave(topic)) {
      this.cursors.delete(topic);
      this.unpositioned.delete(topic);
      this.broker.unsubscribe(topic);
    }
  }
}
