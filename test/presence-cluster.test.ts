// Presence across nodes on a real Redis: three nodes see the same members, join/leave reach every watcher once,
// and a node killed with SIGKILL (a real process) leaves every topic within PRESENCE_TTL_MS, announced once.
import { describe, expect, test } from "bun:test";
import { Client, redisForFile, serve, spawnEntry, until, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

let redis: TestRedis;
redisForFile(async () => (redis = await startRedis()));

const TTL = 600;

async function node(): Promise<TestServer> {
  const server = serve({ REDIS_URL: redis.url, PRESENCE_TTL_MS: TTL });
  await until(() => server.gateway.readiness().ready, 5000, "node ready");
  return server;
}

/** Subscribes and returns the connection's id as presence shows it (the newest connection of that node). */
async function member(server: TestServer, topic: string, extra: Record<string, unknown> = {}): Promise<{ c: Client; id: string }> {
  const c = await Client.connect(server);
  const id = [...server.gateway.connections].map((conn) => server.gateway.connectionId(conn)).at(-1)!;
  const reply = await c.request({ type: "subscribe", topic, ...extra });
  if (reply.type !== "subscribed") throw new Error(JSON.stringify(reply));
  return { c, id };
}

type Event = { type: string; topic: string; client: { connectionId: string; user: null } };
const byId = (x: { connectionId: string }, y: { connectionId: string }) => x.connectionId.localeCompare(y.connectionId);

describe("presence across nodes", () => {
  test("three nodes: every node lists every member; each join and leave reaches each watcher once", async () => {
    const [a, b, c] = [await node(), await node(), await node()];
    const topic = "hall";
    const watchA = await member(a, topic, { presence: true });
    const watchC = await member(c, topic, { presence: true });
    // watchC joined after watchA: A's watcher hears it (C's own does not).
    expect(await watchA.c.json()).toEqual({ type: "join", topic, client: { connectionId: watchC.id, user: null } });
    const onB = await member(b, topic, { info: { seat: 2 } });
    const joinOnB = { type: "join" as const, topic, client: { connectionId: onB.id, user: null, info: { seat: 2 } } };
    for (const w of [watchA, watchC]) expect(await w.c.json()).toEqual(joinOnB);
    const everyone = [watchA, watchC, onB].map((m) => m.id).toSorted();
    for (const n of [a, b, c]) {
      const list = (await onB.c.request({ type: "presence", topic, id: n.port })) as { clients: { connectionId: string }[] };
      expect(list.clients.map((x) => x.connectionId).toSorted()).toEqual(everyone);
    }
    expect(await watchA.c.request({ type: "presence_stats", topic, id: 1 })).toEqual({ type: "presence_stats", topic, clients: 3, users: 0, id: 1 });
    expect(await onB.c.request({ type: "unsubscribe", topic, id: 2 })).toEqual({ type: "unsubscribed", topic, id: 2 });
    const leaveOnB = { type: "leave" as const, topic, client: { connectionId: onB.id, user: null, info: { seat: 2 } } };
    for (const w of [watchA, watchC]) expect(await w.c.json()).toEqual(leaveOnB);
    await Bun.sleep(TTL); // refreshes go on meanwhile: nothing else is announced
    for (const w of [watchA, watchC]) expect(w.c.pending).toBe(0);
    for (const m of [watchA, watchC, onB]) m.c.close();
  });

  test("a node killed with SIGKILL: its members leave everyone's presence within the TTL, each announced once", async () => {
    const a = await node();
    const b = await node();
    const topic = "crash";
    const watchA = await member(a, topic, { presence: true });
    const watchB = await member(b, topic, { presence: true });
    expect(await watchA.c.json()).toMatchObject({ type: "join", client: { connectionId: watchB.id } });
    const doomed = await spawnEntry({ REDIS_URL: redis.url, PRESENCE_TTL_MS: String(TTL), LOG_LEVEL: "warn" });
    await until(async () => (await fetch(`http://127.0.0.1:${doomed.port}/readyz`)).status === 200, 5000, "the doomed node ready");
    const victims: string[] = [];
    for (let i = 0; i < 3; i++) {
      const v = await Client.open(`ws://127.0.0.1:${doomed.port}/connect`);
      const welcome = (await v.json()) as { connectionId: string };
      expect((await v.request({ type: "subscribe", topic })).type).toBe("subscribed");
      victims.push(welcome.connectionId);
    }
    for (const w of [watchA, watchB]) {
      const joins: Event[] = [];
      for (let i = 0; i < 3; i++) joins.push((await w.c.json()) as Event);
      expect(joins.map((e) => [e.type, e.client.connectionId])).toEqual(victims.map((id) => ["join", id]));
    }
    doomed.kill("SIGKILL"); // no close, no leave: only the expiry of its entries (within the TTL) can say it
    for (const w of [watchA, watchB]) {
      const leaves: Event[] = [];
      for (let i = 0; i < 3; i++) leaves.push((await w.c.json(5000)) as Event);
      expect(leaves.map((e) => e.client).toSorted(byId)).toEqual(victims.map((id) => ({ connectionId: id, user: null })).toSorted(byId));
      expect(leaves.every((e) => e.type === "leave")).toBe(true);
    }
    await Bun.sleep(TTL); // more rounds of refreshes and reads on both nodes: nothing is announced twice
    for (const w of [watchA, watchB]) expect(w.c.pending).toBe(0);
    expect(await watchA.c.request({ type: "presence_stats", topic, id: 1 })).toEqual({ type: "presence_stats", topic, clients: 2, users: 0, id: 1 });
    for (const m of [watchA, watchB]) m.c.close();
  });
});
