// Typed topics (issue 12) at their seams, on real servers and real sockets: schemas accepting and refusing over
// the socket and the HTTP API (exact frames and bodies; a refusal delivers nothing and takes no offset; the
// schema's output is what subscribers and history get), which pattern a topic follows at runtime, TOPICS_STRICT
// everywhere a topic is named, publish: "server", presence and join/leave turned off, per-topic history, a
// Redis-backed pair of nodes, and 50 clients publishing good and bad data at once.
import { describe, expect, test } from "bun:test";
import { z } from "zod";
import { ErrorText, type MessageFrame, type ServerFrame } from "../src/protocol.ts";
import { defineTopics } from "../src/topics/define.ts";
import { Client, redisPerFile, serve, until, within, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const KEY = "typed-topics-key-0123456789";
const UNKNOWN = "no topic definition matches this topic (TOPICS_STRICT)";

let redis: TestRedis;
/** Clients a test opened, closed after it (its servers too; Redis after the file). */
const { clients } = redisPerFile(async () => (redis = await startRedis()));

// Two maps, merged as feature modules would define them.
const topics = defineTopics(
  {
    "chat.*": { schema: z.object({ text: z.string().min(1), mood: z.string().default("calm") }) },
    "chat.vip.*": { schema: z.object({ text: z.string(), vip: z.literal(true) }) },
    "chat.vip.lobby": { schema: z.object({ n: z.number().int() }) },
    "shout.*": { schema: z.object({ text: z.string().transform((s) => s.toUpperCase()) }) },
    bulk: { schema: z.array(z.object({ n: z.number() })) },
  },
  {
    "news.*": { publish: "server", schema: z.object({ headline: z.string() }) },
    "quiet.*": { presence: false },
    "lobby.*": { joinLeave: false },
    "short.*": { history: { size: 3 } },
    "live.*": { history: false, schema: z.object({ n: z.number() }) },
    "race.*": { schema: z.object({ from: z.number().int(), seq: z.number().int() }) },
    // Output that is not always JSON: a definition's bug the server must contain.
    "big.*": { schema: z.object({ n: z.number() }).transform(({ n }) => (n > 100 ? { n: BigInt(n) } : { n })) },
    "void.*": { schema: z.object({ n: z.number() }).transform(({ n }) => (n > 100 ? undefined : { n })) },
    "throws.*": {
      schema: z.object({ n: z.number() }).refine(({ n }) => {
        if (n > 100) throw new Error("schema exploded");
        return true;
      }),
    },
  },
);

const refusedBy = (pattern: string, ...reasons: string[]) => `does not match the schema of ${pattern}: ${reasons.join("; ")}`;
const EPOCH = expect.stringMatching(/^[0-9a-z]{8}$/);

function server(overrides: Parameters<typeof serve>[0] = {}, definitions: typeof topics | ReturnType<typeof defineTopics> = topics): TestServer {
  return serve({ API_KEY: KEY, ...overrides }, { topics: definitions });
}

async function open(s: TestServer): Promise<Client> {
  const c = await Client.connect(s);
  clients.push(c);
  return c;
}

type Subscribed = Extract<ServerFrame, { type: "subscribed" }>;

async function subscribe(c: Client, topic: string, extra: Record<string, unknown> = {}): Promise<Subscribed> {
  const reply = await c.request({ type: "subscribe", topic, id: `s:${topic}`, ...extra });
  if (reply.type !== "subscribed") throw new Error(`expected subscribed to ${topic}, got ${JSON.stringify(reply)}`);
  return reply;
}

async function http(s: TestServer, method: "GET" | "POST", path: string, body?: unknown): Promise<[number, unknown]> {
  const res = await fetch(`http://127.0.0.1:${s.port}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  try {
    return [res.status, JSON.parse(text)];
  } catch {
    return [res.status, text];
  }
}

/** A frame as plain JSON (unknown): compared whole with toEqual, whatever its type says. */
const next = (c: Client, ms?: number): Promise<unknown> => c.json(ms);
const ask = (c: Client, frame: unknown): Promise<unknown> => c.request(frame);

/** Nothing more reached `c`: its next frame is the pong to a ping sent now (a socket's frames keep their order). */
async function nothingMore(c: Client): Promise<void> {
  expect(await ask(c, { type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
}

function metric(s: TestServer, series: string): number {
  const line = s.gateway.renderMetrics().split("\n").find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no metric ${series}`);
  return Number(line.slice(series.length + 1));
}

/** The id presence gives the newest connection of `s` (the gateway names connections in order). */
const newestId = (s: TestServer): string => [...s.gateway.connections].map((conn) => s.gateway.connectionId(conn)).at(-1)!;

describe("schemas over the socket", () => {
  test("accepted publishes deliver the schema's output; refusals are exact, deliver nothing and take no offset", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    expect(await ask(sub, { type: "subscribe", topic: "chat.room", id: 1 })).toEqual({ type: "subscribed", topic: "chat.room", epoch: EPOCH, offset: 0, id: 1 });
    // Unknown keys are stripped, a given default kept, a missing one filled in.
    expect(await ask(pub, { type: "publish", topic: "chat.room", data: { text: "hi", mood: "sunny", admin: true }, id: 1 })).toEqual({ type: "ack", id: 1, offset: 1 });
    expect(await next(sub)).toEqual({ type: "message", topic: "chat.room", data: { text: "hi", mood: "sunny" }, offset: 1 });
    // A "__proto__" key (JSON.parse makes it an own key) is stripped like any unknown key and sets nothing.
    expect(await ask(pub, '{"type":"publish","topic":"chat.room","data":{"text":"yo","__proto__":{"mood":"evil"}},"id":2}')).toEqual({ type: "ack", id: 2, offset: 2 });
    expect(await next(sub)).toEqual({ type: "message", topic: "chat.room", data: { text: "yo", mood: "calm" }, offset: 2 });

    const cases: [data: unknown, reasons: string[]][] = [
      [{ text: 5 }, ["data.text: Invalid input: expected string, received number"]],
      [{ text: "" }, ["data.text: Too small: expected string to have >=1 characters"]],
      [{}, ["data.text: Invalid input: expected string, received undefined"]],
      [{ text: 1, mood: 2 }, ["data.text: Invalid input: expected string, received number", "data.mood: Invalid input: expected string, received number"]],
      [null, ["data: Invalid input: expected object, received null"]],
      [[{ text: "hi" }], ["data: Invalid input: expected object, received array"]],
      ["hi", ["data: Invalid input: expected object, received string"]],
    ];
    let id = 10;
    for (const [data, reasons] of cases) {
      id++;
      expect(await ask(pub, { type: "publish", topic: "chat.room", data, id })).toEqual({ type: "error", code: "invalid_data", message: refusedBy("chat.*", ...reasons), id });
    }
    // Without an id the refusal still comes (a publish that failed must not pass silently), without an id.
    pub.send({ type: "publish", topic: "chat.room", data: { text: 5 } });
    expect(await next(pub)).toEqual({ type: "error", code: "invalid_data", message: refusedBy("chat.*", "data.text: Invalid input: expected string, received number") });
    // A string id of 64 characters comes back as given.
    const longId = "i".repeat(64);
    expect(await ask(pub, { type: "publish", topic: "chat.room", data: {}, id: longId })).toMatchObject({ type: "error", code: "invalid_data", id: longId });

    // The next accepted publish is offset 3, and it is the subscriber's next frame: the refusals reached nobody.
    expect(await ask(pub, { type: "publish", topic: "chat.room", data: { text: "after" }, id: "last" })).toEqual({ type: "ack", id: "last", offset: 3 });
    expect(await next(sub)).toEqual({ type: "message", topic: "chat.room", data: { text: "after", mood: "calm" }, offset: 3 });
    // History holds the outputs of the accepted ones, and only them.
    expect(await ask(sub, { type: "history", topic: "chat.room", id: "h" })).toEqual({
      type: "history",
      topic: "chat.room",
      epoch: EPOCH,
      offset: 3,
      messages: [
        { offset: 1, data: { text: "hi", mood: "sunny" } },
        { offset: 2, data: { text: "yo", mood: "calm" } },
        { offset: 3, data: { text: "after", mood: "calm" } },
      ],
      id: "h",
    });
    expect(metric(s, "switchboard_publishes_total")).toBe(3);
    await nothingMore(sub);
    await nothingMore(pub);
  });

  test("a transform runs once: subscribers, the publisher's own copy, history and GET /api/history all get its output", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    await subscribe(sub, "shout.a");
    await subscribe(pub, "shout.a"); // the publisher hears its own message too
    pub.send({ type: "publish", topic: "shout.a", data: { text: "hey", junk: [1, 2] }, id: 1 });
    const own = [await pub.json(), await pub.json()];
    expect(own).toContainEqual({ type: "ack", id: 1, offset: 1 });
    expect(own).toContainEqual({ type: "message", topic: "shout.a", data: { text: "HEY" }, offset: 1 });
    expect(await next(sub)).toEqual({ type: "message", topic: "shout.a", data: { text: "HEY" }, offset: 1 });
    expect(await ask(sub, { type: "history", topic: "shout.a", id: 2 })).toEqual({ type: "history", topic: "shout.a", epoch: EPOCH, offset: 1, messages: [{ offset: 1, data: { text: "HEY" } }], id: 2 });
    expect(await http(s, "GET", "/api/history?topic=shout.a")).toEqual([200, { topic: "shout.a", epoch: EPOCH, offset: 1, messages: [{ offset: 1, data: { text: "HEY" } }] }]);
    // The transform's input rule still refuses.
    expect(await ask(pub, { type: "publish", topic: "shout.a", data: { text: ["hey"] }, id: 3 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: refusedBy("shout.*", "data.text: Invalid input: expected string, received array"),
      id: 3,
    });
    await nothingMore(sub);
    await nothingMore(pub);
  });

  test("1,000 failing items: the message lists 5 issues and 'and 995 more'; one bad item among good ones is named by its index", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    await subscribe(sub, "bulk");
    const bad = Array.from({ length: 1000 }, () => ({ n: "x" }));
    const fiveAndMore = refusedBy(
      "bulk",
      ...[0, 1, 2, 3, 4].map((i) => `data.${i}.n: Invalid input: expected number, received string`),
      "and 995 more",
    );
    expect(await ask(pub, { type: "publish", topic: "bulk", data: bad, id: 1 })).toEqual({ type: "error", code: "invalid_data", message: fiveAndMore, id: 1 });
    expect(fiveAndMore.length).toBeLessThan(400);
    expect(await http(s, "POST", "/api/publish", { topic: "bulk", data: bad })).toEqual([400, { error: fiveAndMore }]);
    // Exactly 6 issues: five shown and "and 1 more".
    const six = Array.from({ length: 6 }, () => ({}));
    expect(await ask(pub, { type: "publish", topic: "bulk", data: six, id: 2 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: refusedBy("bulk", ...[0, 1, 2, 3, 4].map((i) => `data.${i}.n: Invalid input: expected number, received undefined`), "and 1 more"),
      id: 2,
    });
    // Exactly 5: no "more".
    expect(await ask(pub, { type: "publish", topic: "bulk", data: six.slice(1), id: 3 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: refusedBy("bulk", ...[0, 1, 2, 3, 4].map((i) => `data.${i}.n: Invalid input: expected number, received undefined`)),
      id: 3,
    });
    const mostlyGood: unknown[] = Array.from({ length: 1000 }, (_, n) => ({ n }));
    mostlyGood[500] = { n: null };
    expect(await ask(pub, { type: "publish", topic: "bulk", data: mostlyGood, id: 4 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: refusedBy("bulk", "data.500.n: Invalid input: expected number, received null"),
      id: 4,
    });
    // None of it reached the subscriber or took an offset.
    expect(await ask(pub, { type: "publish", topic: "bulk", data: [{ n: 1, extra: true }], id: 5 })).toEqual({ type: "ack", id: 5, offset: 1 });
    expect(await next(sub)).toEqual({ type: "message", topic: "bulk", data: [{ n: 1 }], offset: 1 });
    await nothingMore(sub);
  });
});

describe("schemas over HTTP", () => {
  test("POST /api/publish and POST /publish: exact 400 bodies, nothing delivered, no offset taken", async () => {
    const s = server();
    const sub = await open(s);
    await subscribe(sub, "chat.http");
    for (const path of ["/api/publish", "/publish"]) {
      expect(await http(s, "POST", path, { topic: "chat.http", data: { text: 5 } })).toEqual([400, { error: refusedBy("chat.*", "data.text: Invalid input: expected string, received number") }]);
      expect(await http(s, "POST", path, { topic: "chat.http", data: null })).toEqual([400, { error: refusedBy("chat.*", "data: Invalid input: expected object, received null") }]);
    }
    expect(await http(s, "POST", "/api/publish", { topic: "chat.http", data: { text: "a", secret: 1 } })).toEqual([200, { status: "published", topic: "chat.http", offset: 1 }]);
    expect(await next(sub)).toEqual({ type: "message", topic: "chat.http", data: { text: "a", mood: "calm" }, offset: 1 });
    expect(await http(s, "POST", "/publish", { topic: "chat.http", data: { text: "b", mood: "odd" } })).toEqual([200, { status: "published", topic: "chat.http", offset: 2 }]);
    expect(await next(sub)).toEqual({ type: "message", topic: "chat.http", data: { text: "b", mood: "odd" }, offset: 2 });
    await nothingMore(sub);
  });

  test("POST /api/broadcast: 200 with each topic's own result, refusals included; all refused by their data is still 200", async () => {
    const s = server();
    const sub = await open(s);
    for (const topic of ["chat.b", "bulk", "news.b", "chat.vip.lobby", "plain.b"]) await subscribe(sub, topic);
    const data = { text: "x", headline: "h", extra: [1] };
    expect(await http(s, "POST", "/api/broadcast", { topics: ["chat.b", "bulk", "news.b", "chat.vip.lobby", "plain.b"], data })).toEqual([
      200,
      {
        status: "published",
        results: [
          { topic: "chat.b", offset: 1 },
          { topic: "bulk", error: "invalid_data", message: refusedBy("bulk", "data: Invalid input: expected array, received object") },
          { topic: "news.b", offset: 1 },
          { topic: "chat.vip.lobby", error: "invalid_data", message: refusedBy("chat.vip.lobby", "data.n: Invalid input: expected number, received undefined") },
          { topic: "plain.b", offset: 1 },
        ],
      },
    ]);
    // Each accepted topic got its own schema's output; the refused ones nothing.
    expect(await next(sub)).toEqual({ type: "message", topic: "chat.b", data: { text: "x", mood: "calm" }, offset: 1 });
    expect(await next(sub)).toEqual({ type: "message", topic: "news.b", data: { headline: "h" }, offset: 1 });
    expect(await next(sub)).toEqual({ type: "message", topic: "plain.b", data, offset: 1 });
    await nothingMore(sub);
    expect(await http(s, "POST", "/api/broadcast", { topics: ["bulk", "chat.vip.lobby"], data: "nope" })).toEqual([
      200,
      {
        status: "published",
        results: [
          { topic: "bulk", error: "invalid_data", message: refusedBy("bulk", "data: Invalid input: expected array, received string") },
          { topic: "chat.vip.lobby", error: "invalid_data", message: refusedBy("chat.vip.lobby", "data: Invalid input: expected object, received string") },
        ],
      },
    ]);
    await nothingMore(sub);
    // No offset was taken by any refusal.
    expect(await http(s, "POST", "/api/broadcast", { topics: ["bulk", "chat.vip.lobby"], data: [] })).toEqual([
      200,
      { status: "published", results: [{ topic: "bulk", offset: 1 }, { topic: "chat.vip.lobby", error: "invalid_data", message: refusedBy("chat.vip.lobby", "data: Invalid input: expected object, received array") }] },
    ]);
    expect(await next(sub)).toEqual({ type: "message", topic: "bulk", data: [], offset: 1 });
    await nothingMore(sub);
  });
});

describe("which pattern a topic follows", () => {
  test("exact beats prefix, the longer prefix beats the shorter, and a topic matching nothing has no schema", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    // [topic, data refused, the pattern and reasons of its refusal, data accepted, what subscribers get]
    const table: [string, unknown, string, string[], unknown, unknown][] = [
      ["chat.vip.lobby", { text: "a", vip: true }, "chat.vip.lobby", ["data.n: Invalid input: expected number, received undefined"], { n: 2, text: "x" }, { n: 2 }],
      ["chat.vip.lobby.2", { n: 2 }, "chat.vip.*", ["data.text: Invalid input: expected string, received undefined", "data.vip: Invalid input: expected true"], { text: "a", vip: true }, { text: "a", vip: true }],
      ["chat.vip.x", { text: "a", vip: false }, "chat.vip.*", ["data.vip: Invalid input: expected true"], { text: "a", vip: true, n: 1 }, { text: "a", vip: true }],
      // "chat.vip" has no "." after vip: chat.* (vip is stripped, mood filled in), not chat.vip.*.
      ["chat.vip", { n: 2 }, "chat.*", ["data.text: Invalid input: expected string, received undefined"], { text: "a", vip: true }, { text: "a", mood: "calm" }],
      ["chat.x", { text: 1 }, "chat.*", ["data.text: Invalid input: expected string, received number"], { text: "a", vip: true }, { text: "a", mood: "calm" }],
    ];
    for (const [topic, bad, pattern, reasons, good, output] of table) {
      await subscribe(sub, topic);
      expect(await ask(pub, { type: "publish", topic, data: bad, id: "bad" })).toEqual({ type: "error", code: "invalid_data", message: refusedBy(pattern, ...reasons), id: "bad" });
      expect(await ask(pub, { type: "publish", topic, data: good, id: "good" })).toEqual({ type: "ack", id: "good", offset: 1 });
      expect(await next(sub)).toEqual({ type: "message", topic, data: output, offset: 1 });
    }
    // No pattern matches "chat" (chat.* needs the dot) nor "chatter": any JSON, the environment's history and presence.
    for (const topic of ["chat", "chatter"]) {
      expect(await ask(sub, { type: "subscribe", topic, presence: true, info: { a: 1 }, id: 1 })).toEqual({ type: "subscribed", topic, epoch: EPOCH, offset: 0, id: 1 });
      for (const [i, data] of [[{ text: 5 }], [null], ["free"]].entries()) {
        expect(await ask(pub, { type: "publish", topic, data: data[0], id: i })).toEqual({ type: "ack", id: i, offset: i + 1 });
        expect(await next(sub)).toEqual({ type: "message", topic, data: data[0], offset: i + 1 });
      }
      expect(await ask(sub, { type: "presence_stats", topic, id: 2 })).toEqual({ type: "presence_stats", topic, clients: 1, users: 0, id: 2 });
    }
    await nothingMore(sub);
  });

  test("a lone * is every topic's pattern, and the least specific: any prefix or exact name beats it", async () => {
    const defs = defineTopics({
      "*": { schema: z.object({ ok: z.literal(true) }) },
      "free.*": {},
      exact: { history: false },
    });
    // TOPICS_STRICT changes nothing: every topic matches *.
    for (const strict of [false, true]) {
      const s = server({ TOPICS_STRICT: strict }, defs);
      const c = await open(s);
      for (const topic of ["anything", "free", "x.free.y"]) {
        await subscribe(c, topic);
        expect(await ask(c, { type: "publish", topic, data: { ok: 1 }, id: 1 })).toEqual({ type: "error", code: "invalid_data", message: refusedBy("*", "data.ok: Invalid input: expected true"), id: 1 });
        c.send({ type: "publish", topic, data: { ok: true, more: 1 }, id: 2 });
        const frames = [await c.json(), await c.json()];
        expect(frames).toContainEqual({ type: "ack", id: 2, offset: 1 });
        expect(frames).toContainEqual({ type: "message", topic, data: { ok: true }, offset: 1 });
      }
      // The more specific patterns: no schema (any JSON), and an exact name's own history: false.
      const other = await open(s);
      await subscribe(other, "free.x");
      expect(await ask(c, { type: "publish", topic: "free.x", data: [1, "two"], id: 3 })).toEqual({ type: "ack", id: 3, offset: 1 });
      expect(await next(other)).toEqual({ type: "message", topic: "free.x", data: [1, "two"], offset: 1 });
      expect(await ask(other, { type: "subscribe", topic: "exact", id: 4 })).toEqual({ type: "subscribed", topic: "exact", id: 4 });
      expect(await ask(c, { type: "publish", topic: "exact", data: 7, id: 5 })).toEqual({ type: "ack", id: 5 });
      expect(await next(other)).toEqual({ type: "message", topic: "exact", data: 7 });
      await nothingMore(c);
      await nothingMore(other);
    }
  });
});

describe("TOPICS_STRICT", () => {
  test("a topic matching no definition is unknown_topic on every socket request and every HTTP route; defined ones work", async () => {
    const s = server({ TOPICS_STRICT: true });
    const c = await open(s);
    const unknown = (id: number) => ({ type: "error", code: "unknown_topic", message: UNKNOWN, id });
    expect(await ask(c, { type: "subscribe", topic: "zzz", id: 1 })).toEqual(unknown(1));
    expect(await ask(c, { type: "subscribe", topic: "zzz", presence: true, info: { a: 1 }, since: { epoch: "abcdefgh", offset: 0 }, id: 2 })).toEqual(unknown(2));
    expect(await ask(c, { type: "publish", topic: "zzz", data: { text: "hi" }, id: 3 })).toEqual(unknown(3));
    expect(await ask(c, { type: "history", topic: "zzz", id: 4 })).toEqual(unknown(4));
    expect(await ask(c, { type: "presence", topic: "zzz", id: 5 })).toEqual(unknown(5));
    expect(await ask(c, { type: "presence_stats", topic: "zzz", id: 6 })).toEqual(unknown(6));
    // "chat" lacks the dot of chat.*: unknown too. A name breaking the topic rule is invalid_topic first.
    expect(await ask(c, { type: "publish", topic: "chat", data: { text: "hi" }, id: 7 })).toEqual(unknown(7));
    expect(await ask(c, { type: "subscribe", topic: "bad topic", id: 8 })).toEqual({ type: "error", code: "invalid_topic", message: ErrorText.topicRule, id: 8 });
    expect(await ask(c, { type: "unsubscribe", topic: "zzz", id: 9 })).toEqual({ type: "error", code: "not_subscribed", message: "not subscribed to zzz", id: 9 });
    expect(s.topics.localInterest("zzz")).toBe(0);

    expect(await http(s, "POST", "/api/publish", { topic: "zzz", data: 1 })).toEqual([400, { error: UNKNOWN }]);
    expect(await http(s, "POST", "/publish", { topic: "zzz", data: 1 })).toEqual([400, { error: UNKNOWN }]);
    expect(await http(s, "GET", "/api/history?topic=zzz")).toEqual([400, { error: UNKNOWN }]);
    expect(await http(s, "GET", "/api/presence?topic=zzz")).toEqual([400, { error: UNKNOWN }]);
    expect(await http(s, "GET", "/api/presence_stats?topic=zzz")).toEqual([400, { error: UNKNOWN }]);
    expect(await http(s, "POST", "/api/broadcast", { topics: ["chat.s", "zzz"], data: { text: "hi" } })).toEqual([
      200,
      { status: "published", results: [{ topic: "chat.s", offset: 1 }, { topic: "zzz", error: "unknown_topic", message: UNKNOWN }] },
    ]);
    expect(await http(s, "POST", "/api/broadcast", { topics: ["zzz", "yyy"], data: 1 })).toEqual([
      200,
      { status: "published", results: [{ topic: "zzz", error: "unknown_topic", message: UNKNOWN }, { topic: "yyy", error: "unknown_topic", message: UNKNOWN }] },
    ]);

    // A defined topic is served as usual, schema included.
    await subscribe(c, "chat.s", { presence: true });
    expect(await ask(c, { type: "publish", topic: "chat.s", data: { text: 1 }, id: 10 })).toMatchObject({ type: "error", code: "invalid_data", id: 10 });
    c.send({ type: "publish", topic: "chat.s", data: { text: "ok" }, id: 11 });
    const frames = [await c.json(), await c.json()];
    expect(frames).toContainEqual({ type: "ack", id: 11, offset: 2 });
    expect(frames).toContainEqual({ type: "message", topic: "chat.s", data: { text: "ok", mood: "calm" }, offset: 2 });
    expect(await ask(c, { type: "presence_stats", topic: "chat.s", id: 12 })).toEqual({ type: "presence_stats", topic: "chat.s", clients: 1, users: 0, id: 12 });
    expect(await http(s, "GET", "/api/history?topic=chat.s")).toEqual([
      200,
      { topic: "chat.s", epoch: EPOCH, offset: 2, messages: [{ offset: 1, data: { text: "hi", mood: "calm" } }, { offset: 2, data: { text: "ok", mood: "calm" } }] },
    ]);
    await nothingMore(c);
  });
});

describe('publish: "server"', () => {
  test("socket publishes are forbidden (before the schema is looked at); the HTTP API publishes, schema applied", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    await subscribe(sub, "news.world");
    const forbidden = (id: number) => ({ type: "error", code: "forbidden", message: "only the server publishes to topics matching news.*", id });
    expect(await ask(pub, { type: "publish", topic: "news.world", data: { headline: "x" }, id: 1 })).toEqual(forbidden(1));
    expect(await ask(pub, { type: "publish", topic: "news.world", data: { headline: 5 }, id: 2 })).toEqual(forbidden(2));
    expect(await ask(sub, { type: "publish", topic: "news.world", data: { headline: "mine" }, id: 3 })).toEqual(forbidden(3));
    expect(await http(s, "POST", "/api/publish", { topic: "news.world", data: { headline: 5 } })).toEqual([400, { error: refusedBy("news.*", "data.headline: Invalid input: expected string, received number") }]);
    expect(await http(s, "POST", "/api/publish", { topic: "news.world", data: { headline: "first", by: "x" } })).toEqual([200, { status: "published", topic: "news.world", offset: 1 }]);
    expect(await next(sub)).toEqual({ type: "message", topic: "news.world", data: { headline: "first" }, offset: 1 });
    expect(await http(s, "POST", "/publish", { topic: "news.world", data: { headline: "second" } })).toEqual([200, { status: "published", topic: "news.world", offset: 2 }]);
    expect(await next(sub)).toEqual({ type: "message", topic: "news.world", data: { headline: "second" }, offset: 2 });
    await nothingMore(sub);
    await nothingMore(pub);
  });
});

