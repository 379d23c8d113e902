// The cluster view (GET /api/nodes, GET /api/topics) on real servers and a real redis-server: a memory server
// lists itself with exact figures (rates and uptime on a ManualClock), nodes on Redis list each other with live
// counts, a node that shuts down is gone at once and one killed with SIGKILL within its record's TTL, topics
// show local and cluster-wide counts, and the key, the methods and Redis down are answered like the rest of the API.
import { describe, expect, test } from "bun:test";
import { treaty } from "@elysiajs/eden";
import type { App } from "../src/app.ts";
import { ManualClock } from "../src/clock.ts";
import { MAX_LISTED_TOPICS, NODE_TTL_PERIODS, type NodeView, type TopicView } from "../src/cluster.ts";
import pkg from "../package.json" with { type: "json" };
import { Client, redisPerFile, serve, spawnEntry, until, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const KEY = "cluster-view-test-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };
/** A short period so real expiry in Redis takes a fraction of a second: records live 3 x 100 ms. */
const PERIOD = 100;
const TTL = PERIOD * NODE_TTL_PERIODS;

let redis: TestRedis;
/** Clients opened by the current test, closed after it (servers too; Redis after the file). */
const { clients } = redisPerFile(async () => (redis = await startRedis()));

async function get(port: number, path: string, headers: Record<string, string> = AUTH): Promise<[number, any]> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  return [res.status, await res.json()];
}

async function nodesOf(server: { port: number }): Promise<NodeView[]> {
  const [status, body] = await get(server.port, "/api/nodes");
  if (status !== 200) throw new Error(`GET /api/nodes: ${status} ${JSON.stringify(body)}`);
  return (body as { nodes: NodeView[] }).nodes;
}

const idsOf = async (server: { port: number }): Promise<string[]> => (await nodesOf(server)).map((n) => n.nodeId);

/** A /connect client subscribed to `topics`, closed after the test. */
async function subscriber(server: TestServer, ...topics: string[]): Promise<Client> {
  const client = await Client.connect(server);
  clients.push(client);
  for (const topic of topics) expect((await client.request({ type: "subscribe", topic })).type).toBe("subscribed");
  return client;
}

describe("unknown routes", () => {
  test("404 with a JSON reason, like every other refusal of the API", async () => {
    const server = serve({ API_KEY: KEY });
    for (const path of ["/api/nope", "/api", "/api/nodes/x"]) {
      const res = await fetch(`${server.url}${path}`, { headers: AUTH });
      expect([res.status, await res.json()]).toEqual([404, { error: `no route ${path}: see the README's Routes` }]);
    }
  });
});

