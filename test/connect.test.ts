// /connect: every client frame and its reply, every error code, ordering, fan-out, exact data round trips.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, connectionsOf, serve, stopAll, until, type TestServer } from "./helpers.ts";

/** An epoch as the server makes them (src/history/history.ts newEpoch): 8 base-36 characters. */
const EPOCH = /^[0-9a-z]{8}$/;
/**
 * A first subscribe's reply with history on (the default): the topic's random epoch and its last offset. A
 * repeated subscribe of an active topic is answered plainly, `{type, topic, id?}`.
 */
const subscribedAt = (topic: string, offset: number, id?: string | number) => ({
  type: "subscribed" as const,
  topic,
  epoch: expect.stringMatching(EPOCH),
  offset,
  ...(id === undefined ? {} : { id }),
});

let server: TestServer;
beforeAll(() => {
  server = serve({ PING_INTERVAL_MS: 5000, PING_WAIT_MS: 10000, MAX_TOPICS_PER_CONNECTION: 3 });
});
afterAll(stopAll);

describe("welcome", () => {
  test("is the first frame, with a connection id and the heartbeat contract", async () => {
    const client = await Client.open(server.ws("/connect"));
    const welcome = await client.json();
    expect(Object.keys(welcome)).toEqual(["type", "connectionId", "heartbeat"]);
    expect(welcome).toEqual({
      type: "welcome",
      connectionId: expect.any(String),
      heartbeat: { intervalMs: 5000, timeoutMs: 15000 },
    });
    const other = await Client.open(server.ws("/connect"));
    const second = await other.json();
    expect(second.type === "welcome" && welcome.type === "welcome" && second.connectionId !== welcome.connectionId).toBe(true);
    client.close();
    other.close();
  });
});

