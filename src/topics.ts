// The topic pipeline: publish, subscribe, unsubscribe and leave-on-close, the one path that socket frames
// and the HTTP API both go through. Checks (topic rule, permissions, per-connection topic cap) happen here,
// next to the bookkeeping they guard, so a limit is checked where it is counted.
//
// Ordering guarantee: a socket is natively subscribed to a topic in the same synchronous step that sends its
// `subscribed`, and only once the broker says messages from other nodes will arrive. So no `message` of T
// ever precedes T's `subscribed` on a connection, and `subscribed` means cross-node messages of T arrive.
import type { Identity } from "./auth/tokens.ts";
import type { Broker } from "./broker/broker.ts";
import type { Conn, PendingSubscription } from "./connections.ts";
import type { Hub } from "./hub.ts";
import type { Metrics } from "./metrics.ts";
import { encode, ErrorText, isValidTopic, type ErrorCode, type FrameId, type Json } from "./protocol.ts";

/** Why the pipeline refused an operation: an error frame on a socket, a 4xx over HTTP. */
export interface Refusal {
  code: ErrorCode;
  message: string;
}

/** How the pipeline answers a connection (counted sends, owned by the gateway). */
export interface Replies {
  send(conn: Conn, frame: string): void;
  reject(conn: Conn, code: ErrorCode, message: string, id?: FrameId): void;
}

const INVALID_TOPIC: Refusal = { code: "invalid_topic", message: ErrorText.topicRule };
/** Repeated subscribes of one topic waiting for the broker's confirmation, per connection. */
const MAX_WAITING_REPLIES = 16;

export class TopicPipeline {
  constructor(
    private readonly hub: Hub,
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    private readonly maxTopics: number,
    private readonly replies: Replies,
  ) {
    broker.start(this.deliver);
  }

  /** Every message for this node's subscribers, local or from other nodes, goes out here. */
  private readonly deliver = (topic: string, frame: string): void => {
    this.metrics.deliveries += this.hub.subscribers(topic);
    this.hub.deliver(topic, frame);
  };

  /**
   * Publishes `data` to `topic` as one serialized frame. `identity` is the publisher's token (sockets in auth
   * mode); without one (open mode, the HTTP API's key) every topic is allowed. `data` came from JSON.parse
   * within the nesting limit (src/json-depth.ts), so serializing it cannot fail.
   */
  publish(topic: string, data: Json, identity?: Identity): Refusal | undefined {
    if (!isValidTopic(topic)) return INVALID_TOPIC;
    if (identity !== undefined && !identity.permissions.canPublish(topic)) {
      return { code: "forbidden", message: `not allowed to publish to ${topic}` };
    }
    this.metrics.publishes++;
    void this.broker.publish(topic, encode.message(topic, data));
    return undefined;
  }

  subscribe(conn: Conn, topic: string, id: FrameId | undefined): void {
    if (!isValidTopic(topic)) return this.replies.reject(conn, "invalid_topic", ErrorText.topicRule, id);
    if (conn.identity !== undefined && !conn.identity.permissions.canSubscribe(topic)) {
      return this.replies.reject(conn, "forbidden", `not allowed to subscribe to ${topic}`, id);
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
    if (topics.size >= this.maxTopics) {
      return this.replies.reject(conn, "too_many_topics", `at most ${this.maxTopics} topics per connection`, id);
    }
    const pending: PendingSubscription = { replies: [id] };
    topics.set(topic, pending);
    this.hub.join(topic);
    const upstream = this.broker.subscribe(topic);
    if (upstream === undefined) this.activate(conn, topic, pending);
    else void upstream.then(() => this.activate(conn, topic, pending));
  }

  unsubscribe(conn: Conn, topic: string, id: FrameId | undefined): void {
    if (!isValidTopic(topic)) return this.replies.reject(conn, "invalid_topic", ErrorText.topicRule, id);
    const held = conn.topics?.get(topic);
    if (held === undefined) return this.replies.reject(conn, "not_subscribed", `not subscribed to ${topic}`, id);
    conn.topics!.delete(topic);
    if (held === null) this.hub.deactivate(conn.ws, topic);
    // A subscription cancelled before it was confirmed: its subscribes are answered first, so the replies
    // keep the order of the requests; no message was or will be delivered for it.
    else for (const replyId of held.replies) this.replies.send(conn, encode.subscribed(topic, replyId));
    this.release(topic);
    this.replies.send(conn, encode.unsubscribed(topic, id));
  }

  /** The connection closed: every topic it held loses a subscriber (Bun already dropped the native ones). */
  leave(conn: Conn): void {
    const topics = conn.topics;
    if (topics === undefined) return;
    conn.topics = undefined;
    for (const topic of topics.keys()) this.release(topic);
  }

  /** Local subscriptions of `topic`, pending ones included. */
  localInterest(topic: string): number {
    return this.hub.interestIn(topic);
  }

  private activate(conn: Conn, topic: string, pending: PendingSubscription): void {
    // Unsubscribed, closed, or replaced by a newer subscription meanwhile: that path answered already.
    if (conn.closed || conn.topics?.get(topic) !== pending) return;
    conn.topics.set(topic, null);
    this.hub.activate(conn.ws, topic);
    for (const id of pending.replies) this.replies.send(conn, encode.subscribed(topic, id));
  }

  private release(topic: string): void {
    if (this.hub.leave(topic)) this.broker.unsubscribe(topic);
  }
}
