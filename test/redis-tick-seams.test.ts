// Seams of the per-tick Redis path and of sharding found by an independent review (issue 14), on real
// redis-servers, real brokers and servers: an accounting soak, batches sent into a frozen Redis, a control command
// after a same-tick publish, close() with commands in flight, /api/topics when sharded, and nodes whose REDIS_URL
// disagrees (another count, one instance, a misconfigured node first to reach a restarted Redis, one server twice).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisBroker } from "../src/broker/redis.ts";
import { fnv1a, jumpHash, ShardedBroker } from "../src/broker/sharded.ts";
import { HistoryUnavailable } from "../src/history/history.ts";
import { Logger } from "../src/log.ts";
import { presenceTopic } from "../src/presence/presence.ts";
import type { ControlCommand } from "../src/protocol.ts";
import { Client, serve, stopAll, until, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const brokers: RedisBroker[] = [];
afterAll(async () => {
  for (const broker of brokers) await broker.close();
  await stopAll();
});

interface Recorded {
  broker: RedisBroker;
  /** `topic frame [@offset]` per delivery, `control <json>` per control command, in order. */
  log: string[];
}

async function broker(url: string, options: { history?: boolean; maxPendingBytes?: number; timeoutMs?: number } = {}): Promise<Recorded> {
  const log: string[] = [];
  const broker = new RedisBroker({
    url,
    log: new Logger("error", () => {}),
    timeoutMs: options.timeoutMs ?? 2000,
    maxPendingBytes: options.maxPendingBytes ?? 1 << 22,
    baseMs: 20,
    capMs: 200,
    history: options.history ? { size: 10_000, ttlMs: 60_000, metaTtlMs: 60_000 } : undefined,
  });
  brokers.push(broker);
  broker.start(
    (topic, frame, offset) => log.push(`${topic} ${frame}${offset === undefined ? "" : ` @${offset}`}`),
    undefined,
    (command: ControlCommand) => {
      log.push(`control ${JSON.stringify(command)}`);
      return 0;
    },
  );
  await until(() => broker.status().ready, 5000, "broker ready");
  return { broker, log };
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
const frame = (topic: string, i: number, pad = "") => JSON.stringify({ type: "message", topic, data: { i, pad } });
const head = (topic: string, i: number, pad = "") => frame(topic, i, pad).slice(0, -1);

describe("one Redis instance", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });

  test("accounting soak: 40 ticks of plain and history bursts, 64 KiB splits and presence events in the middle end with pending_bytes 0, nothing dropped, every ack its own offset, one order on every node", async () => {
    const a = await broker(redis.url, { history: true });
    const b = await broker(redis.url, { history: true });
    for (const topic of ["soak.p", "soak.h"]) {
      await a.broker.subscribe(topic);
      await b.broker.subscribe(topic);
    }
    const plain: string[] = [];
    const history: string[] = [];
    const acks: Promise<number>[] = [];
    let n = 0;
    for (let t = 0; t < 40; t++) {
      const burst = 1 + ((t * 7) % 23);
      const pad = t % 5 === 0 ? "p".repeat(9000) : ""; // every fifth tick passes 64 KiB
      for (let i = 0; i < burst; i++) {
        const f = frame("soak.p", n, pad);
        a.broker.publish("soak.p", f);
        plain.push(`soak.p ${f}`);
        const h = head("soak.h", n, pad);
        acks.push(a.broker.append("soak.h", h));
        history.push(h);
        n++;
        if (i === burst >> 1) {
          const event = JSON.stringify({ type: "join", topic: "soak.p", n });
          a.broker.announce("soak.p", event);
          plain.push(`${presenceTopic("soak.p")} ${event}`);
        }
      }
      await tick();
    }
    const offsets = await Promise.all(acks);
    expect(offsets).toEqual(history.map((_, i) => i + 1));
    const expectedHistory = history.map((h, i) => `soak.h ${h},"offset":${i + 1}} @${i + 1}`);
    await until(() => b.log.length >= plain.length + history.length, 10_000, "B received everything");
    expect(b.log.filter((l) => !l.startsWith("soak.h "))).toEqual(plain);
    expect(b.log.filter((l) => l.startsWith("soak.h "))).toEqual(expectedHistory);
    await until(() => a.log.filter((l) => l.startsWith("soak.h ")).length >= history.length, 10_000, "A delivered its history from the channel");
    expect(a.log.filter((l) => l.startsWith("soak.h "))).toEqual(expectedHistory);
    await until(() => a.broker.gauges().pending_bytes === 0, 5000, "every reservation settled");
    expect(a.broker.counters.dropped).toBe(0);
    expect(a.broker.counters.failed).toBe(0);
    expect(a.broker.counters.sent).toBe(2 * n);
    const read = await b.broker.read("soak.h", { limit: 10_000, create: false, since: undefined, maxBytes: 1 << 26 });
    expect(read.messages.map((m) => m.offset)).toEqual(history.map((_, i) => i + 1));
  });

  test("a tick's batches sent into a frozen Redis: every append settles (unconfirmed), the next link starts at pending_bytes 0 and carries messages again", async () => {
    if (!redis.owned) return;
    const a = await broker(redis.url, { history: true, timeoutMs: 400 });
    const b = await broker(redis.url, { history: true });
    await b.broker.subscribe("frozen.p");
    redis.signal("SIGSTOP");
    try {
      for (let i = 0; i < 50; i++) a.broker.publish("frozen.p", frame("frozen.p", i));
      const appends = Array.from({ length: 50 }, (_, i) => a.broker.append("frozen.h", head("frozen.h", i)));
      await tick(); // both batches leave, into the frozen server
      expect(a.broker.gauges().pending_bytes).toBeGreaterThan(0);
      const settled = await Promise.race([Promise.allSettled(appends), Bun.sleep(3000).then(() => "hung" as const)]);
      expect(settled).not.toBe("hung");
      // One outcome for the whole batch: refused, and unconfirmed (sent on a connection that was then dropped).
      const outcomes = new Set(
        (settled as PromiseSettledResult<number>[]).map((r) =>
          r.status === "rejected" && r.reason instanceof HistoryUnavailable ? `unavailable unconfirmed=${r.reason.unconfirmed}` : String(r.status),
        ),
      );
      expect([...outcomes]).toEqual(["unavailable unconfirmed=true"]);
    } finally {
      redis.signal("SIGCONT");
    }
    await until(() => a.broker.status().ready && a.broker.converged(), 5000, "A reconnected");
    expect(a.broker.gauges().pending_bytes).toBe(0);
    const before = b.log.length;
    const droppedBefore = a.broker.counters.dropped;
    const f = frame("frozen.p", 999);
    a.broker.publish("frozen.p", f);
    await until(() => b.log.includes(`frozen.p ${f}`), 5000, "a message of the new link reaches B");
    expect(b.log.length).toBeGreaterThan(before);
    expect(a.broker.counters.dropped).toBe(droppedBefore);
  });

  test("close() waits for the answers of batches already sent (bounded), not only the current tick's", async () => {
    const a = await broker(redis.url, { history: true });
    const earlier = Array.from({ length: 3 }, (_, i) => a.broker.append("closing", head("closing", i)));
    await tick(); // sent, their answers on the way
    const same = a.broker.append("closing", head("closing", 3));
    await a.broker.close();
    expect(await Promise.all([...earlier, same])).toEqual([1, 2, 3, 4]);
  });

  // A publish and a control command of the same tick leave in that order on one connection (Redis delivers one
  // connection's PUBLISHes in order, whatever the channel): the command sends the tick's batches first.
  test("a control command sent after a plain publish in the same tick reaches other nodes after it", async () => {
    const a = await broker(redis.url);
    const b = await broker(redis.url);
    await b.broker.subscribe("kick");
    const notice = frame("kick", 1);
    a.broker.publish("kick", notice);
    await a.broker.control({ type: "disconnect", user: "u1" } as ControlCommand);
    await until(() => b.log.length >= 2, 5000, "B got both");
    expect(b.log).toEqual([`kick ${notice}`, `control ${JSON.stringify({ type: "disconnect", user: "u1" })}`]);
  });
});

