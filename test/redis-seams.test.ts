// The seams between the topic pipeline and the Redis broker, tried on purpose against a real redis-server:
// subscribe/unsubscribe/close racing Redis's replies, subscribes while Redis is away or refusing, a Redis that
// hangs (SIGSTOP), and the ordering promise "no message of T before T's subscribed".
//
// These seams are the Redis pub/sub path and its per-channel state machine, which is the whole path with history
// off. Tests of behaviour that only exists with history off (local-first delivery, local delivery while Redis is
// away, a subscribe confirmed by the bounded wait alone) pass HISTORY_SIZE: 0 and say so; the rest run on the
// defaults (history on: publishes are stored in Redis and every node delivers them from there, with offsets).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisBroker } from "../src/broker/redis.ts";
import { Logger } from "../src/log.ts";
import type { ServerFrame } from "../src/protocol.ts";
import { Client, serve, stopAll, until, within, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await stopAll();
  if (redis.owned) {
    redis.signal("SIGCONT");
    await redis.stop();
  }
});

const brokerOf = (server: TestServer) => server.broker as RedisBroker;

async function node(overrides: Parameters<typeof serve>[0] = {}, deps: Parameters<typeof serve>[1] = {}): Promise<TestServer> {
  const server = serve({ REDIS_URL: redis.url, ...overrides }, deps);
  await until(() => server.gateway.readiness().ready, 5000, "node ready");
  return server;
}

/**
 * A node whose broker waits only `confirmMs` for Redis before confirming a subscription anyway. History off: the
 * broker is built here without a history store (its tests are about the channel state machine).
 */
function nodeWithConfirm(confirmMs: number, lines: string[] = []): Promise<TestServer> {
  const log = new Logger("info", (line) => lines.push(line));
  const broker = new RedisBroker({ url: redis.url, log, timeoutMs: 2000, maxPendingBytes: 1 << 20, confirmMs, baseMs: 20, capMs: 200 });
  return node({ HISTORY_SIZE: 0 }, { broker, log });
}

const numsub = async (topic: string): Promise<number> => {
  const reply = (await redis.command("PUBSUB", ["NUMSUB", `sb:${topic}`])) as [string, number];
  return Number(reply[1]);
};

