// The Redis presence store on its own, against a real redis-server: three stores stand for three nodes. Each
// change is announced by exactly one caller (remove, expiry found by concurrent readers and refreshers), a
// refresh re-adds what Redis lost and says so, lists are bounded, users are counted without reading entries.
// Time is injected: expiry compares the stores' clock, which the test moves.
import { RedisClient } from "bun";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { PRESENCE_SCRIPTS, RedisPresence } from "../src/presence/redis.ts";
import type { PresenceEntry } from "../src/presence/presence.ts";
import { startRedis, type TestRedis } from "./redis.ts";

let redis: TestRedis;
const clients: RedisClient[] = [];
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  for (const c of clients) c.close();
  if (redis.owned) await redis.stop();
});

async function nodes(count: number, ttlMs = 1000) {
  let now = 1_000_000;
  const expired: { node: number; topic: string; entries: PresenceEntry[] }[] = [];
  const stores = [];
  for (let node = 0; node < count; node++) {
    const client = new RedisClient(redis.url);
    await client.connect();
    clients.push(client);
    for (const script of PRESENCE_SCRIPTS) await client.send("SCRIPT", ["LOAD", script]); // as the broker does on connect
    const send = (command: string, args: string[]) => client.send(command, args);
    stores.push(
      new RedisPresence({
        sendFor: () => send,
        ttlMs,
        now: () => now,
        expired: (topic, entries) => expired.push({ node, topic, entries }),
      }),
    );
  }
  return { stores, expired, advance: (ms: number) => void (now += ms) };
}

const entry = (connectionId: string, user: string | null, info?: { [key: string]: string }): PresenceEntry =>
  info === undefined ? { connectionId, user } : { connectionId, user, info };

