// The server API's commands and presence routes (issue 11): POST /api/disconnect and POST /api/unsubscribe reach
// every node through the broker's control channel (memory: this process; Redis: `sb:$ctl`), GET /api/presence and
// GET /api/presence_stats answer as the socket requests do. Real servers, real sockets, a real redis-server.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { SignJWT } from "jose";
import { connect, type SwitchboardClient } from "../src/client.ts";
import type { RedisBroker } from "../src/broker/redis.ts";
import { Client, recordEvents, serve, stopAll, until, within, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const KEY = "control-api-test-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };
const SECRET = "control-api-test-secret-of-32-characters-or-more";
const KICKED = { code: 4003, reason: "disconnected by server" };
const TOPIC_RULE = "must be 1-200 characters of letters, digits and . _ - : /";
const MISSING = "Invalid input: expected string, received undefined";

let redis: TestRedis;
/** Sockets and typed clients opened by the current test, closed after it. */
const clients: Client[] = [];
const typed: SwitchboardClient[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const c of typed.splice(0)) c.close();
  await stopAll();
});
afterAll(async () => {
  await stopAll();
  if (redis.owned) await redis.stop();
});

/** [status, parsed body] of a request to the API (`body` undefined: none). */
async function call(server: TestServer, method: string, path: string, body?: unknown, headers: Record<string, string> = AUTH): Promise<[number, unknown]> {
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return [res.status, await res.json()];
}

const token = (sub: string) =>
  new SignJWT({ sub, topics: { subscribe: ["*"], publish: ["*"] } })
    .setProtectedHeader({ alg: "HS256" })
    .setExpirationTime("1h")
    .sign(new TextEncoder().encode(SECRET));

/** A /connect socket of user `sub` (a token with every topic), its welcome consumed; `id` is its connectionId. */
async function userOn(server: TestServer, sub: string): Promise<{ c: Client; id: string }> {
  const c = await Client.open(`${server.ws()}?token=${await token(sub)}`);
  clients.push(c);
  const welcome = await c.json();
  if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
  return { c, id: welcome.connectionId };
}

async function subscribe(c: Client, topic: string, extra: Record<string, unknown> = {}): Promise<void> {
  expect(await c.request({ type: "subscribe", topic, ...extra })).toMatchObject({ type: "subscribed", topic });
}

