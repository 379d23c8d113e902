// Topics sharded over several Redis instances (REDIS_URL lists them): the hash that places a topic, the
// configuration, and two nodes on two real redis-servers, checked from the instances themselves (a topic's
// channel and keys exist on its instance only) and from real clients.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisBroker } from "../src/broker/redis.ts";
import { fnv1a, jumpHash, ShardedBroker } from "../src/broker/sharded.ts";
import { loadConfig } from "../src/config.ts";
import type { ServerFrame } from "../src/protocol.ts";
import { Client, serve, spawnEntry, stopAll, until, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

/** The published algorithm, in BigInt: what jumpHash must equal. */
function jumpReference(key: number, buckets: number): number {
  let k = BigInt(key);
  let b = -1n;
  let j = 0n;
  while (j < BigInt(buckets)) {
    b = j;
    k = (k * 2862933555777941757n + 1n) & 0xffffffffffffffffn;
    j = BigInt(Math.floor(Number(b + 1n) * (2147483648 / Number((k >> 33n) + 1n))));
  }
  return Number(b);
}

describe("placing a topic", () => {
  test("jumpHash equals the published algorithm (64-bit arithmetic) for 20,000 topics and 1..16 instances", () => {
    for (let i = 0; i < 20_000; i++) {
      const key = fnv1a(`topic.${i}.${"x".repeat(i % 7)}`);
      for (const buckets of [1, 2, 3, 5, 8, 16]) expect(jumpHash(key, buckets)).toBe(jumpReference(key, buckets));
    }
    for (const key of [0, 1, 0xffffffff, 0x80000000, 12345]) expect(jumpHash(key, 7)).toBe(jumpReference(key, 7));
  });

  test("fnv1a is FNV-1a 32 (its published test vectors)", () => {
    expect(fnv1a("")).toBe(0x811c9dc5);
    expect(fnv1a("a")).toBe(0xe40c292c);
    expect(fnv1a("foobar")).toBe(0xbf9cf968);
  });

  test("topics spread evenly, and adding an instance moves only topics onto the new one (about 1/N of them)", () => {
    const topics = Array.from({ length: 30_000 }, (_, i) => `chat.room.${i}`);
    const three = topics.map((t) => jumpHash(fnv1a(t), 3));
    const four = topics.map((t) => jumpHash(fnv1a(t), 4));
    for (let shard = 0; shard < 3; shard++) {
      const share = three.filter((s) => s === shard).length / topics.length;
      expect(share).toBeGreaterThan(0.3);
      expect(share).toBeLessThan(0.37);
    }
    let moved = 0;
    for (let i = 0; i < topics.length; i++) {
      if (three[i] === four[i]) continue;
      moved++;
      expect(four[i]).toBe(3); // never between the old instances
    }
    expect(moved / topics.length).toBeGreaterThan(0.22);
    expect(moved / topics.length).toBeLessThan(0.28);
  });
});

describe("REDIS_URL with several instances", () => {
  test("a comma-separated list is accepted, spaces around commas too", () => {
    expect(loadConfig({ REDIS_URL: "redis://127.0.0.1:7001,redis://127.0.0.1:7002" }).REDIS_URL).toBe("redis://127.0.0.1:7001,redis://127.0.0.1:7002");
    expect(() => loadConfig({ REDIS_URL: "redis://a:1 , rediss://b:2" })).not.toThrow();
  });

  test("refused with the reason: an instance listed twice, an empty item, a bad scheme in the list", () => {
    expect(() => loadConfig({ REDIS_URL: "redis://a:1,redis://a:1" })).toThrow("lists an instance twice");
    expect(() => loadConfig({ REDIS_URL: "redis://a:1,,redis://b:2" })).toThrow("several separated by commas");
    expect(() => loadConfig({ REDIS_URL: "redis://a:1,http://b:2" })).toThrow("several separated by commas");
    expect(() => loadConfig({ REDIS_URL: "redis://a:1," })).toThrow("several separated by commas");
  });
});

describe("two nodes on two Redis instances", () => {
  let one: TestRedis;
  let two: TestRedis;
  let a: TestServer;
  let b: TestServer;
  beforeAll(async () => {
    [one, two] = await Promise.all([startRedis(), startRedis()]);
    const env = { REDIS_URL: `${one.url},${two.url}`, API_KEY: "k".repeat(32) };
    a = serve(env);
    b = serve(env);
    await until(() => a.gateway.readiness().ready && b.gateway.readiness().ready, 5000, "nodes ready");
  });
  afterAll(async () => {
    await stopAll();
    await Promise.all([one.stop(), two.stop()]);
  });

  /** Topics placed on the first and on the second instance (by the same hash the nodes use). */
  const placed = (shard: number, count: number) => {
    const found: string[] = [];
    for (let i = 0; found.length < count; i++) if (jumpHash(fnv1a(`s.${i}`), 2) === shard) found.push(`s.${i}`);
    return found;
  };

  const channels = async (redis: TestRedis) => ((await redis.command("PUBSUB", ["CHANNELS", "sb:s.*"])) as string[]).sort();

  test("the broker is sharded, and each node places a topic on the same instance", () => {
    expect(a.broker).toBeInstanceOf(ShardedBroker);
    const shardsA = (a.broker as ShardedBroker).shards;
    const shardsB = (b.broker as ShardedBroker).shards;
    for (const topic of [...placed(0, 5), ...placed(1, 5)]) {
      expect(shardsA.indexOf((a.broker as ShardedBroker).shardOf(topic))).toBe(shardsB.indexOf((b.broker as ShardedBroker).shardOf(topic)));
    }
    expect(shardsA.every((s) => s instanceof RedisBroker)).toBe(true);
  });

  test("a topic's channel, history and presence live on its instance only; messages cross nodes with offsets", async () => {
    const topics = [...placed(0, 3), ...placed(1, 3)];
    const sub = await Client.connect(b);
    for (const topic of topics) {
      sub.send({ type: "subscribe", topic });
      expect(await sub.json()).toMatchObject({ type: "subscribed", topic });
    }
    expect(await channels(one)).toEqual(placed(0, 3).map((t) => `sb:${t}`).sort());
    expect(await channels(two)).toEqual(placed(1, 3).map((t) => `sb:${t}`).sort());
    const pub = await Client.connect(a);
    for (const topic of topics) {
      pub.send({ type: "publish", topic, data: { on: topic }, id: 1 });
      expect(await pub.json()).toEqual({ type: "ack", id: 1, offset: 1 });
    }
    const got = new Map<string, ServerFrame>();
    for (let i = 0; i < topics.length; i++) {
      const frame = (await sub.json()) as Extract<ServerFrame, { type: "message" }>;
      got.set(frame.topic, frame);
    }
    for (const topic of topics) expect(got.get(topic)).toEqual({ type: "message", topic, data: { on: topic }, offset: 1 });
    for (const [redis, mine, theirs] of [
      [one, placed(0, 3), placed(1, 3)],
      [two, placed(1, 3), placed(0, 3)],
    ] as const) {
      for (const topic of mine) {
        expect(await redis.command("EXISTS", [`sb:{${topic}}:s`])).toBe(1);
        expect(await redis.command("EXISTS", [`sb:{${topic}}:p`])).toBe(1);
      }
      for (const topic of theirs) {
        expect(await redis.command("EXISTS", [`sb:{${topic}}:s`])).toBe(0);
        expect(await redis.command("EXISTS", [`sb:{${topic}}:p`])).toBe(0);
      }
    }
    sub.close();
    pub.close();
  });

  test("history, presence and the API's control commands work on either instance, from either node", async () => {
    const headers = { authorization: `Bearer ${"k".repeat(32)}` };
    const [first] = placed(0, 1);
    const [second] = placed(1, 1);
    const sub = await Client.connect(b);
    for (const topic of [first!, second!]) {
      sub.send({ type: "subscribe", topic: `${topic}.x` });
      await sub.json();
    }
    for (const topic of [first!, second!]) {
      const response = await fetch(`http://127.0.0.1:${a.port}/api/presence?topic=${topic}.x`, { headers });
      expect(response.status).toBe(200);
      expect(((await response.json()) as { clients: unknown[] }).clients.length).toBe(1);
      for (let i = 0; i < 3; i++) {
        const r = await fetch(`http://127.0.0.1:${a.port}/publish`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify({ topic: `${topic}.x`, data: i }) });
        expect(r.status).toBe(200);
      }
      const history = await fetch(`http://127.0.0.1:${b.port}/api/history?topic=${topic}.x&limit=10`, { headers });
      expect(((await history.json()) as { messages: { offset: number }[] }).messages.map((m) => m.offset)).toEqual([1, 2, 3]);
    }
    // Disconnect from node A a connection held by node B: the command travels on the first instance.
    const connection = ((await (await fetch(`http://127.0.0.1:${a.port}/api/presence?topic=${second}.x`, { headers })).json()) as { clients: { connectionId: string }[] }).clients[0]!.connectionId;
    const kick = await fetch(`http://127.0.0.1:${a.port}/api/disconnect`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify({ connectionId: connection }) });
    expect(kick.status).toBe(200);
    const closed = await sub.closed;
    expect(closed.code).toBe(4003);
  });

  test("the entry point says it shards, and serves", async () => {
    const entry = await spawnEntry({ REDIS_URL: `${one.url}, ${two.url}`, LOG_LEVEL: "warn" }, /^switchboard listening on http:\/\/127\.0\.0\.1:(\d+) .* with Redis \(2 instances, topics sharded\)/m);
    try {
      await until(async () => (await fetch(`http://127.0.0.1:${entry.port}/readyz`)).status === 200, 5000, "entry ready");
    } finally {
      entry.proc.kill("SIGTERM");
      await entry.proc.exited;
    }
  });

  test("/metrics sums the instances' counters", async () => {
    const text = await (await fetch(`http://127.0.0.1:${a.port}/metrics`)).text();
    const counters = (a.broker as ShardedBroker).counters;
    expect(counters.sent).toBe((a.broker as ShardedBroker).shards.reduce((n, s) => n + s.counters.sent, 0));
    expect(text).toContain("switchboard_redis_sent_total");
  });
});

