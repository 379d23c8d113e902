// Batched delivery (`?batch=1`) off the happy Redis path: the topic's stream on a node breaks (Redis flushed,
// a node's Redis link lost and restored, Redis restarted) and a since-resubscribe waits for a node's stream that
// another node is ahead of. Every test puts a batching subscriber (helpers' Client with ?batch=1, frames split
// on "\n") next to a non-batching one on the same node, and both must see the same lines: the same messages in
// the same order, the same `unsubscribed` (reason `recover`) after exactly the messages sent before it, the same
// recovery. Real servers, a real redis-server of this file (flushed, restarted, or reached through a TCP proxy
// that can cut a node off or hold back its subscriber connection's traffic).
import { afterEach, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import net from "node:net";
import type { Json } from "../src/protocol.ts";
import { Client, redisForFile, serve, stopAll, until, within, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

let redis: TestRedis;
redisForFile(async () => (redis = await startRedis()));
/** Whether this process owns the Redis server (it may kill and restart it). */
const owned = Bun.which("redis-server") !== null;
let redisDown = false;

/** Sockets and proxies of the current test, closed after it; a test that failed with Redis down restarts it. */
const closers: (() => void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  if (redisDown) await redis.start();
  redisDown = false;
  await stopAll();
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A message frame exactly as the server serializes it (history on: with its offset). */
const msg = (topic: string, data: Json, offset: number): string => `{"type":"message","topic":"${topic}","data":${JSON.stringify(data)},"offset":${offset}}`;
const recoverFrame = (topic: string) => `{"type":"unsubscribed","topic":"${topic}","reason":"recover"}`;
const subscribedFrame = (topic: string, epoch: string, offset: number, recovered: boolean | undefined, id: string) =>
  `{"type":"subscribed","topic":"${topic}","epoch":"${epoch}","offset":${offset}${recovered === undefined ? "" : `,"recovered":${recovered}`},"id":"${id}"}`;

async function node(overrides: Parameters<typeof serve>[0] = {}): Promise<TestServer> {
  const server = serve({ REDIS_URL: redis.url, HISTORY_SIZE: 1000, ...overrides });
  await until(() => server.gateway.readiness().ready, 5000, "node ready");
  return server;
}

/** Opens /connect with `query` ("?batch=1" batches) and takes its welcome. */
async function open(server: TestServer, query = ""): Promise<Client> {
  const c = await Client.open(`${server.ws("/connect")}${query}`);
  closers.push(() => c.close());
  const welcome = JSON.parse(await c.text()) as { type: string; batch?: boolean };
  if (welcome.type !== "welcome" || (welcome.batch === true) !== (query === "?batch=1")) throw new Error(`unexpected welcome ${JSON.stringify(welcome)}`);
  return c;
}

/** A batching and a non-batching subscriber on one node. */
interface Pair {
  batching: Client;
  plain: Client;
}

async function pair(server: TestServer): Promise<Pair> {
  return { batching: await open(server, "?batch=1"), plain: await open(server) };
}

const both = (p: Pair) => [p.batching, p.plain] as const;

/** Subscribes (with `since` when given) and returns the exact reply text, which must be one line. */
async function subscribe(c: Client, topic: string, id: string, since?: { epoch: string; offset: number }): Promise<string> {
  c.send({ type: "subscribe", topic, id, ...(since && { since }) });
  const reply = await c.text(5000);
  expect(reply).not.toContain("\n");
  return reply;
}

/** Lines read frame by frame until `n` lines (server frames) arrived; throws past `n`. Also the frame count. */
async function readLines(c: Client, n: number, ms = 5000): Promise<{ lines: string[]; frames: number }> {
  const lines: string[] = [];
  let frames = 0;
  while (lines.length < n) {
    lines.push(...(await c.text(ms)).split("\n"));
    frames++;
  }
  if (lines.length !== n) throw new Error(`expected ${n} lines, got ${lines.length}: ${JSON.stringify(lines)}`);
  return { lines, frames };
}

/**
 * Lines read frame by frame through the frame `last` (which must arrive as a frame of its own: replies are never
 * batched), `last` included.
 */
async function readThrough(c: Client, last: string, ms = 5000): Promise<string[]> {
  const lines: string[] = [];
  for (let frames = 0; frames < 10_000; frames++) {
    const frame = await c.text(ms);
    if (frame.split("\n").includes(last)) {
      expect(frame).toBe(last);
      return [...lines, frame];
    }
    lines.push(...frame.split("\n"));
  }
  throw new Error(`no ${last} within 10000 frames`);
}

/**
 * Publishes `data` to `topic` on `server` in one tick (each an append on the node's one Redis connection, so
 * Redis runs them in this order) and returns their offsets, in that order.
 */
async function burst(server: TestServer, topic: string, data: Json[]): Promise<number[]> {
  const outcomes = await Promise.all(data.map((d) => server.topics.publish(topic, d)));
  for (const outcome of outcomes) if (typeof outcome !== "number") throw new Error(`publish refused: ${JSON.stringify(outcome)}`);
  return outcomes as number[];
}

/**
 * Publishes `total` messages `{i}` (ids 0, 1, ...) on `c`, keeping `window` unanswered; after the `pause.at`th
 * ack it sends no more until `pause.run()` settles (those in flight go on). Resolves with the acked offsets in
 * publish order.
 */
function flood(c: Client, topic: string, total: number, window: number, pause: { at: number; run: () => Promise<unknown> }): Promise<number[]> {
  const offsets: number[] = [];
  let sent = 0;
  const sendNext = () => c.send({ type: "publish", topic, data: { i: sent }, id: sent++ });
  const done = (async () => {
    while (sent < Math.min(window, total)) sendNext();
    while (offsets.length < total) {
      const frame = await c.json(5000);
      if (frame.type !== "ack" || frame.id !== offsets.length || frame.offset === undefined) throw new Error(`ack ${offsets.length} expected, got ${JSON.stringify(frame)}`);
      offsets.push(frame.offset);
      if (offsets.length === pause.at) await within(pause.run(), 5000, "the pause");
      if (sent < total) sendNext();
    }
    return offsets;
  })();
  done.catch(() => {}); // awaited by the test
  return done;
}

const epochOf = (subscribed: string): string => (JSON.parse(subscribed) as { epoch: string }).epoch;

/**
 * A TCP proxy in front of Redis for one node. `cut()` drops every connection through it and refuses new ones
 * until `heal()` (the node loses Redis while others keep it). `hold()` keeps back what Redis sends on the
 * node's subscriber connection (the one that sent SUBSCRIBE: the messages of its channels) until `release()`
 * writes it all at once; its command connection (appends, history reads) goes on.
 */
async function redisProxy(target: string) {
  const upstreamPort = Number(new URL(target).port);
  let open = true;
  let holding = false;
  interface Link {
    client: net.Socket;
    upstream: net.Socket;
    subscriber: boolean;
    held: Buffer[];
  }
  const links = new Set<Link>();
  const server = net.createServer((client) => {
    client.on("error", () => {});
    if (!open) return void client.destroy();
    const upstream = net.connect(upstreamPort, "127.0.0.1");
    upstream.on("error", () => {});
    const link: Link = { client, upstream, subscriber: false, held: [] };
    links.add(link);
    client.on("data", (chunk: Buffer) => {
      if (/\r\nSUBSCRIBE\r\n/i.test(chunk.toString("latin1"))) link.subscriber = true;
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (holding && link.subscriber) link.held.push(chunk);
      else client.write(chunk);
    });
    const end = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end);
    upstream.on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const proxy = {
    url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    cut() {
      open = false;
      for (const link of [...links]) {
        link.client.destroy();
        link.upstream.destroy();
      }
      links.clear();
    },
    heal() {
      open = true;
    },
    hold() {
      holding = true;
    },
    /** Message frames held back so far (each Redis payload carries one). */
    heldMessages(): number {
      const text = [...links].map((link) => Buffer.concat(link.held).toString()).join("");
      return text.split('{"type":"message"').length - 1;
    },
    release() {
      holding = false;
      for (const link of links) {
        if (link.held.length > 0) link.client.write(Buffer.concat(link.held.splice(0)));
      }
    },
  };
  closers.push(() => {
    proxy.cut();
    server.close();
  });
  return proxy;
}

/** Recoveries of `topic` on `server` waiting for the node's own stream to reach their `since` (the pipeline's private map). */
const waitingForStream = (server: TestServer, topic: string): number =>
  (server.topics as unknown as { behind: Map<string, Map<unknown, unknown>> }).behind.get(topic)?.size ?? 0;

describe("Redis flushed while bursts flow", () => {
  // BATCH_MAX_DELAY_MS 200: batches wait across ticks, so the old epoch's batch is pending at the break anyway.
  for (const delay of [0, 200]) {
    test(`flushed between two halves of a burst that B hears in one tick: the old epoch's pending batch, then unsubscribed (recover), on both nodes alike (BATCH_MAX_DELAY_MS ${delay})`, async () => {
      const proxy = await redisProxy(redis.url);
      // B's Redis link is held back below for a moment: a long health deadline keeps it from being dropped.
      const b = serve({ REDIS_URL: proxy.url, HISTORY_SIZE: 1000, REDIS_TIMEOUT_MS: 10_000, BATCH_MAX_DELAY_MS: delay });
      await until(() => b.gateway.readiness().ready, 5000, "B ready");
      const a = await node({ BATCH_MAX_DELAY_MS: delay });
      const topic = `flush.tick.${delay}`;
      const onA = await pair(a);
      const onB = await pair(b);
      const clients = [...both(onA), ...both(onB)];
      const epoch = epochOf(await subscribe(onA.batching, topic, "s"));
      for (const c of clients.slice(1)) expect(await subscribe(c, topic, "s")).toBe(subscribedFrame(topic, epoch, 0, undefined, "s"));
      const old = (offset: number): Json => ({ old: offset });
      const fresh = (offset: number): Json => ({ fresh: offset });
      for (let round = 0; round < 5; round++) {
        expect(await burst(a, topic, range(round * 10 + 1, round * 10 + 10).map(old))).toEqual(range(round * 10 + 1, round * 10 + 10));
      }
      const first = range(1, 50).map((offset) => msg(topic, old(offset), offset));
      for (const c of clients) expect((await readLines(c, 50)).lines).toEqual(first);

      // Round 5: half of it, FLUSHALL, the other half (a new epoch). B hears the ten at once, in one tick: the
      // old epoch's 51..55 wait in its batch when the new epoch's first message breaks the stream.
      proxy.hold();
      expect(await burst(a, topic, range(51, 55).map(old))).toEqual(range(51, 55));
      expect(await redis.command("FLUSHALL", [])).toBe("OK");
      expect(await burst(a, topic, range(1, 5).map(fresh))).toEqual(range(1, 5));
      await until(() => proxy.heldMessages() === 10, 5000, "the ten copies for B held back");
      proxy.release();

      const tail = range(51, 55).map((offset) => msg(topic, old(offset), offset));
      // Batching on B: the pending batch goes out first, as one frame, then `unsubscribed` as a frame of its own.
      expect(await onB.batching.text()).toBe(tail.join("\n"));
      expect(await onB.batching.text()).toBe(recoverFrame(topic));
      for (const c of [onB.plain, ...both(onA)]) expect(await readThrough(c, recoverFrame(topic))).toEqual([...tail, recoverFrame(topic)]);
      for (const n of [a, b]) expect(n.gateway.metrics.streamBreaks).toBe(1);

      // Nothing of the topic came after it: the reply is the next frame, recovered:false in the new epoch.
      const again = await Promise.all(clients.map((c) => subscribe(c, topic, "r", { epoch, offset: 55 })));
      const epoch2 = epochOf(again[0]!);
      expect(epoch2).not.toBe(epoch);
      for (const reply of again) expect(reply).toBe(subscribedFrame(topic, epoch2, 5, false, "r"));
      expect(await burst(a, topic, range(6, 15).map(fresh))).toEqual(range(6, 15));
      const next = range(6, 15).map((offset) => msg(topic, fresh(offset), offset));
      for (const c of clients) expect((await readLines(c, 10)).lines).toEqual(next);
      for (const c of clients) expect(c.pending).toBe(0);
      for (const n of [a, b]) {
        expect(n.gateway.metrics.streamBreaks).toBe(1);
        expect(n.gateway.hub.recovering).toBe(0);
      }
    });
  }

  test("flushed during a flood, on two nodes: 1..k once each then unsubscribed (recover); resubscribed with since while it goes on, recovered:false, then every later offset once", async () => {
    const a = await node();
    const b = await node();
    const topic = "flush.flood";
    const clients = [...both(await pair(a)), ...both(await pair(b))];
    const epoch = epochOf(await subscribe(clients[0]!, topic, "s"));
    for (const c of clients.slice(1)) expect(await subscribe(c, topic, "s")).toBe(subscribedFrame(topic, epoch, 0, undefined, "s"));
    const flusher = new RedisClient(redis.url, { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: 2000 });
    closers.push(() => flusher.close());
    await within(flusher.connect(), 5000, "a Redis connection for FLUSHALL");

    // 600 publishes from a socket on A, 8 in flight; at the 100th ack, FLUSHALL, while the 8 are on their way.
    const total = 600;
    const publisher = await open(a);
    const acks = flood(publisher, topic, total, 8, { at: 100, run: () => flusher.send("FLUSHALL", []) });

    // Each subscriber: 1..k of the old epoch, consecutive, then unsubscribed (recover) in a frame of its own.
    const ks: number[] = [];
    for (const c of clients) {
      const lines = await readThrough(c, recoverFrame(topic));
      const offsets = lines.slice(0, -1).map((line) => (JSON.parse(line) as { offset: number }).offset);
      expect(offsets).toEqual(range(1, offsets.length));
      expect(lines.slice(0, -1)).toEqual(offsets.map((offset) => msg(topic, { i: offset - 1 }, offset)));
      ks.push(offsets.length);
    }
    const k = ks[0]!;
    expect(ks).toEqual([k, k, k, k]);
    expect(k).toBeGreaterThanOrEqual(100);
    expect(k).toBeLessThanOrEqual(108);
    // Back with since while the flood goes on: recovered:false in the new epoch, nothing replayed, then every
    // later offset once, in order, through the end of the flood.
    const last = total - k;
    const epochs = new Set<string>();
    const resumed = clients.map(async (c, n) => {
      const parsed: unknown = JSON.parse(await subscribe(c, topic, "r", { epoch, offset: k }));
      expect(parsed).toEqual({ type: "subscribed", topic, epoch: expect.any(String), offset: expect.any(Number), recovered: false, id: "r" });
      const reply = parsed as { epoch: string; offset: number };
      epochs.add(reply.epoch);
      let at = reply.offset;
      while (at < last) {
        for (const line of (await c.text(5000)).split("\n")) {
          const frame = JSON.parse(line) as { type: string; offset?: number };
          if (frame.type !== "message" || frame.offset !== at + 1) throw new Error(`client ${n}: after ${at} came ${line}`);
          expect(line).toBe(msg(topic, { i: k + at }, at + 1));
          at++;
        }
      }
      return reply.offset;
    });
    const from = await within(Promise.all(resumed), 10_000, "the resubscribed clients through the end");
    expect(await acks).toEqual([...range(1, k), ...range(1, last)]);
    expect(epochs.size).toBe(1);
    expect([...epochs][0]).not.toBe(epoch);
    expect(from.every((offset) => offset <= last)).toBe(true);
    publisher.send({ type: "publish", topic, data: "end" });
    for (const c of clients) expect(await c.text()).toBe(msg(topic, "end", last + 1));
    for (const c of clients) expect(c.pending).toBe(0);
    for (const n of [a, b]) {
      expect(n.gateway.metrics.streamBreaks).toBe(1);
      expect(n.gateway.hub.recovering).toBe(0);
    }
  });
});

describe("a node's Redis link lost and restored", () => {
  test("quiet, then active: the restored check sends both to recover once, after the same messages; since recovers the missed ones, replayed frame by frame", async () => {
    const proxy = await redisProxy(redis.url);
    const a = serve({ REDIS_URL: proxy.url, HISTORY_SIZE: 1000 });
    await until(() => a.gateway.readiness().ready, 5000, "A ready");
    const b = await node();
    const topic = "link.lost";
    const p = await pair(a);
    const replies = [await subscribe(p.batching, topic, "s"), await subscribe(p.plain, topic, "s")];
    const epoch = epochOf(replies[0]!);
    for (const reply of replies) expect(reply).toBe(subscribedFrame(topic, epoch, 0, undefined, "s"));
    const data = (offset: number): Json => ({ n: offset });
    const publish = async (from: number, to: number) => expect(await burst(b, topic, range(from, to).map(data))).toEqual(range(from, to));
    const frames = (from: number, to: number) => range(from, to).map((offset) => msg(topic, data(offset), offset));

    await publish(1, 10);
    for (const c of both(p)) expect((await readLines(c, 10)).lines).toEqual(frames(1, 10));

    // Quiet: A is cut off, 11..20 are published meanwhile, then nothing. Only the check on reconnect can tell.
    proxy.cut();
    await until(() => !a.gateway.readiness().ready, 5000, "A to lose Redis");
    await publish(11, 20);
    proxy.heal();
    for (const c of both(p)) expect(await c.text(10_000)).toBe(recoverFrame(topic));
    expect(a.gateway.metrics.streamBreaks).toBe(1);
    // The same recovery for both: recovered, and 11..20 replayed as single frames (replays are never batched).
    for (const c of both(p)) {
      expect(await subscribe(c, topic, "r1", { epoch, offset: 10 })).toBe(subscribedFrame(topic, epoch, 20, true, "r1"));
      for (const frame of frames(11, 20)) expect(await c.text()).toBe(frame);
    }
    // Active again: live bursts reach both.
    await publish(21, 30);
    for (const c of both(p)) expect((await readLines(c, 10)).lines).toEqual(frames(21, 30));

    // Cut off again, 31..40 published meanwhile, and a burst right after the heal: whichever notices first (the
    // check on reconnect, or the jump at the first message A hears), each gets one `unsubscribed`, after 30.
    proxy.cut();
    await until(() => !a.gateway.readiness().ready, 5000, "A to lose Redis again");
    await publish(31, 40);
    proxy.heal();
    await publish(41, 50);
    for (const c of both(p)) expect(await c.text(10_000)).toBe(recoverFrame(topic));
    await until(() => a.gateway.readiness().ready && a.gateway.topics.localInterest(topic) === 0, 10_000, "A back, the topic released");
    for (const c of both(p)) {
      expect(await subscribe(c, topic, "r2", { epoch, offset: 30 })).toBe(subscribedFrame(topic, epoch, 50, true, "r2"));
      for (const frame of frames(31, 50)) expect(await c.text()).toBe(frame);
    }
    await publish(51, 60);
    for (const c of both(p)) expect((await readLines(c, 10)).lines).toEqual(frames(51, 60));
    for (const c of both(p)) expect(c.pending).toBe(0);
    expect(a.gateway.metrics.recoveries.get("recovered")).toBe(4);
    expect(a.gateway.hub.recovering).toBe(0);
  });

  test.skipIf(!owned)("Redis restarted (empty) while the topic is quiet: both sent to recover; recovered:false in a new epoch, then live bursts alike", async () => {
    const a = await node();
    const topic = "restarted.quiet";
    const p = await pair(a);
    const replies = [await subscribe(p.batching, topic, "s"), await subscribe(p.plain, topic, "s")];
    const epoch = epochOf(replies[0]!);
    const first = range(1, 10).map((n) => ({ first: n }));
    expect(await burst(a, topic, first)).toEqual(range(1, 10));
    const expected = first.map((d, i) => msg(topic, d, i + 1));
    for (const c of both(p)) expect((await readLines(c, 10)).lines).toEqual(expected);

    redisDown = true;
    await redis.stop();
    await until(() => !a.gateway.readiness().ready, 5000, "A to lose Redis");
    await redis.start();
    redisDown = false;
    // No message comes: the check on reconnect finds the topic's history gone and sends both away.
    for (const c of both(p)) expect(await c.text(10_000)).toBe(recoverFrame(topic));
    expect(a.gateway.metrics.streamBreaks).toBe(1);
    const again = [await subscribe(p.batching, topic, "r", { epoch, offset: 10 }), await subscribe(p.plain, topic, "r", { epoch, offset: 10 })];
    const epoch2 = epochOf(again[0]!);
    expect(epoch2).not.toBe(epoch);
    for (const reply of again) expect(reply).toBe(subscribedFrame(topic, epoch2, 0, false, "r"));

    const next = range(1, 10).map((n) => ({ next: n }));
    expect(await burst(a, topic, next)).toEqual(range(1, 10));
    for (const c of both(p)) expect((await readLines(c, 10)).lines).toEqual(next.map((d, i) => msg(topic, d, i + 1)));
    for (const c of both(p)) expect(c.pending).toBe(0);
    expect(a.gateway.metrics.streamBreaks).toBe(1);
  });
});

describe("a since-resubscribe waiting for this node's stream", () => {
  for (const delay of [0, 200]) {
    test(`another node ahead: the recoveries wait on B, then get since+1... exactly once, in order, batching or not (BATCH_MAX_DELAY_MS ${delay})`, async () => {
      const proxy = await redisProxy(redis.url);
      // B's Redis link is held back below for a moment: a long health deadline keeps it from being dropped.
      const b = serve({ REDIS_URL: proxy.url, HISTORY_SIZE: 1000, REDIS_TIMEOUT_MS: 10_000, BATCH_MAX_DELAY_MS: delay });
      await until(() => b.gateway.readiness().ready, 5000, "B ready");
      const a = await node({ BATCH_MAX_DELAY_MS: delay });
      const topic = `ahead.${delay}`;
      const data = (offset: number): Json => ({ at: offset });
      const frames = (from: number, to: number) => range(from, to).map((offset) => msg(topic, data(offset), offset));
      const publish = async (from: number, to: number) => expect(await burst(a, topic, range(from, to).map(data))).toEqual(range(from, to));

      // Stayers on B give B its own stream of the topic; a pair on A reads what A delivers.
      const stay = await pair(b);
      const onA = await pair(a);
      const epoch = epochOf(await subscribe(stay.batching, topic, "s"));
      for (const c of [stay.plain, ...both(onA)]) expect(await subscribe(c, topic, "s")).toBe(subscribedFrame(topic, epoch, 0, undefined, "s"));
      await publish(1, 5);
      for (const c of [...both(stay), ...both(onA)]) expect((await readLines(c, 5)).lines).toEqual(frames(1, 5));

      // B stops hearing the topic; A delivers 6..10.
      proxy.hold();
      await publish(6, 10);
      for (const c of both(onA)) expect((await readLines(c, 5)).lines).toEqual(frames(6, 10));
      await until(() => proxy.heldMessages() === 5, 5000, "B's copies of 6..10 held back");
      // Clients that had everything up to 10 (from A), and others that stopped at 7, resume on B, which is at 5.
      const head = await pair(b);
      const mid = await pair(b);
      for (const c of both(head)) c.send({ type: "subscribe", topic, since: { epoch, offset: 10 }, id: "head" });
      for (const c of both(mid)) c.send({ type: "subscribe", topic, since: { epoch, offset: 7 }, id: "mid" });
      await until(() => waitingForStream(b, topic) === 4, 5000, "the four recoveries waiting for B's stream");
      for (const c of [...both(head), ...both(mid)]) expect(c.pending).toBe(0);
      // More is published meanwhile; then B hears 6..15 at once.
      await publish(11, 15);
      proxy.release();

      // Each recovery finishes the moment B's stream reaches its `since`: subscribed there, then every later
      // message live, exactly once.
      for (const c of both(head)) {
        expect(await c.text()).toBe(subscribedFrame(topic, epoch, 10, true, "head"));
        expect((await readLines(c, 5)).lines).toEqual(frames(11, 15));
      }
      for (const c of both(mid)) {
        expect(await c.text()).toBe(subscribedFrame(topic, epoch, 7, true, "mid"));
        expect((await readLines(c, 8)).lines).toEqual(frames(8, 15));
      }
      for (const c of both(stay)) expect((await readLines(c, 10)).lines).toEqual(frames(6, 15));
      for (const c of both(onA)) expect((await readLines(c, 5)).lines).toEqual(frames(11, 15));
      expect(waitingForStream(b, topic)).toBe(0);

      await publish(16, 25);
      for (const c of [...both(stay), ...both(head), ...both(mid), ...both(onA)]) expect((await readLines(c, 10)).lines).toEqual(frames(16, 25));
      for (const c of [...both(stay), ...both(head), ...both(mid), ...both(onA)]) expect(c.pending).toBe(0);
      expect(b.gateway.metrics.recoveries.get("recovered")).toBe(4);
      expect(b.gateway.metrics.recoveries.get("not_recovered")).toBe(0);
      for (const n of [a, b]) {
        expect(n.gateway.metrics.streamBreaks).toBe(0);
        expect(n.gateway.hub.recovering).toBe(0);
      }
    });
  }
});
