// The wire protocol of GET /connect: every client and server frame as a zod schema, the error codes and the
// close codes. Everything else (server, Eden client, tests) takes its types from here.
import { z } from "zod";

// Routes, close codes and refused upgrades, with their reconnect policies: the zod-free half of the registry,
// kept in its own module so the browser client imports it without bundling zod.
export * from "./protocol-tables.ts";

/** Any JSON value: what `data` may hold. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** Topic names: 1-200 chars of letters, digits and `. _ - : /`. None of them needs escaping in JSON. */
export const TOPIC_PATTERN = /^[A-Za-z0-9._:/-]{1,200}$/;
export const isValidTopic = (topic: string): boolean => TOPIC_PATTERN.test(topic);

/**
 * A correlation id chosen by the client and echoed in the reply. Numbers first: zod tries the options in order,
 * and a failed try builds an issue, so the typed client's numeric ids cost ~70 ns less per frame this way
 * round (the two options are disjoint, and the errors read the same).
 */
export const FrameId = z.union([z.number(), z.string().max(64)]); // zod 4's number() is finite-only
export type FrameId = z.infer<typeof FrameId>;

// `data` arrives from JSON.parse, so it is JSON by construction; walking it again with z.json() would cost
// time proportional to its size on the hot path. We only require the key to be present (`null` is a value).
const Data = z.custom<Json>((value) => value !== undefined, { message: "required (null is a value)" });

// Topics are plain strings in the schema: a string that breaks the name rule is `invalid_topic`, reported
// separately from a schema failure (`invalid_message`).
const id = FrameId.optional();

/**
 * A place in a topic's history: `offset` counts the topic's publishes (the first is 1), `epoch` names the
 * history those offsets belong to and changes whenever it was lost (memory broker restarted, Redis emptied).
 */
export const Position = z.strictObject({ epoch: z.string().min(1).max(64), offset: z.number().int().min(0) });
export type Position = z.infer<typeof Position>;

/** Most messages one history request returns (and its default). */
export const HISTORY_LIMIT_MAX = 100;
const HistoryLimit = z.number().int().min(1).max(HISTORY_LIMIT_MAX);

/** A presence entry's `info`: a small JSON object the client attaches to its subscription (size checked on use). */
const Info = z.custom<{ [key: string]: Json }>((value) => typeof value === "object" && value !== null && !Array.isArray(value), {
  message: "must be a JSON object",
});
/** Largest `info`, serialized: presence lists carry it for every member. */
export const MAX_INFO_BYTES = 1024;

export const SubscribeFrame = z.object({
  type: z.literal("subscribe"),
  topic: z.string(),
  since: Position.optional(),
  /** Also receive `join` / `leave` of the topic's other members. */
  presence: z.boolean().optional(),
  info: Info.optional(),
  id,
});
export const UnsubscribeFrame = z.object({ type: z.literal("unsubscribe"), topic: z.string(), id });
export const PublishFrame = z.object({ type: z.literal("publish"), topic: z.string(), data: Data, id });
export const PingFrame = z.object({ type: z.literal("ping"), id });
export const HistoryRequestFrame = z.object({
  type: z.literal("history"),
  topic: z.string(),
  since: Position.optional(),
  limit: HistoryLimit.optional(),
  id,
});

export const PresenceRequestFrame = z.object({ type: z.literal("presence"), topic: z.string(), id });
export const PresenceStatsRequestFrame = z.object({ type: z.literal("presence_stats"), topic: z.string(), id });

/** Client -> server. Unknown extra keys are ignored (forward compatible); an unknown `type` is invalid. */
export const ClientFrame = z.discriminatedUnion("type", [
  SubscribeFrame,
  UnsubscribeFrame,
  PublishFrame,
  PingFrame,
  HistoryRequestFrame,
  PresenceRequestFrame,
  PresenceStatsRequestFrame,
]);
export type ClientFrame = z.infer<typeof ClientFrame>;

/** POST /publish body: the same topic rule and data as a socket publish. */
export const HttpPublishBody = z.object({
  topic: z.string().regex(TOPIC_PATTERN, "must be 1-200 characters of letters, digits and . _ - : /"),
  data: Data,
});
export type HttpPublishBody = z.infer<typeof HttpPublishBody>;

/** Topics one POST /api/broadcast may name. */
export const MAX_BROADCAST_TOPICS = 100;