describe("instances listed in another order on one node", () => {
  let one: TestRedis;
  let two: TestRedis;
  beforeAll(async () => {
    [one, two] = await Promise.all([startRedis(), startRedis()]);
  });
  afterAll(async () => {
    await stopAll();
    await Promise.all([one.stop(), two.stop()]);
  });

  test("is refused, never ready, with the reason; the nodes listing them in order work, and a Redis restarted empty is placed again", async () => {
    const a = serve({ REDIS_URL: `${one.url},${two.url}` });
    await until(() => a.gateway.readiness().ready, 5000, "node A ready");
    expect(await one.command("GET", ["sb:$shard"])).toBe("0/2");
    expect(await two.command("GET", ["sb:$shard"])).toBe("1/2");
    const b = serve({ REDIS_URL: `${two.url},${one.url}` });
    await until(async () => {
      const response = await fetch(`http://127.0.0.1:${b.port}/readyz`);
      return response.status === 503 && JSON.stringify(await response.json()).includes("same order");
    }, 5000, "node B refused with the reason");
    const body = (await (await fetch(`http://127.0.0.1:${b.port}/readyz`)).json()) as Record<string, unknown>;
    expect(JSON.stringify(body)).toContain("REDIS_URL lists this instance as number 1 of 2, but a node listing it as number 2 of 2 was here first");
    // B never subscribes anything on either instance while refused; A is unaffected.
    expect(a.gateway.readiness().ready).toBe(true);
    const c = serve({ REDIS_URL: ` ${one.url} , ${two.url}` });
    await until(() => c.gateway.readiness().ready, 5000, "node C (same order, other spacing) ready");
    // Instance 2 restarted empty: the first node to reconnect writes its place again (B, which would race A and C
    // for it with its own order, is stopped first: which misordered node comes first is not the point here).
    await b.switchboard.stop();
    await two.stop();
    await two.start();
    await until(() => a.gateway.readiness().ready && c.gateway.readiness().ready, 10_000, "A and C ready again");
    expect(await two.command("GET", ["sb:$shard"])).toBe("1/2");
  });
});
