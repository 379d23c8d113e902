// The Redis leg's per-tick batch (issue 14): a topic's plain (history-less) messages of one event-loop tick leave
// as one PUBLISH `<node>|<frame>\n<frame>...`, and every receiving node splits it back into the same frames, in
// order. Two real RedisBrokers on a real redis-server, each recording what it hands to its node; Redis's own
// command statistics say how many PUBLISHes were sent.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisBroker } from "../src/broker/redis.ts";
import { Logger } from "../src/log.ts";
import { presenceTopic } from "../src/presence/presence.ts";
import { Client, serve, stopAll, until } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await stopAll();
  await redis.stop();
});

interface Recorded {
  broker: RedisBroker;
  /** `topic frame` per delivery, in order. */
  log: string[];
}

const brokers: RedisBroker[] = [];
afterAll(async () => {
  for (const broker of brokers) await broker.close();
});

async function broker(maxPendingBytes = 1 << 20, withHistory = false): Promise<Recorded> {
  const log: string[] = [];
  const history = withHistory ? { size: 1000, ttlMs: 60_000, metaTtlMs: 60_000 } : undefined;
  const broker = new RedisBroker({ url: redis.url, log: new Logger("error", () => {}), timeoutMs: 2000, maxPendingBytes, baseMs: 20, capMs: 200, history });
  brokers.push(broker);
  broker.start((topic, frame, offset) => log.push(`${topic} ${frame}${offset === undefined ? "" : ` @${offset}`}`));
  await until(() => broker.status().ready, 5000, "broker ready");
  return { broker, log };
}

/** Calls of `command` Redis has run so far. */
async function calls(command = "publish"): Promise<number> {
  const info = String(await redis.command("INFO", ["commandstats"]));
  return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
}
const publishes = () => calls("publish");

const frame = (topic: string, i: number, pad = "") => JSON.stringify({ type: "message", topic, data: { i, pad } });

test("a topic's messages of one tick go in one PUBLISH and arrive split, whole and in order", async () => {
  const a = await broker();
  const b = await broker();
  await b.broker.subscribe("t1");
  await b.broker.subscribe("t2");
  const before = await publishes();
  const sent: string[] = [];
  for (let i = 0; i < 200; i++) {
    const topic = i % 3 === 0 ? "t2" : "t1";
    a.broker.publish(topic, frame(topic, i));
    sent.push(`${topic} ${frame(topic, i)}`);
  }
  // The origin delivered each at once (local first), before the tick ended.
  expect(a.log).toEqual(sent);
  await until(() => b.log.length >= 200, 5000, "B received the tick's messages");
  expect(b.log.filter((l) => l.startsWith("t1 "))).toEqual(sent.filter((l) => l.startsWith("t1 ")));
  expect(b.log.filter((l) => l.startsWith("t2 "))).toEqual(sent.filter((l) => l.startsWith("t2 ")));
  expect(b.log.length).toBe(200);
  expect(a.broker.counters.sent).toBe(200);
  expect(a.broker.counters.batches).toBe(2); // one per topic
  expect(b.broker.counters.received).toBe(200);
  expect((await publishes()) - before).toBe(2);
  expect(a.broker.gauges().pending_bytes).toBe(0);
});