/** POST /api/broadcast body: one `data` for 1-100 distinct topics, each by the topic rule of a publish. */
export const HttpBroadcastBody = z.object({
  topics: z
    .array(HttpPublishBody.shape.topic)
    .min(1, `must list 1-${MAX_BROADCAST_TOPICS} topics`)
    .max(MAX_BROADCAST_TOPICS, `must list 1-${MAX_BROADCAST_TOPICS} topics`)
    .superRefine((topics, ctx) => {
      const seen = new Set<string>();
      for (const topic of topics) {
        if (seen.has(topic)) return ctx.addIssue({ code: "custom", message: `must not repeat a topic (${topic} is listed twice)` });
        seen.add(topic);
      }
    }),
  data: HttpPublishBody.shape.data,
});
export type HttpBroadcastBody = z.infer<typeof HttpBroadcastBody>;

/** Digits only, as a query string carries them: "", "1e3", "-1" and "0x10" are refused. */
const queryInteger = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,16}$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));

/** GET /api/history's query: the history frame's fields, flattened (`since` + `epoch` are one position). */
export const HttpHistoryQuery = z
  .object({
    topic: z.string().regex(TOPIC_PATTERN, "must be 1-200 characters of letters, digits and . _ - : /"),
    since: queryInteger(0, Number.MAX_SAFE_INTEGER).optional(),
    epoch: z.string().min(1).max(64).optional(),
    limit: queryInteger(1, HISTORY_LIMIT_MAX).optional(),
  })
  .refine((q) => (q.since === undefined) === (q.epoch === undefined), { message: "since and epoch go together", path: ["since"] });

/** GET /api/presence and GET /api/presence_stats: the topic of a presence request. */
export const HttpPresenceQuery = z.object({ topic: HttpPublishBody.shape.topic });

/** GET /api/nodes takes no query (extra parameters are ignored). */
export const HttpNodesQuery = z.object({});

/** GET /api/topics: `prefix` (characters of the topic rule) keeps the topics that start with it. */
export const HttpTopicsQuery = z.object({ prefix: HttpPublishBody.shape.topic.optional() });

/**
 * A node's record in the cluster view (src/cluster.ts): what it announces to Redis every period, and what GET
 * /api/nodes lists. Checked where it is read (it comes from another process); unknown keys are dropped, so a
 * newer node's extra fields do not hide it from an older one.
 */
export const NodeRecord = z.object({
  nodeId: z.string().min(1).max(64),
  /** The URL the node listens on, as configured (HOST 0.0.0.0: every interface of its machine). */
  address: z.string().max(1024),
  version: z.string().max(64),
  uptimeMs: z.number().int().min(0),
  /** Open WebSocket connections (both routes). */
  connections: z.number().int().min(0),
  /** Topics with local subscriptions (pending ones included). */
  topics: z.number().int().min(0),
  /** Frames received per second over the node's last announcement period. */
  messagesInPerSec: z.number().min(0),
  /** Frames sent plus deliveries to subscribers, per second over that period. */
  messagesOutPerSec: z.number().min(0),
});
export type NodeRecord = z.infer<typeof NodeRecord>;

/**
 * Whom a command of the HTTP API acts on, on every node: every connection of a user (the token's `sub`; in open
 * mode connections have none) or one connection (the `connectionId` its welcome frame named). Exactly one.
 */
const CommandTarget = {
  user: z.string().min(1, "must be 1-1024 characters").max(1024, "must be 1-1024 characters").optional(),
  connectionId: z.string().min(1, "must be 1-64 characters").max(64, "must be 1-64 characters").optional(),
};
const oneTarget = (target: { user?: string; connectionId?: string }): boolean => (target.user === undefined) !== (target.connectionId === undefined);
const ONE_TARGET = { message: "give exactly one of user and connectionId" };

/** POST /api/disconnect body: `{"user":S}` or `{"connectionId":S}`. */
export const HttpDisconnectBody = z.object(CommandTarget).refine(oneTarget, ONE_TARGET);
export type HttpDisconnectBody = z.infer<typeof HttpDisconnectBody>;
/** POST /api/unsubscribe body: a target and the topic to take from it. */
export const HttpUnsubscribeBody = z.object({ ...CommandTarget, topic: HttpPublishBody.shape.topic }).refine(oneTarget, ONE_TARGET);
export type HttpUnsubscribeBody = z.infer<typeof HttpUnsubscribeBody>;

/**
 * A command on the broker's control channel (src/broker/broker.ts): what the API's disconnect and unsubscribe
 * send to every node, each applying it to its own connections. Checked again where it arrives from another node.
 */
export const ControlCommand = z.discriminatedUnion("type", [
  z.object({ type: z.literal("disconnect"), ...CommandTarget }).refine(oneTarget, ONE_TARGET),
  z.object({ type: z.literal("unsubscribe"), ...CommandTarget, topic: HttpPublishBody.shape.topic }).refine(oneTarget, ONE_TARGET),
]);
export type ControlCommand = z.infer<typeof ControlCommand>;