/** Reads `count` message frames of `topic` and returns their data, failing on any other frame. */
async function messages(client: Client, count: number): Promise<unknown[]> {
  const got: unknown[] = [];
  while (got.length < count) {
    const frame = await client.json(5000);
    expect(frame.type).toBe("message");
    got.push((frame as Extract<ServerFrame, { type: "message" }>).data);
  }
  return got;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

/** An epoch as the server makes them (src/history/history.ts newEpoch). */
const EPOCH = /^[0-9a-z]{8}$/;

describe("subscribe vs unsubscribe vs close, before Redis answers", () => {
  test("replies keep request order, nothing throws, and later subscribers get each message exactly once", async () => {
    const a = await node();
    const b = await node();
    const quick = await Client.connect(a);
    // Redis frozen for the burst, so that no SUBSCRIBE can be confirmed (and no position read) between two of
    // the frames whatever the scheduling: every subscribe is cancelled before Redis answered, by construction.
    redis.signal("SIGSTOP");
    try {
      for (let i = 0; i < 20; i++) {
        quick.send({ type: "subscribe", topic: "flicker", id: `s${i}` });
        quick.send({ type: "unsubscribe", topic: "flicker", id: `u${i}` });
      }
      for (let i = 0; i < 20; i++) {
        // Cancelled before Redis confirmed it: answered plainly (no position), then the unsubscribe.
        expect(await quick.json()).toEqual({ type: "subscribed", topic: "flicker", id: `s${i}` });
        expect(await quick.json()).toEqual({ type: "unsubscribed", topic: "flicker", id: `u${i}` });
      }
    } finally {
      redis.signal("SIGCONT");
    }
    // A close right after a subscribe, on fresh connections, 20 times.
    const closers = await Promise.all(range(0, 20).map(() => Client.connect(a)));
    for (const c of closers) {
      c.send({ type: "subscribe", topic: "flicker" });
      c.close();
    }
    await until(() => a.gateway.connections.size === 1, 3000, "closers gone");
    await until(() => brokerOf(a).converged(), 3000, "A's Redis subscriptions == local interest");
    expect(await numsub("flicker")).toBe(0);
    expect(a.gateway.topics.localInterest("flicker")).toBe(0);

    const sub = await Client.connect(a);
    expect(await sub.request({ type: "subscribe", topic: "flicker" })).toEqual({
      type: "subscribed",
      topic: "flicker",
      epoch: expect.stringMatching(EPOCH),
      offset: 0,
    });
    expect(await numsub("flicker")).toBe(1);
    const publisher = await Client.connect(b);
    for (const i of range(0, 50)) publisher.send({ type: "publish", topic: "flicker", data: i });
    const got: ServerFrame[] = [];
    for (let i = 0; i < 50; i++) got.push(await sub.json(5000));
    expect(got).toEqual(range(0, 50).map((i) => ({ type: "message", topic: "flicker", data: i, offset: i + 1 })));
    expect(await quick.request({ type: "ping", id: "alive" })).toEqual({ type: "pong", id: "alive" });
    // Exactly once: B's 50 payloads reached A once each (a doubled Redis subscription would deliver 100).
    await until(() => brokerOf(a).counters.received >= 50, 3000, "A received");
    expect(await publisher.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
    expect(brokerOf(a).counters.received).toBe(50);
    expect(sub.pending).toBe(0);
  });
});

describe("subscribed means cross-node messages will arrive, and nothing comes before it", () => {
  test("while Redis has not confirmed, local publishes do not reach the new subscribers; afterwards everything does", async () => {
    // History off: local-first delivery (a publish reaches this node's subscribers without Redis) exists only
    // without history; with it, every delivery comes from Redis.
    const a = await node({ REDIS_TIMEOUT_MS: 30_000, HISTORY_SIZE: 0 });
    const publisher = await Client.connect(a);
    const first = await Client.connect(a);
    const second = await Client.connect(a);
    redis.signal("SIGSTOP"); // Redis cannot answer the SUBSCRIBE until SIGCONT
    try {
      first.send({ type: "subscribe", topic: "ordered", id: 1 });
      second.send({ type: "subscribe", topic: "ordered", id: 2 });
      for (const i of range(0, 10)) publisher.send({ type: "publish", topic: "ordered", data: i, id: i });
      for (const i of range(0, 10)) expect(await publisher.json()).toEqual({ type: "ack", id: i });
    } finally {
      redis.signal("SIGCONT");
    }
    expect(await first.json()).toEqual({ type: "subscribed", topic: "ordered", id: 1 });
    expect(await second.json()).toEqual({ type: "subscribed", topic: "ordered", id: 2 });
    expect(brokerOf(a).counters.subscribe_timeouts).toBe(0); // confirmed by Redis, not by the fallback
    for (const i of range(10, 20)) publisher.send({ type: "publish", topic: "ordered", data: i });
    expect(await messages(first, 10)).toEqual(range(10, 20));
    expect(await messages(second, 10)).toEqual(range(10, 20));
  });
});

describe("interest converges whatever Redis does", () => {
  test("subscribes while Redis is down and during the resubscribe are all restored", async () => {
    const lines: string[] = [];
    const a = await nodeWithConfirm(100, lines);
    // History off (A's broker has none; B publishes the same way): delivery across the restart, which empties
    // Redis, is the pub/sub path's; with history on, the emptied topics start new epochs and subscribers recover.
    const b = await node({ HISTORY_SIZE: 0 });
    const early = await Client.connect(a);
    expect(await early.request({ type: "subscribe", topic: "before" })).toEqual({ type: "subscribed", topic: "before" });

    await redis.stop();
    await until(() => !a.gateway.readiness().ready, 5000, "A degraded");
    // Subscribed while Redis is away: confirmed at once (the node says it is degraded), restored when Redis returns.
    const during = await Client.connect(a);
    expect(await during.request({ type: "subscribe", topic: "during" })).toEqual({ type: "subscribed", topic: "during" });

    await redis.start();
    // Subscribe at once, while A is (re)connecting and restoring its channels.
    const racing = await Client.connect(a);
    racing.send({ type: "subscribe", topic: "racing", id: "r" });
    expect(await racing.json()).toEqual({ type: "subscribed", topic: "racing", id: "r" });
    await until(() => brokerOf(a).converged() && b.gateway.readiness().ready, 10_000, "A converged, B ready");
    for (const topic of ["before", "during", "racing"]) expect(await numsub(topic)).toBe(1);

    const publisher = await Client.connect(b);
    for (const [client, topic] of [[early, "before"], [during, "during"], [racing, "racing"]] as const) {
      publisher.send({ type: "publish", topic, data: topic });
      expect(await messages(client, 1)).toEqual([topic]);
    }
  });

  test("a refused SUBSCRIBE (Redis ACL) is retried until Redis accepts it", async () => {
    const lines: string[] = [];
    const a = await nodeWithConfirm(100, lines);
    const b = await node({ HISTORY_SIZE: 0 }); // history off, like A: a refused SUBSCRIBE is confirmed as in an outage
    // A topic Redis keeps allowing, held on A before and after: Bun's client closes a subscriber connection on
    // an error reply, so the refused channel must not make A's connection flap (and lose this one).
    const steady = await Client.connect(a);
    expect(await steady.request({ type: "subscribe", topic: "open.steady" })).toEqual({ type: "subscribed", topic: "open.steady" });
    // The control channel stays allowed: every node holds it for its life (Redis drops a connection that holds
    // a channel the ACL no longer allows).
    await redis.command("ACL", ["SETUSER", "default", "resetchannels", "&sb:open*", "&sb:$ctl"]);
    try {
      const sub = await Client.connect(a);
      // Refused: Bun's client closes the subscriber connection on the error reply, so the subscription is
      // confirmed as during any outage, and the channel is retried with backoff on the next connection.
      expect(await sub.request({ type: "subscribe", topic: "guarded" })).toEqual({ type: "subscribed", topic: "guarded" });
      await until(() => lines.some((l) => JSON.parse(l).event === "redis_subscribe_failed"), 3000, "SUBSCRIBE refused");
      expect(await numsub("guarded")).toBe(0);
      await redis.command("ACL", ["SETUSER", "default", "allchannels"]);
      await until(() => brokerOf(a).converged() && brokerOf(b).converged(), 10_000, "retried");
      expect(await numsub("guarded")).toBe(1);
      const publisher = await Client.connect(b);
      publisher.send({ type: "publish", topic: "guarded", data: "through" });
      expect(await messages(sub, 1)).toEqual(["through"]);
      publisher.send({ type: "publish", topic: "open.steady", data: "still here" });
      expect(await messages(steady, 1)).toEqual(["still here"]);
      // One report for the refusals in a row, one for the recovery; the connection was not hammered.
      expect(lines.filter((l) => JSON.parse(l).event === "redis_subscribe_failed")).toHaveLength(1);
      expect(lines.filter((l) => JSON.parse(l).event === "redis_subscribe_recovered")).toHaveLength(1);
      expect(brokerOf(a).counters.reconnects).toBeLessThanOrEqual(5);
    } finally {
      await redis.command("ACL", ["SETUSER", "default", "allchannels"]);
    }
  });
});

describe("a retry outliving its channel", () => {
  test("a SUBSCRIBE retry for a channel dropped and wanted again never touches the newer channel", async () => {
    const log = new Logger("silent");
    // baseMs is also the first SUBSCRIBE retry delay: 400 ms leaves room to drop and re-want the channel.
    const broker = new RedisBroker({ url: redis.url, log, timeoutMs: 2000, maxPendingBytes: 1 << 20, baseMs: 400 });
    // History off: the broker is built without a history store, and the refused SUBSCRIBE is confirmed as in
    // an outage, which with history on would also depend on reading the history.
    const a = await node({ HISTORY_SIZE: 0 }, { broker, log });
    const b = await node({ HISTORY_SIZE: 0 });
    await redis.command("ACL", ["SETUSER", "default", "resetchannels", "&sb:open*", "&sb:$ctl"]);
    try {
      const first = await Client.connect(a);
      first.send({ type: "subscribe", topic: "retried", id: 1 }); // refused: a retry is scheduled
      await until(() => broker.counters.subscribe_failures >= 1, 3000, "SUBSCRIBE refused");
      expect(await first.json()).toEqual({ type: "subscribed", topic: "retried", id: 1 });
      expect(await first.request({ type: "unsubscribe", topic: "retried", id: 2 })).toEqual({ type: "unsubscribed", topic: "retried", id: 2 });
    } finally {
      await redis.command("ACL", ["SETUSER", "default", "allchannels"]);
    }
    const second = await Client.connect(a);
    expect(await second.request({ type: "subscribe", topic: "retried" })).toEqual({ type: "subscribed", topic: "retried" });
    await until(() => broker.converged(), 3000, "second subscription confirmed");
    await Bun.sleep(600); // past the first channel's retry: with the bug, it deleted the second channel's state
    const third = await Client.connect(a);
    expect(await third.request({ type: "subscribe", topic: "retried" })).toEqual({ type: "subscribed", topic: "retried" });
    second.close();
    await until(() => a.gateway.topics.localInterest("retried") === 1 && broker.converged(), 3000, "second gone");
    const publisher = await Client.connect(b);
    publisher.send({ type: "publish", topic: "retried", data: 1 });
    publisher.send({ type: "publish", topic: "retried", data: 2 });
    const got = await messages(third, 2);
    expect(got).toEqual([1, 2]);
    expect(await numsub("retried")).toBe(1);
    // Exactly once: a marker on a second topic arrives after B's two payloads; A received exactly those.
    expect(await third.request({ type: "subscribe", topic: "marker" })).toEqual({ type: "subscribed", topic: "marker" });
    publisher.send({ type: "publish", topic: "marker", data: "end" });
    expect(await messages(third, 1)).toEqual(["end"]);
    expect(broker.counters.received).toBe(3);
  });
});

describe("a connected Redis that does not answer", () => {
  test("subscribed is sent after the bounded wait, logged and counted; the channel is subscribed when Redis wakes", async () => {
    const lines: string[] = [];
    // History off (nodeWithConfirm): with history on, `subscribed` also waits for the history read, which a
    // frozen Redis holds until the stall check drops the connection (REDIS_TIMEOUT_MS), not for confirmMs alone.
    const a = await nodeWithConfirm(100, lines);
    const sub = await Client.connect(a);
    redis.signal("SIGSTOP");
    try {
      expect(await sub.request({ type: "subscribe", topic: "sleepy", id: 1 })).toEqual({ type: "subscribed", topic: "sleepy", id: 1 });
      expect(brokerOf(a).counters.subscribe_timeouts).toBe(1);
      expect(lines.some((l) => JSON.parse(l).event === "redis_subscribe_slow")).toBe(true);
    } finally {
      redis.signal("SIGCONT");
    }
    await until(() => brokerOf(a).converged(), 5000, "subscribed once Redis answers");
    expect(await numsub("sleepy")).toBe(1);
  });
});

describe("a Redis that hangs (SIGSTOP)", () => {
  test("is detected, reported, and never queued into without bound; local delivery goes on; it recovers", async () => {
    const lines: string[] = [];
    const log = new Logger("warn", (line) => lines.push(line));
    // History off: local delivery going on while Redis hangs exists only without history (with it, publishes
    // are refused with unavailable since they cannot be stored).
    const overrides = { REDIS_TIMEOUT_MS: 300, REDIS_MAX_PENDING_BYTES: 64 * 1024, MAX_PAYLOAD_BYTES: 64 * 1024, HISTORY_SIZE: 0 };
    const a = await node(overrides, { log });
    const b = await node(overrides);
    const localSub = await Client.connect(a);
    const remoteSub = await Client.connect(b);
    for (const s of [localSub, remoteSub]) expect(await s.request({ type: "subscribe", topic: "hung" })).toEqual({ type: "subscribed", topic: "hung" });
    const publisher = await Client.connect(a);
    const readyz = async () => (await fetch(`${a.url.replace("0.0.0.0", "127.0.0.1")}/readyz`)).status;

    redis.signal("SIGSTOP");
    let maxPending = 0;
    try {
      const payload = "x".repeat(1000);
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 100; i++) publisher.send({ type: "publish", topic: "hung", data: payload });
        await until(() => a.gateway.metrics.publishes >= (round + 1) * 100, 5000, "publishes handled");
        maxPending = Math.max(maxPending, brokerOf(a).gauges().pending_bytes!);
      }
      await until(() => !a.gateway.readiness().ready && !b.gateway.readiness().ready, 5000, "stall detected on both nodes");
      expect(await readyz()).toBe(503);
      expect(lines.some((l) => JSON.parse(l).event === "redis_stalled")).toBe(true);
    } finally {
      redis.signal("SIGCONT");
    }
    // Bounded: never more than the configured bytes waiting for Redis; the rest were dropped and counted.
    expect(maxPending).toBeLessThanOrEqual(64 * 1024);
    expect(brokerOf(a).counters.dropped).toBeGreaterThan(0);
    expect(brokerOf(a).counters.stalls).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`http://127.0.0.1:${a.port}/metrics`)).text();
    expect(metrics).toContain("switchboard_redis_stalls_total");
    // Local delivery went on: all 2,000 reached the local subscriber, in order.
    expect(await messages(localSub, 2000)).toHaveLength(2000);

    await until(() => brokerOf(a).converged() && brokerOf(b).converged(), 10_000, "recovered");
    expect(await readyz()).toBe(200);
    // B dropped its connections when it saw the stall, so what A had handed to the frozen Redis never reaches
    // it late; a new publish arrives exactly once.
    expect(remoteSub.pending).toBe(0);
    publisher.send({ type: "publish", topic: "hung", data: "after" });
    expect(await within(messages(remoteSub, 1), 5000, "after")).toEqual(["after"]);
    expect(await messages(localSub, 1)).toEqual(["after"]);
    expect(await remoteSub.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
  });
});