describe("presence: false and joinLeave: false", () => {
  test("presence: false refuses info and presence: true, answers presence requests not_available, keeps no entries", async () => {
    const s = server();
    const c = await open(s);
    const refusal = (message: string, id: number) => ({ type: "error", code: "not_available", message, id });
    const noInfo = "presence is off for topics matching quiet.*: subscribe without info";
    const noJoinLeave = "join/leave is off for topics matching quiet.*: subscribe without presence: true";
    expect(await ask(c, { type: "subscribe", topic: "quiet.a", info: { x: 1 }, id: 1 })).toEqual(refusal(noInfo, 1));
    expect(await ask(c, { type: "subscribe", topic: "quiet.a", presence: true, id: 2 })).toEqual(refusal(noJoinLeave, 2));
    expect(await ask(c, { type: "subscribe", topic: "quiet.a", presence: true, info: { x: 1 }, id: 3 })).toEqual(refusal(noInfo, 3));
    // presence: false asked for explicitly is a plain subscribe.
    expect(await ask(c, { type: "subscribe", topic: "quiet.a", presence: false, id: 4 })).toEqual({ type: "subscribed", topic: "quiet.a", epoch: EPOCH, offset: 0, id: 4 });
    const off = "presence is off for topics matching quiet.*";
    expect(await ask(c, { type: "presence", topic: "quiet.a", id: 5 })).toEqual(refusal(off, 5));
    expect(await ask(c, { type: "presence_stats", topic: "quiet.a", id: 6 })).toEqual(refusal(off, 6));
    expect(await http(s, "GET", "/api/presence?topic=quiet.a")).toEqual([400, { error: off }]);
    expect(await http(s, "GET", "/api/presence_stats?topic=quiet.a")).toEqual([400, { error: off }]);
    expect(metric(s, "switchboard_presence_entries")).toBe(0);
    // The topic list still answers, with no cluster-wide count for it (the first version refused the whole list).
    expect(await http(s, "GET", "/api/topics?prefix=quiet.")).toEqual([200, { topics: [{ topic: "quiet.a", local: 1, cluster: null }] }]);

    // A refused subscribe subscribed nothing: a publish to that topic never reaches the refused client.
    const r = await open(s);
    await subscribe(r, "plain.r");
    expect(await ask(r, { type: "subscribe", topic: "quiet.b", info: { y: 2 }, id: 7 })).toEqual({ type: "error", code: "not_available", message: noInfo, id: 7 });
    expect(s.topics.localInterest("quiet.b")).toBe(0);
    expect(await http(s, "POST", "/api/publish", { topic: "quiet.b", data: "lost" })).toEqual([200, { status: "published", topic: "quiet.b", offset: 1 }]);
    expect(await http(s, "POST", "/api/publish", { topic: "plain.r", data: "seen" })).toEqual([200, { status: "published", topic: "plain.r", offset: 1 }]);
    expect(await next(r)).toEqual({ type: "message", topic: "plain.r", data: "seen", offset: 1 });
    // The subscriber of quiet.a gets messages as usual.
    expect(await http(s, "POST", "/api/publish", { topic: "quiet.a", data: "hello" })).toEqual([200, { status: "published", topic: "quiet.a", offset: 1 }]);
    expect(await next(c)).toEqual({ type: "message", topic: "quiet.a", data: "hello", offset: 1 });
    await nothingMore(c);
    await nothingMore(r);
  });

  test("joinLeave: false refuses presence: true, keeps presence, and its members hear no join/leave while others come and go", async () => {
    const s = server();
    const m = await open(s);
    const mId = newestId(s);
    expect(await ask(m, { type: "subscribe", topic: "lobby.a", presence: true, id: 1 })).toEqual({
      type: "error",
      code: "not_available",
      message: "join/leave is off for topics matching lobby.*: subscribe without presence: true",
      id: 1,
    });
    expect(await ask(m, { type: "subscribe", topic: "lobby.a", info: { name: "m" }, id: 2 })).toEqual({ type: "subscribed", topic: "lobby.a", epoch: EPOCH, offset: 0, id: 2 });
    await subscribe(m, "room", { presence: true }); // a topic whose join/leave m does hear
    const eventsBefore = metric(s, "switchboard_presence_events_total");

    // Others come and go on lobby.a: subscribe (with info), unsubscribe, close.
    const o1 = await open(s);
    const o1Id = newestId(s);
    const o2 = await open(s);
    await subscribe(o1, "lobby.a", { info: { name: "o1" } });
    await subscribe(o2, "lobby.a");
    expect(await ask(m, { type: "presence", topic: "lobby.a", id: 3 })).toEqual({
      type: "presence",
      topic: "lobby.a",
      clients: [
        { connectionId: mId, user: null, info: { name: "m" } },
        { connectionId: o1Id, user: null, info: { name: "o1" } },
        { connectionId: newestId(s), user: null },
      ],
      id: 3,
    });
    expect(await ask(o1, { type: "unsubscribe", topic: "lobby.a", id: 4 })).toEqual({ type: "unsubscribed", topic: "lobby.a", id: 4 });
    const open_ = s.gateway.connections.size;
    o2.close();
    await within(o2.closed, 3000, "o2 closed");
    await until(() => s.gateway.connections.size === open_ - 1, 3000, "the server to see o2 close");
    expect(await http(s, "GET", "/api/presence_stats?topic=lobby.a")).toEqual([200, { topic: "lobby.a", clients: 1, users: 0 }]);

    // Then someone joins room: that join is m's next frame, so no join/leave of lobby.a was sent before it.
    const x = await open(s);
    const xId = newestId(s);
    await subscribe(x, "room");
    expect(await next(m)).toEqual({ type: "join", topic: "room", client: { connectionId: xId, user: null } });
    expect(metric(s, "switchboard_presence_events_total")).toBe(eventsBefore + 1); // lobby.a's churn announced nothing
    await nothingMore(m);
  });
});

