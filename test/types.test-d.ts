// Compile-time tests, checked by `bunx tsc --noEmit` (not run by bun test). Every `@ts-expect-error` below
// must be an error: if a frame type loosened to `any`, the directive itself would fail to compile.
import type { App } from "../src/app.ts";
import { connect, type ClientFrame, type ServerFrame } from "../src/client.ts";
import type { ClientFrame as ProtocolClientFrame, ServerFrame as ProtocolServerFrame } from "../src/protocol.ts";
import { treaty } from "@elysiajs/eden";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assert = <T extends true>(_: T) => {};

// The client's frame types are the server's zod schemas, carried through Elysia's App type and Eden.
assert<Equal<ClientFrame, ProtocolClientFrame>>(true);
assert<Equal<ServerFrame, ProtocolServerFrame>>(true);

export const good: ClientFrame[] = [
  { type: "subscribe", topic: "a" },
  { type: "unsubscribe", topic: "a", id: 1 },
  { type: "publish", topic: "a", data: { n: [1, "2", null] }, id: "x" },
  { type: "ping" },
];

// @ts-expect-error a typo in a frame type
export const typo: ClientFrame = { type: "publsh", topic: "a", data: 1 };
// @ts-expect-error publish needs data
export const noData: ClientFrame = { type: "publish", topic: "a" };
// @ts-expect-error topic must be a string
export const numericTopic: ClientFrame = { type: "subscribe", topic: 5 };
// @ts-expect-error ids are strings or numbers
export const objectId: ClientFrame = { type: "ping", id: {} };

export function narrow(frame: ServerFrame): string {
  switch (frame.type) {
    case "welcome":
      return `${frame.connectionId} ${frame.heartbeat.timeoutMs}`;
    case "message":
      return frame.topic;
    case "error":
      return frame.code;
    // @ts-expect-error no such server frame
    case "mesage":
      return "";
    default:
      return frame.type;
  }
}

export async function clientApi() {
  const client = connect("http://localhost:3000");
  client.subscribe("chat", (data) => void data);
  await client.publish("chat", { text: "hi", at: new Date().toISOString() });
  // @ts-expect-error data must be JSON: a Date is not
  await client.publish("chat", new Date());
  // @ts-expect-error topic must be a string
  client.subscribe(42, () => {});
  client.on("reconnecting", ({ attempt, delayMs }) => void (attempt + delayMs));
  // @ts-expect-error no such event
  client.on("reconect", () => {});
  const rtt: number = await client.ping();
  client.close();
  return rtt;
}

// Eden's own route type for /connect sends only protocol frames.
export function eden() {
  const socket = treaty<App>("localhost:3000").connect.subscribe();
  socket.send({ type: "ping", id: 1 });
  // @ts-expect-error Eden rejects a wrong frame too
  socket.send({ type: "pong" });
}

// POST /publish is typed for Eden too: backends get the same body shape.
export async function httpPublish() {
  const api = treaty<App>("localhost:3000");
  const { data } = await api.publish.post({ topic: "news", data: { any: ["json"] } }, { headers: { authorization: "Bearer key" } });
  if (data && "status" in data) assert<Equal<typeof data.status, "published">>(true);
  // @ts-expect-error data is required
  await api.publish.post({ topic: "news" });
}

// History: the new frames are typed end to end, from the zod schemas through Eden to the client.
export async function historyTypes() {
  const client = connect("http://localhost:3000");
  const frames: ClientFrame[] = [
    { type: "subscribe", topic: "a", since: { epoch: "e", offset: 3 } },
    { type: "history", topic: "a", since: { epoch: "e", offset: 3 }, limit: 10, id: 1 },
    { type: "history", topic: "a" },
  ];
  // @ts-expect-error since needs an epoch
  const noEpoch: ClientFrame = { type: "subscribe", topic: "a", since: { offset: 3 } };
  // @ts-expect-error limit is a number
  const badLimit: ClientFrame = { type: "history", topic: "a", limit: "10" };
  const { offset } = await client.publish("a", 1);
  assert<Equal<typeof offset, number | undefined>>(true);
  const history = await client.history("a", { since: { epoch: "e", offset: 0 }, limit: 5 });
  const offsets: number[] = history.messages.map((m) => m.offset);
  assert<Equal<typeof history.epoch, string>>(true);
  client.subscribe("a", (_data, frame) => void (frame.offset satisfies number | undefined), { since: { epoch: "e", offset: 1 } });
  // @ts-expect-error a position is {epoch, offset}
  client.subscribe("a", () => {}, { since: 3 });
  client.on("recovery", ({ topic, recovered, replayed }) => void (topic + String(recovered) + replayed));
  client.on("subscribed", ({ epoch, offset: at }) => void (epoch satisfies string | undefined, at satisfies number | undefined));
  return [frames, noEpoch, badLimit, offsets];
}

