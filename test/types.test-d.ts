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