export const ErrorCode = z.enum([
  "invalid_json",
  "invalid_message",
  "invalid_topic",
  "too_many_topics",
  "not_subscribed",
  "unsupported_binary",
  "forbidden",
  "rate_limited",
  "unavailable",
  "unconfirmed",
  /** The publish's `data` fails its topic's schema (the message says why, from zod). Nothing was published. */
  "invalid_data",
  /** TOPICS_STRICT: no pattern of the topic definitions matches the topic. */
  "unknown_topic",
  /** The topic's configuration (or the server's) turns this off: history, presence, join/leave. Do not retry. */
  "not_available",
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

// Server -> client. Strict objects: a server frame carries exactly these fields, so clients can rely on them.
export const WelcomeFrame = z.strictObject({
  type: z.literal("welcome"),
  connectionId: z.string(),
  heartbeat: z.strictObject({ intervalMs: z.number(), timeoutMs: z.number() }),
  /** Present (true) when the upgrade asked for batched delivery (`?batch=1`): see the README's Batching. */
  batch: z.literal(true).optional(),
});
/**
 * With history on, `epoch`/`offset` give the topic's position when the subscription started (the last offset
 * it has), and `recovered` answers a subscribe with `since`: true when every missed message follows.
 */
export const SubscribedFrame = z.strictObject({
  type: z.literal("subscribed"),
  topic: z.string(),
  epoch: z.string().optional(),
  offset: z.number().optional(),
  recovered: z.boolean().optional(),
  id,
});
/**
 * Why the server ended a subscription the client did not end: `recover` means this node's stream of the
 * topic broke (its Redis link was lost, or the topic's history was reset): subscribe again with `since`;
 * `server` means a backend took the subscription away (POST /api/unsubscribe): do not subscribe again on
 * your own.
 */
export const UnsubscribeReason = z.enum(["recover", "server"]);
export type UnsubscribeReason = z.infer<typeof UnsubscribeReason>;
export const UnsubscribedFrame = z.strictObject({ type: z.literal("unsubscribed"), topic: z.string(), reason: UnsubscribeReason.optional(), id });
/** `offset` is present with history on: the message's place in its topic. */
export const MessageFrame = z.strictObject({ type: z.literal("message"), topic: z.string(), data: Data, offset: z.number().optional() });
export const AckFrame = z.strictObject({ type: z.literal("ack"), id: FrameId, offset: z.number().optional() });
export const HistoryEntry = z.strictObject({ offset: z.number(), data: Data });
/** A presence entry: a connection's subscription, its token's `sub` (null in open mode) and its `info`. */
export const PresenceClient = z.strictObject({ connectionId: z.string(), user: z.string().nullable(), info: Info.optional() });
export const PresenceFrame = z.strictObject({
  type: z.literal("presence"),
  topic: z.string(),
  clients: z.array(PresenceClient),
  truncated: z.boolean().optional(),
  id,
});
export const PresenceStatsFrame = z.strictObject({ type: z.literal("presence_stats"), topic: z.string(), clients: z.number(), users: z.number(), id });
/** To subscribers with `presence: true`: another member arrived, or left (unsubscribe, close, timeout). */
export const JoinFrame = z.strictObject({ type: z.literal("join"), topic: z.string(), client: PresenceClient });
export const LeaveFrame = z.strictObject({ type: z.literal("leave"), topic: z.string(), client: PresenceClient });
export const HistoryFrame = z.strictObject({
  type: z.literal("history"),
  topic: z.string(),
  epoch: z.string(),
  offset: z.number(),
  messages: z.array(HistoryEntry),
  id,
});
export const PongFrame = z.strictObject({ type: z.literal("pong"), id });
export const ErrorFrame = z.strictObject({ type: z.literal("error"), code: ErrorCode, message: z.string(), id });

export const ServerFrame = z.discriminatedUnion("type", [
  WelcomeFrame,
  SubscribedFrame,
  UnsubscribedFrame,
  MessageFrame,
  AckFrame,
  PongFrame,
  ErrorFrame,
  HistoryFrame,
  PresenceFrame,
  PresenceStatsFrame,
  JoinFrame,
  LeaveFrame,
]);
export type ServerFrame = z.infer<typeof ServerFrame>;
export type MessageFrame = z.infer<typeof MessageFrame>;
export type HistoryFrame = z.infer<typeof HistoryFrame>;

/** Error texts shared by the socket protocol and the HTTP API. */
export const ErrorText = {
  topicRule: "topic must be 1-200 characters of letters, digits and . _ - : /",
  binary: "binary frames are not supported on /connect: send JSON text",
  notJson: "frame is not valid JSON",
  unavailable: "history store unavailable: nothing was published; retry later",
  unconfirmed: "the history store did not confirm in time: the message may or may not have been published",
  unreadable: "history store unavailable: retry later",
  unknownTopic: "no topic definition matches this topic (TOPICS_STRICT)",
} as const;

// Serializers. Key order is fixed; optional `id` is omitted when absent. These run on the hot path, so the
// message frame is concatenated around one JSON.stringify of `data` (topics never need escaping).

const withId = (json: string, frameId: FrameId | undefined): string =>
  frameId === undefined ? `${json}}` : `${json},"id":${JSON.stringify(frameId)}}`;

/**
 * `{"type":"message","topic":T,"data":D` without its end: the part a history store completes with the offset.
 * `dataJson`: the data already serialized (once per publish, by the pipeline).
 */
export const messageHead = (topic: string, dataJson: string): string => `{"type":"message","topic":"${topic}","data":${dataJson}`;
/** A stored message frame: `head` + its offset. */
export const withOffset = (head: string, offset: number): string => `${head},"offset":${offset}}`;
const OFFSET_KEY = ',"offset":';
/** The `data` JSON text of a stored message frame of `topic` (a slice: no parse, no re-serialization). */
export const dataOfStored = (topic: string, frame: string): string =>
  frame.slice(`{"type":"message","topic":"${topic}","data":`.length, frame.lastIndexOf(OFFSET_KEY));

export const encode = {
  welcome: (connectionId: string, intervalMs: number, timeoutMs: number, batch = false): string =>
    `{"type":"welcome","connectionId":${JSON.stringify(connectionId)},"heartbeat":{"intervalMs":${intervalMs},"timeoutMs":${timeoutMs}}${batch ? `,"batch":true` : ""}}`,
  /** `at`: the topic's position with history on; `recovered`: only in reply to a subscribe with `since`. */
  subscribed: (topic: string, frameId?: FrameId, at?: Position, recovered?: boolean): string =>
    withId(
      `{"type":"subscribed","topic":"${topic}"${at === undefined ? "" : `,"epoch":${JSON.stringify(at.epoch)},"offset":${at.offset}`}${recovered === undefined ? "" : `,"recovered":${recovered}`}`,
      frameId,
    ),
  unsubscribed: (topic: string, frameId?: FrameId, reason?: UnsubscribeReason): string =>
    withId(`{"type":"unsubscribed","topic":"${topic}"${reason === undefined ? "" : `,"reason":"${reason}"`}`, frameId),
  /** `dataJson`: the data serialized once per publish (by the pipeline, which checks that it is JSON). */
  message: (topic: string, dataJson: string): string => `{"type":"message","topic":"${topic}","data":${dataJson}}`,
  /** `offset` > 0: the published message's offset (history on). */
  ack: (frameId: FrameId, offset = 0): string =>
    offset > 0 ? `{"type":"ack","id":${JSON.stringify(frameId)},"offset":${offset}}` : `{"type":"ack","id":${JSON.stringify(frameId)}}`,
  presence: (topic: string, clients: readonly object[], truncated: boolean, frameId?: FrameId): string =>
    withId(`{"type":"presence","topic":"${topic}","clients":${JSON.stringify(clients)}${truncated ? `,"truncated":true` : ""}`, frameId),
  presenceStats: (topic: string, clients: number, users: number, frameId?: FrameId): string =>
    withId(`{"type":"presence_stats","topic":"${topic}","clients":${clients},"users":${users}`, frameId),
  /** `client` is a presence entry (connectionId, user, info): serialized once per event. */
  join: (topic: string, client: object): string => `{"type":"join","topic":"${topic}","client":${JSON.stringify(client)}}`,
  leave: (topic: string, client: object): string => `{"type":"leave","topic":"${topic}","client":${JSON.stringify(client)}}`,
  /** `frames` are stored message frames of `topic`, oldest first. */
  history: (topic: string, at: Position, frames: readonly { offset: number; frame: string }[], frameId?: FrameId): string =>
    withId(
      `{"type":"history","topic":"${topic}","epoch":${JSON.stringify(at.epoch)},"offset":${at.offset},"messages":[${frames
        .map((e) => `{"offset":${e.offset},"data":${dataOfStored(topic, e.frame)}}`)
        .join(",")}]`,
      frameId,
    ),
  pong: (frameId?: FrameId): string => withId(`{"type":"pong"`, frameId),
  error: (code: ErrorCode, message: string, frameId?: FrameId): string =>
    withId(`{"type":"error","code":"${code}","message":${JSON.stringify(message)}`, frameId),
};