describe("several Redis instances", () => {
  let r1: TestRedis;
  let r2: TestRedis;
  let r3: TestRedis;
  beforeAll(async () => {
    [r1, r2, r3] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  });
  afterAll(async () => {
    await stopAll();
    await Promise.all([r1.stop(), r2.stop(), r3.stop()]);
  });

  /** True when `server` is refused on an instance for its REDIS_URL (the reason in /readyz); false once ready. */
  const refusedOrReady = async (server: TestServer): Promise<boolean> => {
    let refused = false;
    await until(() => {
      const { ready, broker } = server.gateway.readiness();
      refused = !ready && (broker.detail ?? "").includes("REDIS_URL");
      return ready || refused;
    }, 5000, "ready, or refused for its REDIS_URL");
    return refused;
  };

  /** A topic placed on instance `two` of 2 and `three` of 3 (or of 1: always 0). */
  const topicWhere = (two: number, three: number) => {
    for (let i = 0; ; i++) {
      const topic = `fork.${i}`;
      if (jumpHash(fnv1a(topic), 2) === two && jumpHash(fnv1a(topic), 3) === three) return topic;
    }
  };

  test("GET /api/topics counts each topic's subscribers cluster-wide on its own instance", async () => {
    const env = { REDIS_URL: `${r1.url},${r2.url}`, API_KEY: "k".repeat(32) };
    const a = serve(env);
    const b = serve(env);
    await until(() => a.gateway.readiness().ready && b.gateway.readiness().ready, 5000, "nodes ready");
    const onFirst = topicWhere(0, 0);
    const onSecond = topicWhere(1, 1);
    expect((a.broker as ShardedBroker).shards.indexOf((a.broker as ShardedBroker).shardOf(onSecond))).toBe(1);
    const clients: Client[] = [];
    for (const [server, topic] of [
      [a, onFirst],
      [a, onSecond],
      [b, onFirst],
      [b, onSecond],
      [b, onSecond],
    ] as const) {
      const client = await Client.connect(server);
      client.send({ type: "subscribe", topic });
      expect(await client.json()).toMatchObject({ type: "subscribed", topic });
      clients.push(client);
    }
    const response = await fetch(`http://127.0.0.1:${a.port}/api/topics?prefix=fork.`, { headers: { authorization: `Bearer ${"k".repeat(32)}` } });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { topics: { topic: string; local: number; cluster: number }[] };
    expect(body.topics.sort((x, y) => (x.topic < y.topic ? -1 : 1))).toEqual(
      [
        { topic: onFirst, local: 1, cluster: 2 },
        { topic: onSecond, local: 1, cluster: 3 },
      ].sort((x, y) => (x.topic < y.topic ? -1 : 1)),
    );
    for (const client of clients) client.close();
    await a.switchboard.stop();
    await b.switchboard.stop();
  });

  const readyz = async (server: TestServer) => JSON.stringify(await (await fetch(`http://127.0.0.1:${server.port}/readyz`)).json());

  // A rolling change of the list (an instance added at the end) would place ~1/3 of the topics differently on
  // the two groups of nodes: the later group is refused on every instance the first placed.
  test("a node listing 3 instances beside one listing 2 is refused with the reason; so is one listing 1", async () => {
    for (const r of [r1, r2, r3]) await r.command("DEL", ["sb:$shard"]);
    const a = serve({ REDIS_URL: `${r1.url},${r2.url}` });
    try {
      await until(() => a.gateway.readiness().ready, 5000, "A ready");
      const b = serve({ REDIS_URL: `${r1.url},${r2.url},${r3.url}` });
      const c = serve({ REDIS_URL: r1.url });
      expect(await refusedOrReady(b)).toBe(true);
      expect(await refusedOrReady(c)).toBe(true);
      expect(await readyz(b)).toContain("lists this instance as number 1 of 3, but a node listing it as number 1 of 2 was here first");
      expect(await readyz(c)).toContain("lists this instance as number 1 of 1, but a node listing it as number 1 of 2 was here first");
      expect(a.gateway.readiness().ready).toBe(true);
      await Promise.all([b.switchboard.stop(), c.switchboard.stop()]);
    } finally {
      await a.switchboard.stop();
    }
  });

  // First writer wins on an empty instance: a node already refused elsewhere must not be the one to place it.
  test("a refused node does not place an instance restarted empty; the next agreeing node does", async () => {
    for (const r of [r1, r2, r3]) await r.command("DEL", ["sb:$shard"]);
    const a = serve({ REDIS_URL: `${r1.url},${r2.url}` });
    try {
      await until(() => a.gateway.readiness().ready, 5000, "A ready");
      const wrong = serve({ REDIS_URL: `${r2.url},${r1.url}` }); // refused on both, retrying with backoff
      expect(await refusedOrReady(wrong)).toBe(true);
      await a.switchboard.stop(); // nobody who agrees is connected when r2 comes back empty
      await r2.stop();
      await r2.start();
      // The refused node reconnects to r2 (backoff capped at 5 s) and finds it empty: it must not write its place.
      await until(async () => (await readyz(wrong)).includes("does not place this empty instance"), 12_000, "the refused node waits for an agreeing one");
      expect(await r2.command("GET", ["sb:$shard"])).toBeNull();
      const b = serve({ REDIS_URL: `${r1.url},${r2.url}` });
      await until(() => b.gateway.readiness().ready, 10_000, "an agreeing node places it and is ready");
      expect(await r2.command("GET", ["sb:$shard"])).toBe("1/2");
      expect(wrong.gateway.readiness().ready).toBe(false);
      await Promise.all([wrong.switchboard.stop(), b.switchboard.stop()]);
    } finally {
      await a.switchboard.stop();
    }
  });

  // Pub/sub is per server, whatever the DB number: the same server twice would hear the control channel twice.
  test("the same server listed twice under two DB numbers is never ready, and says so", async () => {
    for (const r of [r1, r2, r3]) await r.command("DEL", ["sb:$shard"]);
    const node = serve({ REDIS_URL: `${r1.url}/0,${r1.url}/1` });
    try {
      await until(async () => (await readyz(node)).includes("are the same Redis server"), 5000, "refused as one server twice");
      expect(await readyz(node)).toContain("redis 1 and 2 of 2 are the same Redis server");
    } finally {
      await node.switchboard.stop();
    }
  });
  test("GET /api/topics with one instance down lists its topics with cluster null and counts them; with all down, 503", async () => {
    for (const r of [r1, r2, r3]) await r.command("DEL", ["sb:$shard"]);
    const key = "k".repeat(32);
    const a = serve({ REDIS_URL: `${r1.url},${r2.url}`, API_KEY: key, REDIS_TIMEOUT_MS: 500 });
    const clients: Client[] = [];
    try {
      await until(() => a.gateway.readiness().ready, 5000, "A ready");
      const onFirst = topicWhere(0, 0);
      const onSecond = topicWhere(1, 1);
      for (const topic of [onFirst, onSecond]) {
        const client = await Client.connect(a);
        client.send({ type: "subscribe", topic });
        expect(await client.json()).toMatchObject({ type: "subscribed", topic });
        clients.push(client);
      }
      const topics = async () => {
        const response = await fetch(`http://127.0.0.1:${a.port}/api/topics?prefix=fork.`, { headers: { authorization: `Bearer ${key}` } });
        return [response.status, await response.json()] as const;
      };
      type TopicsBody = { topics: { topic: string; local: number; cluster: number | null }[]; unavailable?: number };
      const sorted = (rows: TopicsBody["topics"]) => [...rows].sort((x, y) => (x.topic < y.topic ? -1 : 1));
      const byName = (body: TopicsBody): TopicsBody => ({ ...body, topics: sorted(body.topics) });
      const [okStatus, okBody] = await topics();
      expect([okStatus, byName(okBody)]).toEqual([200, { topics: sorted([{ topic: onFirst, local: 1, cluster: 1 }, { topic: onSecond, local: 1, cluster: 1 }]) }]);
      await r2.stop();
      await until(() => !a.gateway.readiness().ready, 5000, "A sees instance 2 gone");
      const [partialStatus, partialBody] = await topics();
      expect([partialStatus, byName(partialBody)]).toEqual([200, { topics: sorted([{ topic: onFirst, local: 1, cluster: 1 }, { topic: onSecond, local: 1, cluster: null }]), unavailable: 1 }]);
      await r1.stop();
      await until(async () => (await topics())[0] === 503, 5000, "no instance answers: 503");
      expect(await topics()).toEqual([503, { error: "presence store unavailable: retry later" }]);
    } finally {
      for (const client of clients) client.close();
      await Promise.all([r1.start(), r2.start()]);
      await a.switchboard.stop();
    }
  });
});
