// Compile-time tests of typed topics, checked by `bunx tsc --noEmit` (bun test does not run them). Each
// `@ts-expect-error` must be an error: if a topic's type loosened to any JSON, the directive itself would fail.
import { z } from "zod";
import { connect, defineTopics, type DataOf, type InputOf } from "../src/lib.ts";
import type { Json } from "../src/protocol.ts";
import type exampleTopics from "../examples/switchboard.config.ts";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assert = <T extends true>(_: T) => {};

const topics = defineTopics(
  {
    "chat.room.*": { schema: z.object({ user: z.string(), text: z.string() }) },
    "chat.room.announcements": { schema: z.object({ text: z.string() }), publish: "server" },
    "chat.*": { schema: z.object({ any: z.boolean() }) },
    "ticker.*": { schema: z.object({ price: z.number() }), history: false },
    "plain.*": { history: { size: 10 } },
  },
  // A second map (another feature module): merged into the same types.
  { "scores.*": { schema: z.object({ points: z.number().int(), at: z.string().default("now") }) } },
  // Outputs that are not JSON as such: what arrives is their JSON form.
  {
    "events.*": { schema: z.object({ at: z.coerce.date(), note: z.string().optional() }) },
    "dated.*": { schema: z.object({ at: z.date() }) },
  },
);
type Topics = typeof topics;

// Resolution: an exact name beats every prefix; the longest prefix beats shorter ones.
assert<Equal<DataOf<Topics, "chat.room.42">, { user: string; text: string }>>(true);
assert<Equal<DataOf<Topics, "chat.room.announcements">, { text: string }>>(true);
assert<Equal<DataOf<Topics, "chat.lobby">, { any: boolean }>>(true);
assert<Equal<DataOf<Topics, "ticker.ACME">, { price: number }>>(true);
// A template topic resolves like a literal one.
assert<Equal<DataOf<Topics, `chat.room.${number}`>, { user: string; text: string }>>(true);
// No schema, no matching pattern, or a topic known only as `string`: any JSON.
assert<Equal<DataOf<Topics, "plain.x">, Json>>(true);
assert<Equal<DataOf<Topics, "other">, Json>>(true);
assert<Equal<DataOf<Topics, string>, Json>>(true);
// Publishing takes the schema's input (a default makes the key optional), subscribers get its output.
const accepts = <T>(_: T) => {};
accepts<InputOf<Topics, "scores.a">>({ points: 3 });
accepts<InputOf<Topics, "scores.a">>({ points: 3, at: "later" });
// @ts-expect-error points is required by the schema's input
accepts<InputOf<Topics, "scores.a">>({ at: "later" });
assert<Equal<DataOf<Topics, "scores.a">, { points: number; at: string }>>(true);
// A Date output arrives as its JSON, a string; an optional field stays optional.
assert<Equal<DataOf<Topics, "events.x">, { at: string; note?: string }>>(true);
// z.coerce.date() takes anything, as JSON: an ISO string compiles, a Date object does not (it would be sent as a string anyway).
accepts<InputOf<Topics, "events.x">>({ at: "2026-11-29T00:00:00Z" });
// z.date() wants a Date, which JSON cannot carry: no client publish can pass it, and none compiles.
// @ts-expect-error a Date is not JSON
accepts<InputOf<Topics, "dated.x">>({ at: new Date() });
// A union of topics: handlers get any of their data; a publish must suit every one of them.
assert<Equal<DataOf<Topics, "chat.lobby" | "ticker.A">, { any: boolean } | { price: number }>>(true);
assert<Equal<InputOf<Topics, "chat.room.1" | "chat.room.announcements">, never>>(true);
accepts<InputOf<Topics, "chat.room.1" | "chat.room.2">>({ user: "ann", text: "hi" });
// Untyped clients: everything is JSON.
assert<Equal<DataOf<undefined, "chat.room.1">, Json>>(true);

export async function typedClient() {
  const client = connect<Topics>("ws://localhost:3000");
  client.subscribe("chat.room.42", (msg) => {
    assert<Equal<typeof msg, { user: string; text: string }>>(true);
    const text: string = msg.text;
    return text;
  });
  client.subscribe("chat.room.announcements", (msg) => assert<Equal<typeof msg, { text: string }>>(true));
  assert<Equal<InputOf<Topics, "chat.room.announcements">, never>>(true);
  // @ts-expect-error chat.room.* messages have no `any`
  client.subscribe("chat.room.1", (msg) => void msg.any);
  // @ts-expect-error the handler's declared type must match the schema's output
  client.subscribe("chat.room.1", (msg: { text: number }) => void msg);
  // @ts-expect-error typed clients cannot name another data type for a topic
  client.subscribe<{ wrong: true }>("chat.room.1", () => {});
  client.subscribe("other.topic", (data) => assert<Equal<typeof data, Json>>(true));

  await client.publish("chat.room.42", { user: "ann", text: "hi" });
  // @ts-expect-error text must be a string (chat.room.*)
  await client.publish("chat.room.42", { user: "ann", text: 1 });
  // @ts-expect-error user is required
  await client.publish("chat.room.42", { text: "hi" });
  // @ts-expect-error publish: "server": clients cannot publish there at all (the server would answer forbidden)
  await client.publish("chat.room.announcements", { text: "hi" });
  await client.publish("chat.lobby", { any: true });
  // @ts-expect-error chat.* wants { any: boolean }
  await client.publish("chat.lobby", { user: "ann", text: "hi" });
  await client.publish("scores.match1", { points: 3 });
  // @ts-expect-error points is a number
  await client.publish("scores.match1", { points: "3" });
  // Topics without a schema (or without a pattern) take any JSON, and nothing else.
  await client.publish("plain.x", [1, "two", { three: null }]);
  await client.publish("unknown.topic", { anything: 1 });
  // @ts-expect-error a Date is not JSON
  await client.publish("plain.x", new Date());
  const room: string = "room-from-a-variable";
  await client.publish(room, { any: ["json"] });
}

export function untypedClient() {
  const client = connect("ws://localhost:3000");
  // Without definitions a handler may still name the type it expects (unchecked), as before typed topics.
  client.subscribe<{ n: number }>("counter", ({ n }) => void n);
  client.subscribe("anything", (data) => assert<Equal<typeof data, Json>>(true));
  void client.publish("anything", { x: 1 });
  // @ts-expect-error data must be JSON
  void client.publish("anything", () => {});
}

export function shippedExample() {
  const client = connect<typeof exampleTopics>("ws://localhost:3000");
  client.subscribe("chat.room.42", (msg) => assert<Equal<typeof msg, { user: string; text: string }>>(true));
  // @ts-expect-error the README's refused case: text is a string
  void client.publish("chat.room.42", { user: "ann", text: 1 });
  void client.publish("ticker.ACME", { symbol: "ACME", price: 1.5 });
}

// Options are checked too: a misspelt option, a wrong history shape, an unknown publish mode.
// @ts-expect-error no option `histroy`
defineTopics({ "a.*": { histroy: false } });
// @ts-expect-error history is {size, ttlMs?} or false
defineTopics({ "a.*": { history: true } });
// @ts-expect-error publish is "clients" or "server"
defineTopics({ "a.*": { publish: "everyone" } });
