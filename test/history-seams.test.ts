// The recovery step's own seams on a real Redis: a recovery in flight (its history read held back by
// `CLIENT PAUSE ... WRITE`, which stops the read script while SUBSCRIBE and PING go on) meets an unsubscribe, a
// close, and live messages; nothing may be sent after `unsubscribed`, no buffer may be left behind.
import { describe, expect, test } from "bun:test";
import type { ServerFrame } from "../src/protocol.ts";
import { Client, redisForFile, serve, until, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

let redis: TestRedis;
redisForFile(async () => (redis = await startRedis()));

async function node(): Promise<TestServer> {
  const server = serve({ REDIS_URL: redis.url });
  await until(() => server.gateway.readiness().ready, 5000, "node ready");
  return server;
}

/** Holds back write commands (the history scripts, PUBLISH) for `ms`; subscriptions and PINGs go on. */
const pauseWrites = (ms: number) => redis.command("CLIENT", ["PAUSE", String(ms), "WRITE"]);

async function position(server: TestServer, topic: string): Promise<{ epoch: string; offset: number }> {
  const c = await Client.connect(server);
  const reply = await c.request({ type: "subscribe", topic, id: 0 });
  c.close();
  if (reply.type !== "subscribed" || reply.epoch === undefined) throw new Error(`no position: ${JSON.stringify(reply)}`);
  return { epoch: reply.epoch, offset: reply.offset! };
}

describe("a recovery in flight", () => {
  test("unsubscribed before its history read returns: subscribed then unsubscribed at once, nothing after, no buffer left", async () => {
    const server = await node();
    const since = await position(server, "paused");
    const c = await Client.connect(server);
    await pauseWrites(400);
    c.send({ type: "subscribe", topic: "paused", since, id: 1 });
    await until(() => server.gateway.hub.recovering === 1, 2000, "the recovery to start");
    c.send({ type: "unsubscribe", topic: "paused", id: 2 });
    expect(await c.json()).toEqual({ type: "subscribed", topic: "paused", id: 1 });
    expect(await c.json()).toEqual({ type: "unsubscribed", topic: "paused", id: 2 });
    expect(server.gateway.hub.recovering).toBe(0);
    await Bun.sleep(500); // the pause ends and the read returns: it must find the subscription gone
    expect(c.pending).toBe(0);
    expect(server.topics.localInterest("paused")).toBe(0);
    c.close();
  });

  test("closed before its history read returns: the buffer is dropped with the connection", async () => {
    const server = await node();
    const since = await position(server, "closing");
    const c = await Client.connect(server);
    await pauseWrites(300);
    c.send({ type: "subscribe", topic: "closing", since, id: 1 });
    await until(() => server.gateway.hub.recovering === 1, 2000, "the recovery to start");
    c.close();
    await until(() => server.gateway.connections.size === 0, 2000, "the close");
    expect(server.gateway.hub.recovering).toBe(0);
    expect(server.topics.localInterest("closing")).toBe(0);
  });

  test("messages published by another node while the read is held back arrive once, after the replay, in order", async () => {
    const a = await node();
    const b = await node();
    const since = await position(a, "meanwhile");
    const pub = await Client.connect(b);
    for (let n = 1; n <= 3; n++) pub.send({ type: "publish", topic: "meanwhile", data: n, id: n });
    for (let n = 1; n <= 3; n++) expect(await pub.json()).toEqual({ type: "ack", id: n, offset: n });
    const c = await Client.connect(a);
    // Publishes are writes too, so the pause holds them back with the read: they run after it, in order, and
    // the read sees some of them or none. Either way the subscriber must get 1..6 once each.
    await pauseWrites(300);
    c.send({ type: "subscribe", topic: "meanwhile", since, id: 9 });
    for (let n = 4; n <= 6; n++) pub.send({ type: "publish", topic: "meanwhile", data: n, id: n });
    const reply = (await c.json(3000)) as Extract<ServerFrame, { type: "subscribed" }>;
    expect(reply).toMatchObject({ type: "subscribed", topic: "meanwhile", epoch: since.epoch, recovered: true, id: 9 });
    const got: number[] = [];
    while (got.length < 6) {
      const frame = await c.json(3000);
      expect(frame).toEqual({ type: "message", topic: "meanwhile", data: got.length + 1, offset: got.length + 1 });
      got.push(got.length + 1);
    }
    await c.silence(50);
    expect(a.gateway.hub.recovering).toBe(0);
    for (const x of [pub, c]) x.close();
  });
});