describe("per-topic history", () => {
  test("{size: 3} keeps the last 3 (socket and HTTP); the environment's size still holds for other topics", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    await subscribe(sub, "short.a");
    await subscribe(sub, "plain.h");
    for (const topic of ["short.a", "plain.h"]) {
      for (let n = 1; n <= 5; n++) {
        expect(await ask(pub, { type: "publish", topic, data: { n }, id: n })).toEqual({ type: "ack", id: n, offset: n });
        expect(await next(sub)).toEqual({ type: "message", topic, data: { n }, offset: n });
      }
    }
    const last3 = [3, 4, 5].map((n) => ({ offset: n, data: { n } }));
    expect(await ask(sub, { type: "history", topic: "short.a", id: "h" })).toEqual({ type: "history", topic: "short.a", epoch: EPOCH, offset: 5, messages: last3, id: "h" });
    expect(await ask(sub, { type: "history", topic: "short.a", limit: 2, id: "h2" })).toEqual({ type: "history", topic: "short.a", epoch: EPOCH, offset: 5, messages: last3.slice(1), id: "h2" });
    expect(await http(s, "GET", "/api/history?topic=short.a")).toEqual([200, { topic: "short.a", epoch: EPOCH, offset: 5, messages: last3 }]);
    const all5 = [1, 2, 3, 4, 5].map((n) => ({ offset: n, data: { n } }));
    expect(await ask(sub, { type: "history", topic: "plain.h", id: "p" })).toEqual({ type: "history", topic: "plain.h", epoch: EPOCH, offset: 5, messages: all5, id: "p" });
    await nothingMore(sub);
  });

  test("history: false: no offsets anywhere, history requests not_available (socket and HTTP)", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    expect(await ask(sub, { type: "subscribe", topic: "live.a", id: 1 })).toEqual({ type: "subscribed", topic: "live.a", id: 1 });
    expect(await ask(pub, { type: "publish", topic: "live.a", data: { n: 1, x: 2 }, id: 2 })).toEqual({ type: "ack", id: 2 });
    expect(await next(sub)).toEqual({ type: "message", topic: "live.a", data: { n: 1 } });
    expect(await ask(pub, { type: "publish", topic: "live.a", data: { n: "1" }, id: 3 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: refusedBy("live.*", "data.n: Invalid input: expected number, received string"),
      id: 3,
    });
    expect(await http(s, "POST", "/api/publish", { topic: "live.a", data: { n: 2 } })).toEqual([200, { status: "published", topic: "live.a" }]);
    expect(await next(sub)).toEqual({ type: "message", topic: "live.a", data: { n: 2 } });
    const off = "history is off for topics matching live.*";
    expect(await ask(sub, { type: "history", topic: "live.a", id: 4 })).toEqual({ type: "error", code: "not_available", message: off, id: 4 });
    expect(await http(s, "GET", "/api/history?topic=live.a")).toEqual([400, { error: off }]);
    await nothingMore(sub);
  });

  test("with HISTORY_SIZE=0 a topic's own history works; other topics have none", async () => {
    const defs = defineTopics({ "kept.*": { history: { size: 2 } } });
    const s = server({ HISTORY_SIZE: 0 }, defs);
    const c = await open(s);
    expect(await ask(c, { type: "subscribe", topic: "kept.a", id: 1 })).toEqual({ type: "subscribed", topic: "kept.a", epoch: EPOCH, offset: 0, id: 1 });
    expect(await ask(c, { type: "subscribe", topic: "other", id: 2 })).toEqual({ type: "subscribed", topic: "other", id: 2 });
    for (let n = 1; n <= 3; n++) {
      expect(await http(s, "POST", "/api/publish", { topic: "kept.a", data: n })).toEqual([200, { status: "published", topic: "kept.a", offset: n }]);
      expect(await next(c)).toEqual({ type: "message", topic: "kept.a", data: n, offset: n });
    }
    expect(await ask(c, { type: "history", topic: "kept.a", id: 3 })).toEqual({
      type: "history",
      topic: "kept.a",
      epoch: EPOCH,
      offset: 3,
      messages: [{ offset: 2, data: 2 }, { offset: 3, data: 3 }],
      id: 3,
    });
    expect(await http(s, "POST", "/api/publish", { topic: "other", data: 1 })).toEqual([200, { status: "published", topic: "other" }]);
    expect(await next(c)).toEqual({ type: "message", topic: "other", data: 1 });
    expect(await ask(c, { type: "history", topic: "other", id: 4 })).toEqual({ type: "error", code: "not_available", message: "history is off on this server (HISTORY_SIZE=0)", id: 4 });
    expect(await http(s, "GET", "/api/history?topic=other")).toEqual([400, { error: "history is off on this server (HISTORY_SIZE=0)" }]);
    await nothingMore(c);
  });
});