/** Nothing more reached `c`: its next frame is the pong to a ping sent now (frames keep their order). */
async function nothingMore(c: Client): Promise<void> {
  expect(await c.request({ type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
}

/** A node on the test's Redis with tokens and the API on, once /readyz says so (its control channel heard). */
async function node(overrides: Parameters<typeof serve>[0] = {}): Promise<TestServer> {
  const server = serve({ REDIS_URL: redis.url, API_KEY: KEY, AUTH_SECRET: SECRET, ...overrides });
  await until(async () => (await fetch(`http://127.0.0.1:${server.port}/readyz`)).status === 200, 10_000, "node ready (/readyz 200)");
  return server;
}

/** Two nodes on the test's Redis, each with a connection of ann and one of bob. */
async function twoNodes() {
  const a = await node();
  const b = await node();
  return { a, b, annA: await userOn(a, "ann"), annB: await userOn(b, "ann"), bobA: await userOn(a, "bob"), bobB: await userOn(b, "bob") };
}

/** A sample of /metrics, by its exact name and labels. */
const sample = (server: TestServer, series: string): number | undefined => {
  const line = server.gateway.renderMetrics().split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe("POST /api/disconnect", () => {
  test("one node (memory): by user closes every connection of that user with 4003, by connectionId one; the count is this node's", async () => {
    const server = serve({ API_KEY: KEY, AUTH_SECRET: SECRET });
    const [ann1, ann2, bob] = [await userOn(server, "ann"), await userOn(server, "ann"), await userOn(server, "bob")];
    expect(await call(server, "POST", "/api/disconnect", { user: "ann" })).toEqual([200, { status: "sent", closed: 2 }]);
    expect(await within(ann1.c.closed, 3000, "ann1 closed")).toEqual(KICKED);
    expect(await within(ann2.c.closed, 3000, "ann2 closed")).toEqual(KICKED);
    await nothingMore(bob.c);
    // Nobody left to close: the answer is the same command, acting on nothing.
    expect(await call(server, "POST", "/api/disconnect", { user: "ann" })).toEqual([200, { status: "sent", closed: 0 }]);
    expect(await call(server, "POST", "/api/disconnect", { connectionId: "nobody-1" })).toEqual([200, { status: "sent", closed: 0 }]);
    expect(await call(server, "POST", "/api/disconnect", { connectionId: bob.id })).toEqual([200, { status: "sent", closed: 1 }]);
    expect(await within(bob.c.closed, 3000, "bob closed")).toEqual(KICKED);
    expect(sample(server, 'switchboard_closes_total{code="4003"}')).toBe(3);
    expect(server.gateway.registry.ofUser("ann").size).toBe(0);
  });

  test("open mode: connections have no user, so only a connectionId names them", async () => {
    const server = serve({ API_KEY: KEY });
    const c = await Client.open(server.ws());
    clients.push(c);
    const welcome = await c.json();
    expect(await call(server, "POST", "/api/disconnect", { user: "anyone" })).toEqual([200, { status: "sent", closed: 0 }]);
    await nothingMore(c);
    expect(await call(server, "POST", "/api/disconnect", { connectionId: (welcome as { connectionId: string }).connectionId })).toEqual([200, { status: "sent", closed: 1 }]);
    expect(await within(c.closed, 3000, "closed")).toEqual(KICKED);
  });

  test("two nodes on Redis: by user and by connectionId, a command sent to either node closes the matching connections on both", async () => {
    const { a, b, annA, annB, bobA, bobB } = await twoNodes();
    // Sent to A: A closes its own (the count), B closes its own when the command arrives.
    expect(await call(a, "POST", "/api/disconnect", { user: "ann" })).toEqual([200, { status: "sent", closed: 1 }]);
    expect(await within(annA.c.closed, 3000, "ann on A closed")).toEqual(KICKED);
    expect(await within(annB.c.closed, 3000, "ann on B closed")).toEqual(KICKED);
    await nothingMore(bobA.c);
    await nothingMore(bobB.c);
    // A connection of B named to A: A acts on nothing, B on that one connection.
    expect(await call(a, "POST", "/api/disconnect", { connectionId: bobB.id })).toEqual([200, { status: "sent", closed: 0 }]);
    expect(await within(bobB.c.closed, 3000, "bob on B closed")).toEqual(KICKED);
    await nothingMore(bobA.c);
    expect(await call(b, "POST", "/api/disconnect", { connectionId: bobA.id })).toEqual([200, { status: "sent", closed: 0 }]);
    expect(await within(bobA.c.closed, 3000, "bob on A closed")).toEqual(KICKED);
    const [brokerA, brokerB] = [a.broker as RedisBroker, b.broker as RedisBroker];
    expect([brokerA.counters.control_sent, brokerA.counters.control_received]).toEqual([2, 1]);
    expect([brokerB.counters.control_sent, brokerB.counters.control_received]).toEqual([1, 2]);
  });

  test("a command from another node is checked where it arrives: garbage is counted and dropped, a valid one applied", async () => {
    const { a, annA, bobA } = await twoNodes();
    const broker = a.broker as RedisBroker;
    // What another node (id "other") would send, PUBLISHed on Redis itself.
    for (const payload of ["other|{not json", 'other|{"type":"disconnect"}', 'other|{"type":"explode","user":"ann"}', 'other|{"type":"unsubscribe","user":"ann","topic":"bad topic"}']) {
      await redis.command("PUBLISH", ["sb:$ctl", payload]);
    }
    await redis.command("PUBLISH", ["sb:$ctl", 'other|{"type":"disconnect","user":"ann"}']);
    expect(await within(annA.c.closed, 3000, "ann on A closed")).toEqual(KICKED);
    expect([broker.counters.control_invalid, broker.counters.control_received]).toEqual([4, 1]);
    expect(sample(a, "switchboard_redis_control_invalid_total")).toBe(4);
    await nothingMore(bobA.c);
  });

  test("the typed client follows the Close table: after 4003 it stops, even with a token function", async () => {
    const a = await node();
    const b = await node();
    const client = connect(b.url, { token: () => token("cat"), reconnect: { baseMs: 10, capMs: 50 } });
    typed.push(client);
    const events = recordEvents(client);
    await within(client.ready(), 5000, "the typed client open");
    expect(await call(a, "POST", "/api/disconnect", { user: "cat" })).toEqual([200, { status: "sent", closed: 0 }]);
    await until(() => events.close.length === 1, 3000, "the close event");
    expect(events.close).toEqual([{ ...KICKED, willReconnect: false }]);
    expect(events.reconnecting).toEqual([]);
    expect(client.state).toBe("closed");
    expect(await client.ready().then(() => "open", (e: Error) => e.message)).toBe("connection closed (4003 disconnected by server) and not reconnecting");
    expect(b.gateway.registry.ofUser("cat").size).toBe(0);
  });
});

describe("POST /api/unsubscribe", () => {
  test("by user across nodes: exact frames, no message of the topic after them, other topics and users untouched, a watcher sees the leave", async () => {
    const { a, b, annA, annB, bobA, bobB } = await twoNodes();
    await subscribe(bobA.c, "room", { presence: true }); // first: it hears the others join, on both nodes
    await subscribe(annA.c, "room", { info: { name: "ann" } });
    await subscribe(annA.c, "other");
    await subscribe(annB.c, "room");
    await subscribe(bobB.c, "room");
    const annOnA = { connectionId: annA.id, user: "ann", info: { name: "ann" } };
    const annOnB = { connectionId: annB.id, user: "ann" };
    const bobOnB = { connectionId: bobB.id, user: "bob" };
    const byId = (x: { connectionId: string }, y: { connectionId: string }) => x.connectionId.localeCompare(y.connectionId);
    const events = async (n: number) => {
      const got: { type: string; client: { connectionId: string } }[] = [];
      for (let i = 0; i < n; i++) got.push((await bobA.c.json()) as (typeof got)[number]); // one at a time: one waiter
      return got;
    };
    // Presence is cluster-wide: joins made on either node reach the watcher once each (their order across
    // nodes is not promised).
    const joins = await events(3);
    expect(joins.every((e) => e.type === "join")).toBe(true);
    expect(joins.map((e) => e.client).toSorted(byId)).toEqual([annOnA, annOnB, bobOnB].toSorted(byId));

    expect(await call(b, "POST", "/api/unsubscribe", { user: "ann", topic: "room" })).toEqual([200, { status: "sent", unsubscribed: 1 }]);
    expect(await annB.c.text()).toBe('{"type":"unsubscribed","topic":"room","reason":"server"}');
    expect(await annA.c.text()).toBe('{"type":"unsubscribed","topic":"room","reason":"server"}');
    // The watcher hears both of ann's connections leave, exactly as after her own unsubscribes.
    const leaves = await events(2);
    expect(leaves.every((e) => e.type === "leave")).toBe(true);
    expect(leaves.map((e) => e.client).toSorted(byId)).toEqual([annOnA, annOnB].toSorted(byId));
    const [status, body] = await call(a, "GET", "/api/presence?topic=room");
    expect([status, (body as { clients: { connectionId: string }[] }).clients.toSorted(byId)]).toEqual([200, [{ connectionId: bobA.id, user: "bob" }, bobOnB].toSorted(byId)]);

    // A message of the room reaches bob on both nodes and neither ann: once bob has it on a node, so would ann there.
    expect(await call(a, "POST", "/api/publish", { topic: "room", data: "after" })).toMatchObject([200, { status: "published" }]);
    expect(await bobA.c.json()).toMatchObject({ type: "message", topic: "room", data: "after" });
    expect(await bobB.c.json()).toMatchObject({ type: "message", topic: "room", data: "after" });
    await nothingMore(annA.c);
    await nothingMore(annB.c);
    // ann keeps her other topic; the room is not hers any more (a second command finds nothing to do).
    expect(await call(b, "POST", "/api/publish", { topic: "other", data: "still" })).toMatchObject([200, { status: "published" }]);
    expect(await annA.c.json()).toMatchObject({ type: "message", topic: "other", data: "still" });
    expect(await annA.c.request({ type: "unsubscribe", topic: "room", id: 1 })).toMatchObject({ type: "error", code: "not_subscribed", id: 1 });
    expect(await call(a, "POST", "/api/unsubscribe", { user: "ann", topic: "room" })).toEqual([200, { status: "sent", unsubscribed: 0 }]);
    await nothingMore(annB.c);

    // By connectionId, across nodes: bob on B only.
    expect(await call(a, "POST", "/api/unsubscribe", { connectionId: bobB.id, topic: "room" })).toEqual([200, { status: "sent", unsubscribed: 0 }]);
    expect(await bobB.c.text()).toBe('{"type":"unsubscribed","topic":"room","reason":"server"}');
    expect(await bobA.c.json()).toEqual({ type: "leave", topic: "room", client: bobOnB });
    await nothingMore(bobA.c);
    expect(a.topics.localInterest("room")).toBe(1);
    expect(b.topics.localInterest("room")).toBe(0);
  });

  test("a subscription still waiting for a frozen Redis: answered first (subscribed, then unsubscribed) as for the client's own unsubscribe; 503 once the stall is seen", async () => {
    if (!redis.owned) return; // cannot freeze a shared Redis
    const a = await node();
    const ann = await userOn(a, "ann");
    // Frozen: the subscribe waits for its SUBSCRIBE reply, until the node sees the stall (REDIS_TIMEOUT_MS, 2 s).
    redis.signal("SIGSTOP");
    try {
      ann.c.send({ type: "subscribe", topic: "late", id: 7 });
      await until(() => a.topics.localInterest("late") === 1, 1000, "the subscribe pending");
      const [conn] = a.gateway.registry.ofUser("ann");
      expect(conn!.topics!.get("late")).toMatchObject({ replies: [7] });
      // The node still believes Redis is there: it applies the command, then its PUBLISH hangs until the stall.
      const sent = call(a, "POST", "/api/unsubscribe", { connectionId: ann.id, topic: "late" });
      expect(await ann.c.text()).toBe('{"type":"subscribed","topic":"late","id":7}');
      expect(await ann.c.text()).toBe('{"type":"unsubscribed","topic":"late","reason":"server"}');
      expect(a.topics.localInterest("late")).toBe(0);
      expect(await within(sent, 10_000, "the answer after the stall")).toEqual([
        503,
        { error: expect.stringMatching(/^redis: .+: applied on this node; other nodes may or may not have it \(a retry is safe\)$/) },
      ]);
    } finally {
      redis.signal("SIGCONT");
    }
    await nothingMore(ann.c);
  });

  test("the typed client drops the topic and its handlers, emits `unsubscribed`, and does not resubscribe it, even after a reconnect", async () => {
    const a = await node();
    const client = connect(a.url, { token: () => token("cat"), reconnect: { baseMs: 10, capMs: 50 } });
    typed.push(client);
    const events = recordEvents(client);
    const got: unknown[] = [];
    client.subscribe("room", (data) => void got.push(data));
    client.subscribe("keep", () => {});
    await until(() => events.subscribed.length === 2, 5000, "both topics subscribed");
    expect(await call(a, "POST", "/api/publish", { topic: "room", data: "before" })).toMatchObject([200, {}]);
    await until(() => got.length === 1, 3000, "the message before");

    expect(await call(a, "POST", "/api/unsubscribe", { user: "cat", topic: "room" })).toEqual([200, { status: "sent", unsubscribed: 1 }]);
    await until(() => events.unsubscribed.length === 1, 3000, "the unsubscribed event");
    expect(events.unsubscribed).toEqual([{ topic: "room", reason: "server" }]);
    expect(events.error).toEqual([]);
    await client.ping(); // whatever the client sent on the event reached the server before the pong
    const [conn] = a.gateway.registry.ofUser("cat");
    expect([...conn!.topics!.keys()]).toEqual(["keep"]);
    expect(await call(a, "POST", "/api/publish", { topic: "room", data: "after" })).toMatchObject([200, {}]);

    // A reconnect resubscribes what the client holds: "keep", not "room".
    conn!.ws.close(1011, "internal error");
    await until(() => events.open.length === 2, 5000, "the reconnect");
    await until(() => events.subscribed.length === 3, 5000, "the resubscribe");
    expect(events.subscribed.map((e) => e.topic)).toEqual(["room", "keep", "keep"]);
    await client.ping();
    const [again] = a.gateway.registry.ofUser("cat");
    expect([...again!.topics!.keys()]).toEqual(["keep"]);
    expect(got).toEqual(["before"]);
  });
});

describe("GET /api/presence and GET /api/presence_stats", () => {
  test("the answers of the socket requests, without type and id", async () => {
    const server = serve({ API_KEY: KEY, AUTH_SECRET: SECRET });
    const ann = await userOn(server, "ann");
    const ann2 = await userOn(server, "ann");
    const bob = await userOn(server, "bob");
    await subscribe(ann.c, "room", { info: { role: "host" } });
    await subscribe(ann2.c, "room");
    await subscribe(bob.c, "room", { info: { role: "guest" } });
    const { type: _p, id: _pid, ...list } = (await bob.c.request({ type: "presence", topic: "room", id: 1 })) as Record<string, unknown>;
    const { type: _s, id: _sid, ...stats } = (await bob.c.request({ type: "presence_stats", topic: "room", id: 2 })) as Record<string, unknown>;
    expect(list).toEqual({
      topic: "room",
      clients: [
        { connectionId: ann.id, user: "ann", info: { role: "host" } },
        { connectionId: ann2.id, user: "ann" },
        { connectionId: bob.id, user: "bob", info: { role: "guest" } },
      ],
    });
    expect(stats).toEqual({ topic: "room", clients: 3, users: 2 });
    expect(await call(server, "GET", "/api/presence?topic=room")).toEqual([200, list]);
    expect(await call(server, "GET", "/api/presence_stats?topic=room")).toEqual([200, stats]);
    expect(await call(server, "GET", "/api/presence?topic=empty")).toEqual([200, { topic: "empty", clients: [] }]);
    expect(await call(server, "GET", "/api/presence_stats?topic=empty")).toEqual([200, { topic: "empty", clients: 0, users: 0 }]);
  });
});

describe("refusals of the new routes", () => {
  test("401 and 403 before the body or query is looked at; 400 with the reason; 405 naming the route", async () => {
    const server = serve({ API_KEY: KEY });
    const disabled = serve();
    const commands: [string, string, unknown][] = [
      ["/api/disconnect", '{"user": string} or {"connectionId": string}', { user: "ann" }],
      ["/api/unsubscribe", '{"user": string, "topic": string} or {"connectionId": string, "topic": string}', { user: "ann", topic: "t" }],
    ];
    const reads = ["/api/presence", "/api/presence_stats"];
    for (const [path, , body] of commands) {
      // A body that would be refused anyway gets the key's answer: the key comes first.
      expect([path, ...(await call(server, "POST", path, "{not json", {}))]).toEqual([path, 401, { error: "missing Authorization: Bearer <API_KEY>" }]);
      expect([path, ...(await call(server, "POST", path, body, { authorization: "Bearer not-the-key-at-all" }))]).toEqual([path, 401, { error: "invalid API key" }]);
      expect([path, ...(await call(disabled, "POST", path, body))]).toEqual([path, 403, { error: "HTTP API is disabled: set API_KEY on the server to enable it" }]);
    }
    for (const path of reads) {
      expect([path, ...(await call(server, "GET", `${path}?topic=bad%20topic`, undefined, {}))]).toEqual([path, 401, { error: "missing Authorization: Bearer <API_KEY>" }]);
      expect([path, ...(await call(server, "GET", `${path}?topic=t`, undefined, { authorization: "Bearer not-the-key-at-all" }))]).toEqual([path, 401, { error: "invalid API key" }]);
      expect([path, ...(await call(disabled, "GET", `${path}?topic=t`))]).toEqual([path, 403, { error: "HTTP API is disabled: set API_KEY on the server to enable it" }]);
      expect([path, ...(await call(server, "GET", `${path}?topic=bad%20topic`))]).toEqual([path, 400, { error: `topic: ${TOPIC_RULE}` }]);
      expect([path, ...(await call(server, "GET", path))]).toEqual([path, 400, { error: `topic: ${MISSING}` }]);
    }

    const ONE = "body: give exactly one of user and connectionId";
    const refusals: [string, unknown, string][] = [
      ["/api/disconnect", "{not json", 'body must be JSON: {"user": string} or {"connectionId": string}'],
      ["/api/disconnect", {}, ONE],
      ["/api/disconnect", { user: "ann", connectionId: "x-1" }, ONE],
      ["/api/disconnect", { user: "" }, "user: must be 1-1024 characters"],
      ["/api/disconnect", { connectionId: "x".repeat(65) }, "connectionId: must be 1-64 characters"],
      ["/api/unsubscribe", { user: "ann" }, `topic: ${MISSING}`],
      ["/api/disconnect", { user: 5 }, "user: Invalid input: expected string, received number"],
      ["/api/disconnect", [], "body: Invalid input: expected object, received array"],
      ["/api/unsubscribe", { user: "ann", topic: "bad topic" }, `topic: ${TOPIC_RULE}`],
      ["/api/unsubscribe", { topic: "t" }, ONE],
      ["/api/unsubscribe", { user: "ann", connectionId: "x-1", topic: "t" }, ONE],
    ];
    for (const [path, body, reason] of refusals) {
      expect([path, body, ...(await call(server, "POST", path, body))]).toEqual([path, body, 400, { error: reason }]);
    }

    for (const [path, shape] of commands) {
      for (const method of ["GET", "PUT", "PATCH", "DELETE"]) {
        const res = await fetch(`http://127.0.0.1:${server.port}${path}`, { method, headers: AUTH });
        expect([path, method, res.status, res.headers.get("allow"), await res.json()]).toEqual([path, method, 405, "POST", { error: `use POST ${path} with ${shape}` }]);
      }
    }
    for (const path of reads) {
      for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
        const res = await fetch(`http://127.0.0.1:${server.port}${path}?topic=t`, { method, headers: AUTH });
        expect([path, method, res.status, res.headers.get("allow"), await res.json()]).toEqual([path, method, 405, "GET", { error: `use GET ${path}?topic=T` }]);
      }
    }
  });

  test("Redis down: the commands answer 503 and act nowhere; once it is back, the control channel is restored on every node", async () => {
    if (!redis.owned) return; // cannot stop a shared Redis
    const { a, b, annA, annB } = await twoNodes();
    await subscribe(annA.c, "room");
    await redis.stop();
    try {
      await until(async () => (await fetch(`http://127.0.0.1:${a.port}/readyz`)).status === 503, 10_000, "A degraded");
      const unreachable = { error: expect.stringMatching(/^redis unreachable \(.+\): applied on no node$/) };
      expect(await call(a, "POST", "/api/disconnect", { user: "ann" })).toEqual([503, unreachable]);
      expect(await call(a, "POST", "/api/unsubscribe", { user: "ann", topic: "room" })).toEqual([503, unreachable]);
      // Presence lives in Redis too: its routes answer 503 while it is down.
      expect(await call(a, "GET", "/api/presence_stats?topic=room")).toEqual([503, { error: "presence store unavailable: retry later" }]);
      await nothingMore(annA.c);
    } finally {
      await redis.start();
    }
    await until(
      async () => (await Promise.all([a, b].map((n) => fetch(`http://127.0.0.1:${n.port}/readyz`)))).every((r) => r.status === 200),
      10_000,
      "both nodes ready again",
    );
    expect(await call(a, "POST", "/api/disconnect", { user: "ann" })).toEqual([200, { status: "sent", closed: 1 }]);
    expect(await within(annA.c.closed, 3000, "ann on A closed")).toEqual(KICKED);
    expect(await within(annB.c.closed, 3000, "ann on B closed")).toEqual(KICKED);
  });
});