describe("memory: this node alone", () => {
  test("GET /api/nodes: itself, with live connections and topics, rates over the last period, uptime on the clock", async () => {
    const clock = new ManualClock();
    const server = serve({ API_KEY: KEY, NODE_ANNOUNCE_MS: 2000 }, { clock });
    const idle = { nodeId: server.cluster.nodeId, address: server.url, version: pkg.version, self: true };
    expect(await nodesOf(server)).toEqual([{ ...idle, uptimeMs: 0, connections: 0, topics: 0, messagesInPerSec: 0, messagesOutPerSec: 0 }]);

    const one = await subscriber(server, "a", "b"); // in: 2 subscribes; out: welcome, 2 subscribed
    const two = await subscriber(server, "a"); // in: 1; out: welcome, subscribed
    for (let i = 0; i < 3; i++) expect(await one.request({ type: "ping", id: i })).toEqual({ type: "pong", id: i }); // in 3, out 3
    two.send({ type: "publish", topic: "a", data: 1 }); // in 1; 2 deliveries
    for (const c of [one, two]) expect(await c.json()).toMatchObject({ type: "message", topic: "a", data: 1 });
    // Figures are live; rates are those of the last completed period (none yet).
    expect(await nodesOf(server)).toEqual([{ ...idle, uptimeMs: 0, connections: 2, topics: 2, messagesInPerSec: 0, messagesOutPerSec: 0 }]);
    clock.advance(2000);
    // 7 frames in, 8 frames out + 2 deliveries, over 2 s.
    expect(await nodesOf(server)).toEqual([{ ...idle, uptimeMs: 2000, connections: 2, topics: 2, messagesInPerSec: 3.5, messagesOutPerSec: 5 }]);
    one.close();
    await until(() => server.gateway.connections.size === 1, 5000, "one connection closed");
    clock.advance(2000);
    expect(await nodesOf(server)).toEqual([{ ...idle, uptimeMs: 4000, connections: 1, topics: 1, messagesInPerSec: 0, messagesOutPerSec: 0 }]);
  });

  test("GET /api/topics: local topics by subscriptions, with presence counts; prefix; capped with truncated", async () => {
    const server = serve({ API_KEY: KEY, MAX_TOPICS_PER_CONNECTION: MAX_LISTED_TOPICS + 10 });
    expect(await get(server.port, "/api/topics")).toEqual([200, { topics: [] }]);
    await subscriber(server, "room.b", "room.a", "lobby");
    await subscriber(server, "room.a", "lobby");
    await subscriber(server, "lobby");
    const all: TopicView[] = [
      { topic: "lobby", local: 3, cluster: 3 },
      { topic: "room.a", local: 2, cluster: 2 },
      { topic: "room.b", local: 1, cluster: 1 },
    ];
    expect(await get(server.port, "/api/topics")).toEqual([200, { topics: all }]);
    expect(await get(server.port, "/api/topics?prefix=room.")).toEqual([200, { topics: all.slice(1) }]);
    expect(await get(server.port, "/api/topics?prefix=nothing")).toEqual([200, { topics: [] }]);
    // Past the cap: the busiest first, then by name; the rest left out and said so.
    const many = await subscriber(server);
    for (let i = 0; i < MAX_LISTED_TOPICS; i++) many.send({ type: "subscribe", topic: `t${String(i).padStart(4, "0")}` });
    for (let i = 0; i < MAX_LISTED_TOPICS; i++) expect((await many.json()).type).toBe("subscribed");
    const [status, body] = await get(server.port, "/api/topics");
    expect(status).toBe(200);
    expect(body.truncated).toBe(true);
    expect(body.topics).toHaveLength(MAX_LISTED_TOPICS);
    expect(body.topics.slice(0, 5)).toEqual([...all, { topic: "t0000", local: 1, cluster: 1 }, { topic: "t0001", local: 1, cluster: 1 }]);
    expect(body.topics.at(-1)).toEqual({ topic: "t0996", local: 1, cluster: 1 });
  });

  test("the key first (401, 403 when disabled), 405 for other methods, 400 for a bad prefix", async () => {
    const server = serve({ API_KEY: KEY });
    for (const path of ["/api/nodes", "/api/topics", "/api/topics?prefix=a%20b"]) {
      expect(await get(server.port, path, {})).toEqual([401, { error: "missing Authorization: Bearer <API_KEY>" }]);
      expect(await get(server.port, path, { authorization: "Bearer wrong-key-wrong-key-0000" })).toEqual([401, { error: "invalid API key" }]);
    }
    expect(await get(server.port, "/api/topics?prefix=a%20b")).toEqual([400, { error: "prefix: must be 1-200 characters of letters, digits and . _ - : /" }]);
    for (const [path, usage] of [["/api/nodes", "use GET /api/nodes"], ["/api/topics", "use GET /api/topics?prefix=P"]] as const) {
      for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
        const res = await fetch(`${server.url}${path}`, { method, headers: AUTH });
        expect([res.status, res.headers.get("allow"), await res.json()]).toEqual([405, "GET", { error: usage }]);
      }
    }
    const disabled = serve();
    for (const path of ["/api/nodes", "/api/topics"]) {
      expect(await get(disabled.port, path)).toEqual([403, { error: "HTTP API is disabled: set API_KEY on the server to enable it" }]);
    }
  });

  test("typed for Eden", async () => {
    const server = serve({ API_KEY: KEY });
    const api = treaty<App>(server.url, { headers: AUTH });
    const nodes = await api.api.nodes.get();
    if (nodes.data === null || !("nodes" in nodes.data)) throw new Error(`GET /api/nodes: ${nodes.status}`);
    const self: boolean = nodes.data.nodes[0]!.self;
    const connections: number = nodes.data.nodes[0]!.connections;
    expect([self, connections]).toEqual([true, 0]);
    const topics = await api.api.topics.get({ query: { prefix: "x" } });
    if (topics.data === null || !("topics" in topics.data)) throw new Error(`GET /api/topics: ${topics.status}`);
    const listed: { topic: string; local: number; cluster: number | null }[] = topics.data.topics;
    expect(listed).toEqual([]);
  });
});