describe("on Redis: two nodes with the same definitions", () => {
  test("invalid_data on node A reaches nothing on node B and takes no offset; per-topic history sizes hold on Redis", async () => {
    const a = server({ REDIS_URL: redis.url });
    const b = server({ REDIS_URL: redis.url });
    await until(() => a.gateway.readiness().ready && b.gateway.readiness().ready, 5000, "both nodes ready");
    const onB = await open(b);
    const onA = await open(a);
    const run = crypto.randomUUID().slice(0, 8); // topics of this run only, whatever Redis holds
    const [chat, short, live] = [`chat.${run}`, `short.${run}`, `live.${run}`];
    expect(await subscribe(onB, chat)).toEqual({ type: "subscribed", topic: chat, epoch: expect.any(String), offset: 0, id: `s:${chat}` });
    await subscribe(onB, short);
    expect(await subscribe(onB, live)).toEqual({ type: "subscribed", topic: live, id: `s:${live}` });

    expect(await ask(onA, { type: "publish", topic: chat, data: { text: 5 }, id: 1 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: refusedBy("chat.*", "data.text: Invalid input: expected string, received number"),
      id: 1,
    });
    expect(await http(a, "POST", "/api/publish", { topic: chat, data: { text: "" } })).toEqual([400, { error: refusedBy("chat.*", "data.text: Too small: expected string to have >=1 characters") }]);
    expect(await ask(onA, { type: "publish", topic: chat, data: { text: "ok", extra: 1 }, id: 2 })).toEqual({ type: "ack", id: 2, offset: 1 });
    expect(await next(onB, 5000)).toEqual({ type: "message", topic: chat, data: { text: "ok", mood: "calm" }, offset: 1 });

    for (let n = 1; n <= 5; n++) {
      expect(await ask(onA, { type: "publish", topic: short, data: { n }, id: n })).toEqual({ type: "ack", id: n, offset: n });
      expect(await next(onB, 5000)).toEqual({ type: "message", topic: short, data: { n }, offset: n });
    }
    const last3 = [3, 4, 5].map((n) => ({ offset: n, data: { n } }));
    expect(await ask(onB, { type: "history", topic: short, id: "h" })).toEqual({ type: "history", topic: short, epoch: expect.any(String), offset: 5, messages: last3, id: "h" });
    expect(await http(b, "GET", `/api/history?topic=${short}`)).toEqual([200, { topic: short, epoch: expect.any(String), offset: 5, messages: last3 }]);

    expect(await ask(onA, { type: "publish", topic: live, data: { n: "x" }, id: 6 })).toMatchObject({ type: "error", code: "invalid_data", id: 6 });
    expect(await ask(onA, { type: "publish", topic: live, data: { n: 1, y: 2 }, id: 7 })).toEqual({ type: "ack", id: 7 });
    expect(await next(onB, 5000)).toEqual({ type: "message", topic: live, data: { n: 1 } });
    expect(await ask(onB, { type: "history", topic: live, id: 8 })).toEqual({ type: "error", code: "not_available", message: "history is off for topics matching live.*", id: 8 });
    await nothingMore(onB);
  });
});

describe("50 clients at once", () => {
  test("subscribes and good and bad publishes interleaved: each gets exactly its valid messages in order; bad ones reach no one", async () => {
    const s = server();
    const N = 50;
    const OWN = 20; // per client to its own topic, every other one invalid
    const SHARED = 10; // per client to race.all, every other one invalid
    const cs = await Promise.all(Array.from({ length: N }, () => open(s)));
    await Promise.all(cs.map((c) => subscribe(c, "race.all")));
    // Every client's frames are sent in the same tick, step by step across clients, so the server interleaves them.
    for (let step = 0; step <= OWN; step++) {
      cs.forEach((c, i) => {
        if (step === 0) return c.send({ type: "subscribe", topic: `race.${i}`, id: "sub" });
        const k = step - 1;
        c.send({ type: "publish", topic: `race.${i}`, data: k % 2 === 0 ? { from: i, seq: k } : { from: i, seq: `bad${k}` }, id: `o${k}` });
        if (k < SHARED) c.send({ type: "publish", topic: "race.all", data: k % 2 === 0 ? { from: i, seq: k } : { from: i, seq: k + 0.5 }, id: `a${k}` });
      });
    }
    const validShared = N * (SHARED / 2);
    const expected = 1 + OWN + SHARED + OWN / 2 + validShared;
    const received = await Promise.all(
      cs.map(async (c) => {
        const frames: ServerFrame[] = [];
        for (let i = 0; i < expected; i++) frames.push(await c.json(10_000));
        return frames;
      }),
    );
    const sharedAcks = new Map<number, unknown>();
    let sharedStream: MessageFrame[] | undefined;
    received.forEach((frames, i) => {
      const own = `race.${i}`;
      const replies = frames.filter((f) => f.type === "ack" || f.type === "error" || f.type === "subscribed");
      expect(replies).toHaveLength(1 + OWN + SHARED);
      expect(replies[0]).toEqual({ type: "subscribed", topic: own, epoch: EPOCH, offset: 0, id: "sub" });
      const ownReplies = replies.filter((f) => "id" in f && String(f.id).startsWith("o"));
      expect(ownReplies).toEqual(
        Array.from({ length: OWN }, (_, k) =>
          k % 2 === 0
            ? { type: "ack", id: `o${k}`, offset: k / 2 + 1 }
            : { type: "error", code: "invalid_data", message: refusedBy("race.*", "data.seq: Invalid input: expected number, received string"), id: `o${k}` },
        ),
      );
      const shared = replies.filter((f) => "id" in f && String(f.id).startsWith("a"));
      expect(shared).toHaveLength(SHARED);
      shared.forEach((f, k) => {
        if (k % 2 === 1) {
          expect(f).toEqual({ type: "error", code: "invalid_data", message: refusedBy("race.*", "data.seq: Invalid input: expected int, received number"), id: `a${k}` });
          return;
        }
        expect(f).toEqual({ type: "ack", id: `a${k}`, offset: expect.any(Number) });
        const offset = (f as { offset: number }).offset;
        expect(sharedAcks.has(offset)).toBe(false);
        sharedAcks.set(offset, { from: i, seq: k });
      });
      // Its own topic: exactly its valid messages, in order, offsets 1..10, and only after its subscribed.
      const firstOwnMessage = frames.findIndex((f) => f.type === "message" && f.topic === own);
      expect(firstOwnMessage).toBeGreaterThan(frames.indexOf(replies[0]!));
      expect(frames.filter((f) => f.type === "message" && f.topic === own)).toEqual(
        Array.from({ length: OWN / 2 }, (_, j) => ({ type: "message", topic: own, data: { from: i, seq: 2 * j }, offset: j + 1 })),
      );
      // race.all: every valid message of every client, no invalid one, at offsets 1..250 in order: the same stream for all.
      const stream = frames.filter((f): f is MessageFrame => f.type === "message" && f.topic === "race.all");
      expect(stream.map((f) => f.offset)).toEqual(Array.from({ length: validShared }, (_, j) => j + 1));
      expect(frames.filter((f) => f.type === "message" && f.topic !== own && f.topic !== "race.all")).toEqual([]);
      if (sharedStream === undefined) sharedStream = stream;
      else expect(stream).toEqual(sharedStream);
    });
    // Each ack's offset is the message at that offset in the stream everyone received.
    expect(sharedAcks.size).toBe(validShared);
    for (const [j, f] of (sharedStream ?? []).entries()) expect(f.data as unknown).toEqual(sharedAcks.get(j + 1));
    // Per sender, race.all kept its order.
    for (let i = 0; i < N; i++) {
      const seqs = (sharedStream ?? []).map((f) => f.data as { from: number; seq: number }).filter((d) => d.from === i).map((d) => d.seq);
      expect(seqs).toEqual([0, 2, 4, 6, 8]);
    }
    // Everything is accounted for: nothing else is on its way to anyone.
    await Promise.all(cs.map((c) => nothingMore(c)));
    expect(metric(s, "switchboard_publishes_total")).toBe(N * (OWN / 2) + validShared);
  });
});

describe("schemas whose output is not JSON, or that throw", () => {
  test("an output JSON cannot hold (a BigInt): invalid_data naming the definition, nothing delivered, no offset taken", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    await subscribe(sub, "big.a");
    const notJson = "the output of the schema of big.* is not JSON: JSON.stringify cannot serialize BigInt.";
    expect(await ask(pub, { type: "publish", topic: "big.a", data: { n: 101 }, id: 1 })).toEqual({ type: "error", code: "invalid_data", message: notJson, id: 1 });
    expect(await http(s, "POST", "/api/publish", { topic: "big.a", data: { n: 101 } })).toEqual([400, { error: notJson }]);
    expect(await ask(pub, { type: "publish", topic: "big.a", data: { n: 1 }, id: 2 })).toEqual({ type: "ack", id: 2, offset: 1 });
    expect(await next(sub)).toEqual({ type: "message", topic: "big.a", data: { n: 1 }, offset: 1 });
    await nothingMore(sub);
  });

  // A schema whose output is `undefined` (also a function or a symbol): JSON.stringify returns undefined rather
  // than throwing, so the first version sent `{"type":"message",...,"data":undefined}` (not JSON) to every
  // subscriber, stored it, and acked it.
  test("an output of undefined: invalid_data, nothing delivered, no offset taken", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    await subscribe(sub, "void.a");
    expect(await ask(pub, { type: "publish", topic: "void.a", data: { n: 101 }, id: 1 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: expect.stringMatching(/^the output of the schema of void\.\* is not JSON: /),
      id: 1,
    });
    expect(await http(s, "POST", "/api/publish", { topic: "void.a", data: { n: 101 } })).toEqual([400, { error: expect.stringMatching(/^the output of the schema of void\.\* is not JSON: /) }]);
    expect(await ask(pub, { type: "publish", topic: "void.a", data: { n: 1 }, id: 2 })).toEqual({ type: "ack", id: 2, offset: 1 });
    // Every frame the subscriber got is JSON, and the first is the valid message.
    expect(JSON.parse(await sub.text())).toEqual({ type: "message", topic: "void.a", data: { n: 1 }, offset: 1 });
    expect(await http(s, "GET", "/api/history?topic=void.a")).toEqual([200, { topic: "void.a", epoch: EPOCH, offset: 1, messages: [{ offset: 1, data: { n: 1 } }] }]);
    await nothingMore(sub);
  });

  // A throwing schema is the definition's bug, refused like bad data: the first version closed the socket with
  // 1011 (whose policy is "retry": a client whose data always trips it would reconnect forever) and answered
  // HTTP 500 with the exception's text as text/plain.
  test("a schema that throws: invalid_data on the socket (which stays open) and 400 over HTTP; nothing is delivered", async () => {
    const s = server();
    const sub = await open(s);
    const pub = await open(s);
    await subscribe(sub, "throws.a");
    expect(await ask(pub, { type: "publish", topic: "throws.a", data: { n: 101 }, id: 1 })).toEqual({
      type: "error",
      code: "invalid_data",
      message: "the schema of throws.* failed: schema exploded",
      id: 1,
    });
    expect(await http(s, "POST", "/api/publish", { topic: "throws.a", data: { n: 101 } })).toEqual([400, { error: "the schema of throws.* failed: schema exploded" }]);
    expect(await ask(pub, { type: "ping", id: 2 })).toEqual({ type: "pong", id: 2 });
    expect(await http(s, "POST", "/api/publish", { topic: "throws.a", data: { n: 1 } })).toEqual([200, { status: "published", topic: "throws.a", offset: 1 }]);
    expect(await next(sub)).toEqual({ type: "message", topic: "throws.a", data: { n: 1 }, offset: 1 });
    await nothingMore(sub);
  });
});