export function narrowHistory(frame: ServerFrame): number {
  switch (frame.type) {
    case "history":
      return frame.messages.length + frame.offset;
    case "subscribed":
      return (frame.offset ?? 0) + (frame.recovered ? 1 : 0);
    case "unsubscribed":
      return frame.reason === "recover" ? 1 : 0;
    case "ack":
      return frame.offset ?? 0;
    default:
      return 0;
  }
}

// GET /api/history is typed for Eden: backends get the frame's shape.
export async function httpHistory() {
  const api = treaty<App>("localhost:3000");
  const { data } = await api.api.history.get({ query: { topic: "news", limit: 5 }, headers: { authorization: "Bearer key" } });
  if (data && "messages" in data) {
    assert<Equal<typeof data.offset, number>>(true);
    const first: number | undefined = data.messages[0]?.offset;
    void first;
  }
  // @ts-expect-error the topic is required
  await api.api.history.get({ query: {} });
}

// Presence: frames and client methods typed from the schemas.
export async function presenceTypes() {
  const client = connect("http://localhost:3000");
  client.subscribe("room", () => {}, { info: { name: "ann" }, onJoin: (c) => void (c.connectionId + String(c.user)), onLeave: (c) => void c.info });
  // @ts-expect-error info is a JSON object
  client.subscribe("room", () => {}, { info: "ann" });
  const list = await client.presence("room");
  const users: (string | null)[] = list.clients.map((c) => c.user);
  const stats = await client.presenceStats("room");
  assert<Equal<typeof stats.users, number>>(true);
  const frames: ClientFrame[] = [
    { type: "presence", topic: "room", id: 1 },
    { type: "presence_stats", topic: "room" },
    { type: "subscribe", topic: "room", presence: true, info: { a: [1] } },
  ];
  return [users, frames];
}

export function narrowPresence(frame: ServerFrame): string {
  switch (frame.type) {
    case "join":
    case "leave":
      return frame.client.connectionId;
    case "presence":
      return String(frame.clients.length + (frame.truncated ? 1 : 0));
    case "presence_stats":
      return String(frame.clients + frame.users);
    default:
      return "";
  }
}

// The server API's presence routes and commands are typed for Eden; the client's `unsubscribed` event too.
export async function serverApiTypes() {
  const api = treaty<App>("localhost:3000");
  const headers = { authorization: "Bearer key" };
  const presence = await api.api.presence.get({ query: { topic: "room" }, headers });
  if (presence.data && "clients" in presence.data) {
    const ids: string[] = presence.data.clients.map((c) => c.connectionId);
    void ids;
  }
  const stats = await api.api.presence_stats.get({ query: { topic: "room" }, headers });
  if (stats.data && "users" in stats.data) assert<Equal<typeof stats.data.users, number>>(true);
  const kicked = await api.api.disconnect.post({ user: "ann" }, { headers });
  if (kicked.data && "closed" in kicked.data) assert<Equal<typeof kicked.data.closed, number>>(true);
  const removed = await api.api.unsubscribe.post({ connectionId: "c-1", topic: "room" }, { headers });
  if (removed.data && "unsubscribed" in removed.data) assert<Equal<typeof removed.data.status, "sent">>(true);
  // @ts-expect-error unsubscribe needs the topic
  await api.api.unsubscribe.post({ user: "ann" }, { headers });
  // @ts-expect-error the topic is required
  await api.api.presence.get({ query: {}, headers });
  const client = connect("http://localhost:3000");
  client.on("unsubscribed", ({ topic, reason }) => void (topic + (reason satisfies "server")));
}