describe("Redis: every node", () => {
  async function node(): Promise<TestServer> {
    const server = serve({ REDIS_URL: redis.url, API_KEY: KEY, NODE_ANNOUNCE_MS: PERIOD });
    await until(async () => (await fetch(`${server.url}/readyz`)).status === 200, 5000, "/readyz 200");
    return server;
  }

  test("two nodes list each other (themselves first, live connection counts); one shut down is gone at once", async () => {
    const a = await node();
    const b = await node();
    const [idA, idB] = [a.cluster.nodeId, b.cluster.nodeId];
    await until(async () => (await idsOf(a)).length === 2 && (await idsOf(b)).length === 2, 5000, "both nodes listed on both");
    expect(await idsOf(a)).toEqual([idA, idB]);
    expect(await idsOf(b)).toEqual([idB, idA]);
    await subscriber(b, "x");
    await subscriber(b);
    const viewOfB = async () => (await nodesOf(a)).find((n) => n.nodeId === idB);
    await until(async () => (await viewOfB())?.connections === 2, 5000, "A seeing B's two connections");
    expect(await viewOfB()).toMatchObject({ address: b.url, version: pkg.version, connections: 2, topics: 1, self: false });
    expect((await nodesOf(b))[0]).toMatchObject({ nodeId: idB, address: b.url, connections: 2, topics: 1, self: true });
    // The record lives NODE_TTL_PERIODS periods, rewritten every period.
    const pttl = (await redis.command("PTTL", [`sb:node:${idA}`])) as number;
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(TTL);

    await b.shutdown();
    expect(await idsOf(a)).toEqual([idA]);
    expect(await redis.command("EXISTS", [`sb:node:${idB}`])).toBe(0);
    expect(await redis.command("SISMEMBER", ["sb:nodes", idB])).toBe(0);
  });

  test("a node killed with SIGKILL leaves every list within its record's TTL", async () => {
    const a = await node();
    const doomed = await spawnEntry({ REDIS_URL: redis.url, NODE_ANNOUNCE_MS: String(PERIOD), LOG_LEVEL: "warn" });
    const address = `http://127.0.0.1:${doomed.port}`;
    const listed = async () => (await nodesOf(a)).find((n) => n.address === address);
    await until(async () => (await listed()) !== undefined, 5000, "the spawned node listed");
    const id = (await listed())!.nodeId;
    doomed.kill("SIGKILL");
    await doomed.exited();
    // Its record was written at most a period before it died: gone within the TTL of that write.
    const left = (await redis.command("PTTL", [`sb:node:${id}`])) as number;
    expect(left).toBeLessThanOrEqual(TTL);
    await until(async () => (await listed()) === undefined, TTL + 5000, "the killed node gone");
    // The index dropped it too (the read that found its record gone).
    expect(await redis.command("SISMEMBER", ["sb:nodes", id])).toBe(0);
  });

  test("topics: local subscriptions on this node, cluster-wide from presence", async () => {
    const a = await node();
    const b = await node();
    await subscriber(a, "shared");
    await subscriber(b, "shared", "only-b");
    await subscriber(b, "shared");
    const topicsOf = async (server: TestServer) => (await get(server.port, "/api/topics"))[1] as { topics: TopicView[] };
    await until(async () => (await topicsOf(a)).topics[0]?.cluster === 3, 5000, "three entries of shared");
    expect(await topicsOf(a)).toEqual({ topics: [{ topic: "shared", local: 1, cluster: 3 }] });
    expect(await topicsOf(b)).toEqual({
      topics: [
        { topic: "shared", local: 2, cluster: 3 },
        { topic: "only-b", local: 1, cluster: 1 },
      ],
    });
  });

  test("Redis down: 503 (never this node alone); back: every node announces itself again", async () => {
    if (!redis.owned) return; // a shared Redis cannot be stopped
    const a = await node();
    const b = await node();
    await subscriber(a, "t");
    await until(async () => (await idsOf(a)).length === 2, 5000, "both listed");
    await redis.stop();
    try {
      await until(async () => (await fetch(`${a.url}/readyz`)).status === 503, 5000, "A degraded");
      const [status, body] = await get(a.port, "/api/nodes");
      expect(status).toBe(503);
      expect(body.error).toStartWith("cluster view unavailable (redis unreachable: ");
      expect(await get(a.port, "/api/topics")).toEqual([503, { error: "presence store unavailable: retry later" }]);
    } finally {
      await redis.start();
    }
    // Redis came back empty: the next announcements put both records back (each node lists itself regardless).
    const both = async (server: TestServer) => (await idsOf(server).catch(() => [])).length === 2;
    await until(async () => (await both(a)) && (await both(b)), 10_000, "both listed again on both");
    expect(await idsOf(b)).toEqual([b.cluster.nodeId, a.cluster.nodeId]);
  });
});