describe("subscribe / unsubscribe", () => {
  test("subscribed / unsubscribed, with string and numeric ids", async () => {
    const c = await Client.connect(server);
    // The exact text, key order included; the epoch is random, so it is read from the reply first.
    c.send({ type: "subscribe", topic: "room.1" });
    const first = await c.text();
    const epoch1 = (JSON.parse(first) as { epoch: string }).epoch;
    expect(epoch1).toMatch(EPOCH);
    expect(first).toBe(`{"type":"subscribed","topic":"room.1","epoch":"${epoch1}","offset":0}`);
    c.send({ type: "subscribe", topic: "room:2/a_b-c", id: "s-2" });
    const second = await c.text();
    const epoch2 = (JSON.parse(second) as { epoch: string }).epoch;
    expect(epoch2).toMatch(EPOCH);
    expect(second).toBe(`{"type":"subscribed","topic":"room:2/a_b-c","epoch":"${epoch2}","offset":0,"id":"s-2"}`);
    // Subscribing again to an active topic is answered plainly (no position), the id still echoed.
    c.send({ type: "subscribe", topic: "room.1", id: 3 });
    expect(await c.text()).toBe('{"type":"subscribed","topic":"room.1","id":3}');
    c.send({ type: "unsubscribe", topic: "room.1", id: 7.5 });
    expect(await c.text()).toBe('{"type":"unsubscribed","topic":"room.1","id":7.5}');
    c.send({ type: "unsubscribe", topic: "room:2/a_b-c" });
    expect(await c.text()).toBe('{"type":"unsubscribed","topic":"room:2/a_b-c"}');
    c.close();
  });

  test("subscribing twice is idempotent and counts once against the topic limit", async () => {
    const c = await Client.connect(server); // limit is 3
    // First subscribe of a topic: its position (nothing published yet); the repeat: plain.
    for (const [topic, repeat] of [["a", false], ["a", true], ["b", false], ["b", true], ["c", false]] as const) {
      expect(await c.request({ type: "subscribe", topic })).toEqual(repeat ? { type: "subscribed", topic } : subscribedAt(topic, 0));
    }
    expect(await c.request({ type: "subscribe", topic: "d", id: 1 })).toEqual({
      type: "error",
      code: "too_many_topics",
      message: "at most 3 topics per connection",
      id: 1,
    });
    // Unsubscribing frees a slot.
    expect(await c.request({ type: "unsubscribe", topic: "a" })).toEqual({ type: "unsubscribed", topic: "a" });
    expect(await c.request({ type: "subscribe", topic: "d" })).toEqual(subscribedAt("d", 0));
    // A subscribed topic is delivered once, not twice: the next frame after it is the pong of a later ping.
    c.send({ type: "publish", topic: "b", data: 1 });
    expect(await c.json()).toEqual({ type: "message", topic: "b", data: 1, offset: 1 });
    expect(await c.request({ type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
    c.close();
  });

  test("unsubscribe of a topic not held is not_subscribed, with the id", async () => {
    const c = await Client.connect(server);
    expect(await c.request({ type: "unsubscribe", topic: "never", id: "u1" })).toEqual({
      type: "error",
      code: "not_subscribed",
      message: "not subscribed to never",
      id: "u1",
    });
    c.close();
  });

  test("an unsubscribed connection no longer receives the topic", async () => {
    const c = await Client.connect(server);
    await c.request({ type: "subscribe", topic: "gone" });
    await c.request({ type: "unsubscribe", topic: "gone" });
    c.send({ type: "publish", topic: "gone", data: "x", id: 1 });
    expect(await c.json()).toEqual({ type: "ack", id: 1, offset: 1 });
    expect(await c.request({ type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
    c.close();
  });
});

describe("publish", () => {
  test("reaches every subscriber, the subscribed publisher too; ack with id", async () => {
    const pub = await Client.connect(server);
    const subs = await Promise.all(Array.from({ length: 50 }, () => Client.connect(server)));
    const outsider = await Client.connect(server);
    for (const s of [pub, ...subs]) await s.request({ type: "subscribe", topic: "fan" });
    await outsider.request({ type: "subscribe", topic: "other" });

    pub.send({ type: "publish", topic: "fan", data: { n: 1 }, id: "p1" });
    const own = [await pub.text(), await pub.text()].sort();
    // ack and own message may come in either order
    expect(own).toEqual(['{"type":"ack","id":"p1","offset":1}', '{"type":"message","topic":"fan","data":{"n":1},"offset":1}']);
    for (const s of subs) expect(await s.text()).toBe('{"type":"message","topic":"fan","data":{"n":1},"offset":1}');
    // The fan-out has reached every subscriber; had it reached the outsider, that would come before this pong.
    expect(await outsider.request({ type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
    for (const s of [pub, outsider, ...subs]) s.close();
  });

  test("an unsubscribed publisher gets only the ack; without id, nothing at all", async () => {
    const pub = await Client.connect(server);
    const sub = await Client.connect(server);
    await sub.request({ type: "subscribe", topic: "quiet" });
    pub.send({ type: "publish", topic: "quiet", data: null });
    expect(await sub.json()).toEqual({ type: "message", topic: "quiet", data: null, offset: 1 });
    expect(await pub.request({ type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
    pub.send({ type: "publish", topic: "quiet", data: false, id: 0 });
    expect(await pub.json()).toEqual({ type: "ack", id: 0, offset: 2 });
    expect(await sub.json()).toEqual({ type: "message", topic: "quiet", data: false, offset: 2 });
    pub.close();
    sub.close();
  });

  test("per topic, messages from one publisher arrive in order (1000 messages, 3 subscribers)", async () => {
    const pub = await Client.connect(server);
    const subs = await Promise.all([1, 2, 3].map(() => Client.connect(server)));
    for (const s of subs) await s.request({ type: "subscribe", topic: "seq" });
    for (let i = 0; i < 1000; i++) pub.send({ type: "publish", topic: "seq", data: i });
    for (const s of subs) {
      const got: [unknown, number | undefined][] = [];
      for (let i = 0; i < 1000; i++) {
        const frame = await s.json();
        if (frame.type === "message") got.push([frame.data, frame.offset]);
      }
      // Data in publish order, and offsets 1..1000 with it (more than HISTORY_SIZE: retention does not cap them).
      expect(got).toEqual(Array.from({ length: 1000 }, (_, i) => [i, i + 1]));
    }
    for (const s of [pub, ...subs]) s.close();
  });

  test("data is delivered exactly: numeric strings, ISO dates, unicode, nesting, __proto__ keys", async () => {
    const c = await Client.connect(server);
    await c.request({ type: "subscribe", topic: "exact" });
    const values = [
      "123",
      "00123",
      "2026-11-28T12:00:00.000Z",
      "true",
      "null",
      "",
      "héllo ✓ 😀",
      { a: [1, { b: null }], "": "x" },
      [],
      -0.5,
      1e21,
    ];
    for (const [i, data] of values.entries()) {
      c.send({ type: "publish", topic: "exact", data });
      const text = await c.text();
      expect(text).toBe(`{"type":"message","topic":"exact","data":${JSON.stringify(data)},"offset":${i + 1}}`);
    }
    // A JSON key named __proto__ is data, not a prototype: it must come back as written.
    c.send('{"type":"publish","topic":"exact","data":{"__proto__":{"polluted":true}}}');
    expect(await c.text()).toBe(`{"type":"message","topic":"exact","data":{"__proto__":{"polluted":true}},"offset":${values.length + 1}}`);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    c.close();
  });
});

describe("application ping", () => {
  test("pong echoes the id, or has no id", async () => {
    const c = await Client.connect(server);
    c.send({ type: "ping" });
    expect(await c.text()).toBe('{"type":"pong"}');
    c.send({ type: "ping", id: "x".repeat(64) });
    expect(await c.text()).toBe(`{"type":"pong","id":"${"x".repeat(64)}"}`);
    c.send({ type: "ping", id: -3 });
    expect(await c.text()).toBe('{"type":"pong","id":-3}');
    c.close();
  });
});

describe("bad input gets an error frame and the connection stays open", () => {
  const cases: [string, string, unknown][] = [
    ["invalid JSON", "{not json", { code: "invalid_json" }],
    ["truncated JSON", '{"type":"ping"', { code: "invalid_json" }],
    ["a JSON number", "123", { code: "invalid_message" }],
    ["a JSON string", '"subscribe"', { code: "invalid_message" }],
    ["null", "null", { code: "invalid_message" }],
    ["an array", "[]", { code: "invalid_message" }],
    ["unknown type", '{"type":"shout","id":"k"}', { code: "invalid_message", id: "k" }],
    ["missing type", '{"topic":"a"}', { code: "invalid_message" }],
    ["publish without data", '{"type":"publish","topic":"a","id":2}', { code: "invalid_message", id: 2 }],
    ["topic not a string", '{"type":"subscribe","topic":5,"id":3}', { code: "invalid_message", id: 3 }],
    ["topic missing", '{"type":"subscribe"}', { code: "invalid_message" }],
    ["id too long (65 chars): no id in the error", `{"type":"ping","id":"${"x".repeat(65)}"}`, { code: "invalid_message" }],
    ["id an object: no id in the error", '{"type":"ping","id":{"a":1}}', { code: "invalid_message" }],
    ["id overflowing to Infinity: no id in the error", '{"type":"ping","id":1e400}', { code: "invalid_message" }],
    ["id null", '{"type":"ping","id":null}', { code: "invalid_message" }],
    ["empty topic", '{"type":"subscribe","topic":"","id":4}', { code: "invalid_topic", id: 4 }],
    ["topic with a space", '{"type":"publish","topic":"a b","data":1,"id":5}', { code: "invalid_topic", id: 5 }],
    ["topic of 201 chars", `{"type":"subscribe","topic":"${"t".repeat(201)}"}`, { code: "invalid_topic" }],
    ["topic with unicode", '{"type":"unsubscribe","topic":"café"}', { code: "invalid_topic" }],
    ["topic with a wildcard", '{"type":"subscribe","topic":"a.*"}', { code: "invalid_topic" }],
  ];

  let c: Client;
  beforeAll(async () => {
    c = await Client.connect(server);
  });
  afterAll(() => c.close());

  for (const [name, frame, expected] of cases) {
    test(name, async () => {
      c.send(frame);
      const reply = await c.json();
      expect(reply).toEqual({ type: "error", message: expect.any(String), ...(expected as object) } as never);
      // exactly these keys: type, code, message and id only when expected
      const keys = Object.keys(reply);
      expect(keys).toEqual("id" in (expected as object) ? ["type", "code", "message", "id"] : ["type", "code", "message"]);
      // still open and answering
      expect(await c.request({ type: "ping", id: name })).toEqual({ type: "pong", id: name.slice(0, 64) } as never);
    });
  }

  test("a topic of exactly 200 chars is fine", async () => {
    const topic = "t".repeat(200);
    expect(await c.request({ type: "subscribe", topic })).toEqual(subscribedAt(topic, 0));
  });

  test("a binary frame is unsupported_binary", async () => {
    c.socket.send(new Uint8Array([123, 125]));
    expect(await c.json()).toEqual({
      type: "error",
      code: "unsupported_binary",
      message: "binary frames are not supported on /connect: send JSON text",
    });
  });

  test("a flood of garbage is answered frame by frame and leaves the connection usable", async () => {
    for (let i = 0; i < 2000; i++) c.send(i % 2 ? "}{" : '{"type":42}');
    for (let i = 0; i < 2000; i++) {
      const reply = await c.json();
      expect(reply.type === "error" && reply.code).toBe(i % 2 ? "invalid_json" : "invalid_message");
    }
    expect(await c.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
  });
});

describe("connections", () => {
  test("healthz counts open sockets on both routes, and an abrupt disconnect frees them", async () => {
    const before = await connectionsOf(server);
    const a = await Client.connect(server);
    const b = await Client.open(server.ws("/echo"));
    expect(await connectionsOf(server)).toBe(before + 2);
    (a.socket as unknown as { terminate(): void }).terminate(); // Bun extension: drop TCP, no close frame
    b.close();
    const deadline = performance.now() + 3000;
    while ((await connectionsOf(server)) !== before && performance.now() < deadline) await Bun.sleep(10);
    expect(await connectionsOf(server)).toBe(before);
  });

  test("healthz has exactly status, connections and uptimeMs", async () => {
    const res = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(body)).toEqual(["status", "connections", "uptimeMs"]);
    expect(body.status).toBe("ok");
    expect(typeof body.uptimeMs).toBe("number");
  });

  test("the Upgrade header is case-insensitive (RFC 6455): `Upgrade: WebSocket` is upgraded on both routes", async () => {
    const { RawPeer, Opcode } = await import("./helpers.ts");
    const peer = await RawPeer.connect(server.port, "/connect", { Upgrade: "WebSocket" });
    await until(() => peer.frames.length >= 1, 3000, "welcome");
    expect(JSON.parse(peer.frames[0]!.payload.toString()).type).toBe("welcome");
    peer.destroy();
    const echo = await RawPeer.connect(server.port, "/echo", { Upgrade: "WEBSOCKET" });
    echo.send(Opcode.text, "mixed case");
    await until(() => echo.frames.length >= 1, 3000, "echo");
    expect(echo.frames[0]!.payload.toString()).toBe("mixed case");
    echo.destroy();
  });

  test("a plain GET on a WebSocket route is 426 with a message; a broken upgrade is 400", async () => {
    for (const route of ["/connect", "/echo"]) {
      const plain = await fetch(`http://127.0.0.1:${server.port}${route}`);
      expect(plain.status).toBe(426);
      expect(await plain.json()).toEqual({ error: "this route speaks WebSocket: send a GET with Upgrade: websocket" });
      const broken = await fetch(`http://127.0.0.1:${server.port}${route}`, {
        headers: { upgrade: "websocket", connection: "upgrade" },
      });
      expect(broken.status).toBe(400);
      expect(await broken.json()).toEqual({
        error: "not a WebSocket handshake: Sec-WebSocket-Key and Sec-WebSocket-Version: 13 are required",
      });
    }
  });
});