test("messages of different ticks keep their order across the batches", async () => {
  const a = await broker();
  const b = await broker();
  await b.broker.subscribe("ticks");
  const sent: string[] = [];
  for (let tick = 0; tick < 20; tick++) {
    for (let i = 0; i < 1 + (tick % 4); i++) {
      const f = frame("ticks", sent.length);
      a.broker.publish("ticks", f);
      sent.push(`ticks ${f}`);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  await until(() => b.log.length >= sent.length, 5000, "B received every tick");
  expect(b.log).toEqual(sent);
  expect(a.broker.counters.batches).toBe(20);
});

test("a tick's batch past 64 KiB is sent in several PUBLISHes, no frame cut", async () => {
  const a = await broker();
  const b = await broker();
  await b.broker.subscribe("big");
  const pad = "x".repeat(10_000);
  const sent = Array.from({ length: 30 }, (_, i) => `big ${frame("big", i, pad)}`);
  for (const line of sent) a.broker.publish("big", line.slice(4));
  await until(() => b.log.length >= 30, 5000, "B received the big tick");
  expect(b.log).toEqual(sent);
  // ~300 KB in batches of at most ~64 KiB plus one frame.
  expect(a.broker.counters.batches).toBeGreaterThanOrEqual(4);
  expect(a.broker.counters.batches).toBeLessThan(30);
});

test("a presence event follows the topic's messages published before it in the tick, on every node", async () => {
  const a = await broker();
  const b = await broker();
  await b.broker.subscribe("room");
  const event = JSON.stringify({ type: "join", topic: "room", info: { user: "u" } });
  a.broker.publish("room", frame("room", 1));
  a.broker.publish("room", frame("room", 2));
  a.broker.announce("room", event);
  a.broker.publish("room", frame("room", 3));
  const expected = [`room ${frame("room", 1)}`, `room ${frame("room", 2)}`, `${presenceTopic("room")} ${event}`, `room ${frame("room", 3)}`];
  expect(a.log).toEqual(expected);
  await until(() => b.log.length >= 4, 5000, "B received messages and event");
  expect(b.log).toEqual(expected);
});

test("close() sends what the tick published before it", async () => {
  const a = await broker();
  const b = await broker();
  await b.broker.subscribe("last");
  for (let i = 0; i < 5; i++) a.broker.publish("last", frame("last", i));
  await a.broker.close();
  await until(() => b.log.length >= 5, 5000, "B received the messages published before close");
  expect(b.log).toEqual(Array.from({ length: 5 }, (_, i) => `last ${frame("last", i)}`));
});

test("the pending-bytes bound is checked per message: a tick past it drops (and counts) the rest, never a partial frame", async () => {
  const a = await broker(64 * 1024);
  const b = await broker();
  await b.broker.subscribe("bounded");
  const pad = "y".repeat(1000);
  for (let i = 0; i < 100; i++) a.broker.publish("bounded", frame("bounded", i, pad));
  expect(a.broker.gauges().pending_bytes).toBeLessThanOrEqual(64 * 1024); // reserved while the tick runs
  await new Promise((resolve) => setImmediate(resolve)); // the tick's batches leave
  const { sent, dropped } = a.broker.counters;
  expect(sent + dropped).toBe(100);
  expect(dropped).toBeGreaterThan(30);
  expect(sent).toBeGreaterThan(50);
  expect(a.broker.gauges().pending_bytes).toBeLessThanOrEqual(64 * 1024);
  await until(() => b.log.length >= sent, 5000, "B received what was sent");
  // Exactly the first `sent` messages, whole: the rest of the tick was dropped, nothing after a gap.
  expect(b.log).toEqual(Array.from({ length: sent }, (_, i) => `bounded ${frame("bounded", i, pad)}`));
  await until(() => a.broker.gauges().pending_bytes === 0, 5000, "replies settled the reservation");
});

test("end to end: a socket's burst on node A reaches node B's subscriber exactly, newlines in the data included", async () => {
  const a = serve({ REDIS_URL: redis.url, HISTORY_SIZE: 0 });
  const b = serve({ REDIS_URL: redis.url, HISTORY_SIZE: 0 });
  await until(() => a.gateway.readiness().ready && b.gateway.readiness().ready, 5000, "nodes ready");
  const sub = await Client.connect(b);
  sub.send({ type: "subscribe", topic: "lines" });
  expect((await sub.json()).type).toBe("subscribed");
  const pub = await Client.connect(a);
  const data = Array.from({ length: 50 }, (_, i) => ({ i, text: `line ${i}\nsecond\r\n"quoted"\u2028` }));
  for (const d of data) pub.send({ type: "publish", topic: "lines", data: d });
  for (const d of data) expect(await sub.json()).toEqual({ type: "message", topic: "lines", data: d });
  expect((a.broker as RedisBroker).counters.batches).toBeLessThan(50);
  sub.close();
  pub.close();
});

describe("history topics: a tick's appends of a topic are one script call", () => {
  const head = (i: number, pad = "") => JSON.stringify({ type: "message", topic: "h", data: { i, pad } }).slice(0, -1);

  test("offsets follow each other in publish order, every node delivers them in that order, the stream holds them", async () => {
    const a = await broker(1 << 20, true);
    const b = await broker(1 << 20, true);
    await a.broker.subscribe("h");
    await b.broker.subscribe("h");
    const before = await calls("evalsha");
    const offsets = await Promise.all(Array.from({ length: 100 }, (_, i) => a.broker.append("h", head(i))));
    expect(offsets).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect((await calls("evalsha")) - before).toBe(1);
    expect(a.broker.counters).toMatchObject({ sent: 100, batches: 1 });
    const expected = Array.from({ length: 100 }, (_, i) => `h ${head(i)},"offset":${i + 1}} @${i + 1}`);
    await until(() => a.log.length >= 100 && b.log.length >= 100, 5000, "both nodes delivered");
    expect(a.log).toEqual(expected); // the origin too delivers from the channel: one order everywhere
    expect(b.log).toEqual(expected);
    const read = await b.broker.read("h", { limit: 1000, create: false, since: undefined });
    expect(read.messages.map((m) => m.offset)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(read.messages[41]!.frame).toBe(`${head(41)},"offset":42}`);
  });

  test("a tick past 64 KiB is stored by several calls, offsets still consecutive and in order", async () => {
    const a = await broker(1 << 22, true);
    const b = await broker(1 << 20, true);
    await b.broker.subscribe("hbig");
    const big = (i: number) => JSON.stringify({ type: "message", topic: "hbig", data: { i, pad: "z".repeat(5000) } }).slice(0, -1);
    const offsets = await Promise.all(Array.from({ length: 40 }, (_, i) => a.broker.append("hbig", big(i))));
    expect(offsets).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(a.broker.counters.batches).toBeGreaterThanOrEqual(3);
    await until(() => b.log.length >= 40, 5000, "B delivered");
    expect(b.log).toEqual(Array.from({ length: 40 }, (_, i) => `hbig ${big(i)},"offset":${i + 1}} @${i + 1}`));
  });

  test("a presence event follows the history messages published before it in the tick, on every node", async () => {
    const a = await broker(1 << 20, true);
    const b = await broker(1 << 20, true);
    await b.broker.subscribe("hroom");
    const room = (i: number) => JSON.stringify({ type: "message", topic: "hroom", data: { i } }).slice(0, -1);
    const event = JSON.stringify({ type: "join", topic: "hroom", info: { user: "u" } });
    const first = [a.broker.append("hroom", room(1)), a.broker.append("hroom", room(2))];
    a.broker.announce("hroom", event);
    const last = a.broker.append("hroom", room(3));
    expect(await Promise.all([...first, last])).toEqual([1, 2, 3]);
    await until(() => b.log.length >= 4, 5000, "B received messages and event");
    expect(b.log).toEqual([`hroom ${room(1)},"offset":1} @1`, `hroom ${room(2)},"offset":2} @2`, `${presenceTopic("hroom")} ${event}`, `hroom ${room(3)},"offset":3} @3`]);
  });

  test("a refused script call refuses every append of the batch, and skips no offset", async () => {
    const a = await broker(1 << 20, true);
    expect(await a.broker.append("hbad", head(0))).toBe(1); // the topic's epoch exists (a new one empties the key)
    await redis.command("SET", ["sb:{hbad}:s", "not a stream"]);
    const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => a.broker.append("hbad", head(i))));
    expect(results.map((r) => r.status)).toEqual(Array(5).fill("rejected"));
    expect(String((results[0] as PromiseRejectedResult).reason)).toContain("WRONGTYPE");
    await redis.command("DEL", ["sb:{hbad}:s"]);
    expect(await a.broker.append("hbad", head(9))).toBe(2);
  });
});