describe("Redis presence store", () => {
  test("add says new once; remove returns the entry to exactly one of three concurrent callers; stats count users", async () => {
    const { stores } = await nodes(3);
    const [a, b, c] = stores as [RedisPresence, RedisPresence, RedisPresence];
    const topic = "once";
    expect(await a.add(topic, entry("a-1", "ann", { role: "host" }))).toBe(true);
    expect(await a.add(topic, entry("a-1", "ann", { role: "host" }))).toBe(false);
    expect(await b.add(topic, entry("b-1", "ann"))).toBe(true);
    expect(await c.add(topic, entry("c-1", null))).toBe(true);
    expect(await b.stats(topic)).toEqual({ clients: 3, users: 1 });
    expect((await c.list(topic, 10)).clients.toSorted((x, y) => x.connectionId.localeCompare(y.connectionId))).toEqual([
      entry("a-1", "ann", { role: "host" }),
      entry("b-1", "ann"),
      entry("c-1", null),
    ]);
    const removed = await Promise.all([a.remove(topic, "b-1"), b.remove(topic, "b-1"), c.remove(topic, "b-1")]);
    expect(removed.filter((r) => r !== undefined)).toEqual([entry("b-1", "ann")]);
    expect(await a.stats(topic)).toEqual({ clients: 2, users: 1 });
    await a.remove(topic, "a-1");
    expect(await a.stats(topic)).toEqual({ clients: 1, users: 0 });
  });

  test("a node that stops refreshing: its entries expire and are announced once, whoever finds them", async () => {
    const { stores, expired, advance } = await nodes(3, 1000);
    const [a, b, c] = stores as [RedisPresence, RedisPresence, RedisPresence];
    const topic = "crash";
    const dead = Array.from({ length: 20 }, (_, i) => entry(`a-${i}`, `u${i % 4}`));
    for (const e of dead) await a.add(topic, e);
    await b.add(topic, entry("b-1", "bob"));
    advance(600);
    expect(await b.refresh(topic, [entry("b-1", "bob")])).toEqual([]); // b refreshes; a is dead
    advance(600); // a's entries are 1,200 ms old: expired; b's 600
    await Promise.all([b.list(topic, 100), c.stats(topic), b.refresh(topic, [entry("b-1", "bob")]), c.list(topic, 5)]);
    const announced = expired.flatMap((e) => e.entries.map((x) => x.connectionId)).toSorted();
    expect(announced).toEqual(dead.map((e) => e.connectionId).toSorted());
    expect(await c.stats(topic)).toEqual({ clients: 1, users: 1 });
    expect((await c.list(topic, 10)).clients).toEqual([entry("b-1", "bob")]);
  });

  test("a refresh re-adds what Redis lost, silently (nobody was told it left); lists are bounded and say so", async () => {
    const { stores } = await nodes(1);
    const a = stores[0]!;
    const topic = "lost";
    const mine = Array.from({ length: 30 }, (_, i) => entry(`a-${i}`, `u${i % 3}`));
    for (const e of mine) await a.add(topic, e);
    const page = await a.list(topic, 10);
    expect([page.clients.length, page.truncated]).toEqual([10, true]);
    expect((await a.list(topic, 30)).truncated).toBe(false);
    const tight = await a.list(topic, 30, 3 * JSON.stringify(mine[0]).length + 2);
    expect([tight.clients.length, tight.truncated]).toEqual([3, true]); // the byte budget bounds it too
    expect(await redis.command("FLUSHALL", [])).toBe("OK");
    expect(await a.stats(topic)).toEqual({ clients: 0, users: 0 });
    expect(await a.refresh(topic, mine)).toEqual([]); // re-added without a join: no leave was announced
    expect(await a.stats(topic)).toEqual({ clients: 30, users: 3 });
  });

  test("entries another node announced gone come back with their node's refresh, announced as joins once", async () => {
    const { stores, expired, advance } = await nodes(2, 1000);
    const [a, b] = stores as [RedisPresence, RedisPresence];
    const topic = "partitioned";
    const mine = [entry("a-1", "ann"), entry("a-2", null)];
    for (const e of mine) await a.add(topic, e);
    advance(1500); // a was cut off longer than the TTL: b finds its entries expired
    await b.stats(topic);
    expect(expired.flatMap((e) => e.entries)).toEqual(mine);
    const back = await a.refresh(topic, mine); // a is back
    expect(back).toEqual(mine);
    expect(await a.refresh(topic, mine)).toEqual([]);
    expect(await b.stats(topic)).toEqual({ clients: 2, users: 1 });
  });

  test("a refresh of more entries than one batch (500) keeps them all and adds the missing ones across batches", async () => {
    const { stores } = await nodes(1);
    const a = stores[0]!;
    const topic = "many";
    const mine = Array.from({ length: 1203 }, (_, i) => entry(`m-${i}`, `u${i % 7}`));
    for (const e of mine) await a.add(topic, e);
    // Half of them vanish from Redis (as after a partial loss): the refresh finds them missing across its
    // batches of ids and puts them back, silently (none was announced gone).
    const ids = mine.filter((_, i) => i % 2 === 0).map((e) => e.connectionId);
    await redis.command("ZREM", [`sb:{${topic}}:px`, ...ids]);
    await redis.command("HDEL", [`sb:{${topic}}:p`, ...ids]);
    expect(await a.refresh(topic, mine)).toEqual([]);
    expect(await a.stats(topic)).toEqual({ clients: 1203, users: 7 });
    expect(await a.refresh(topic, mine)).toEqual([]);
  });

  test("after SCRIPT FLUSH a call fails (never replayed out of order by EVAL) and the scripts are loaded again", async () => {
    const { stores } = await nodes(1);
    await stores[0]!.add("flushed", entry("x", null));
    expect(await redis.command("SCRIPT", ["FLUSH"])).toBe("OK");
    expect(await stores[0]!.stats("flushed").then(() => "ok", (e: Error) => e.message.slice(0, 8))).toBe("NOSCRIPT");
    expect(await stores[0]!.stats("flushed")).toEqual({ clients: 1, users: 0 });
  });
});
