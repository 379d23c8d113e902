// Recovery (1011 for one socket, never the process), backpressure on slow consumers, and draining.
import { afterAll, describe, expect, test } from "bun:test";
import { MemoryBroker } from "../src/broker/memory.ts";
import { systemClock } from "../src/clock.ts";
import { configWith } from "../src/config.ts";
import { MemoryHistory } from "../src/history/memory.ts";
import { Logger } from "../src/log.ts";
import { Client, connectionsOf, RawPeer, serve, stopAll, until, within } from "./helpers.ts";

afterAll(stopAll);

/**
 * A real memory broker, with the default history the server would give it, that fails on one topic, standing
 * in for any bug in a handler. With history on (the default) a publish goes through `append`.
 */
class FailingBroker extends MemoryBroker {
  constructor() {
    const { HISTORY_SIZE, HISTORY_TTL_MS, HISTORY_MAX_BYTES } = configWith();
    super(new MemoryHistory({ size: HISTORY_SIZE, ttlMs: HISTORY_TTL_MS, maxBytes: HISTORY_MAX_BYTES, clock: systemClock, held: () => true }));
  }
  override append(topic: string, head: string): number {
    if (topic === "explode") throw new Error("broker exploded");
    return super.append(topic, head);
  }
  override publish(topic: string, frame: string): Promise<void> {
    if (topic === "explode") throw new Error("broker exploded");
    return super.publish(topic, frame);
  }
}

describe("recovery", () => {
  test("a throwing handler closes that one connection with 1011, logs it, and the rest go on", async () => {
    const lines: string[] = [];
    const server = serve({ LOG_LEVEL: "error" }, { broker: new FailingBroker(), log: new Logger("error", (l) => lines.push(l)) });
    const victim = await Client.connect(server);
    const bystander = await Client.connect(server);
    expect(await bystander.request({ type: "subscribe", topic: "calm" })).toEqual({
      type: "subscribed",
      topic: "calm",
      epoch: expect.stringMatching(/^[0-9a-z]{8}$/),
      offset: 0,
    });

    victim.send({ type: "publish", topic: "explode", data: 1, id: 1 });
    expect(await within(victim.closed, 3000, "victim close")).toEqual({ code: 1011, reason: "internal error" });

    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]!);
    expect(entry).toMatchObject({ level: "error", event: "handler_failed", error: "broker exploded", where: "websocket" });
    expect(typeof entry.connectionId).toBe("string");

    // The process, the other connection and new connections are fine.
    bystander.send({ type: "publish", topic: "calm", data: "ok" });
    expect(await bystander.json()).toEqual({ type: "message", topic: "calm", data: "ok", offset: 1 });
    const fresh = await Client.connect(server);
    expect(await fresh.request({ type: "ping" })).toEqual({ type: "pong" });
    await until(() => server.gateway.connections.size === 2, 2000, "victim freed");
    expect(await connectionsOf(server)).toBe(2);
    bystander.close();
    fresh.close();
  });

  test("many failures in a row never take the process down", async () => {
    const server = serve({}, { broker: new FailingBroker() });
    const victims = await Promise.all(Array.from({ length: 20 }, () => Client.connect(server)));
    for (const v of victims) v.send({ type: "publish", topic: "explode", data: null });
    for (const v of victims) expect((await within(v.closed, 3000, "close")).code).toBe(1011);
    const survivor = await Client.connect(server);
    expect(await survivor.request({ type: "ping", id: "alive" })).toEqual({ type: "pong", id: "alive" });
    survivor.close();
  });
});

describe("backpressure", () => {
  test("a subscriber that stops reading is dropped by the server; a fast one receives everything", async () => {
    const LIMIT = 256 * 1024;
    const server = serve({ BACKPRESSURE_LIMIT_BYTES: LIMIT, PERMESSAGE_DEFLATE: false });
    const stuck = await RawPeer.connect(server.port, "/connect");
    stuck.send(1, JSON.stringify({ type: "subscribe", topic: "firehose" }));
    await until(() => stuck.frames.length >= 2, 2000, "stuck peer subscribed");
    stuck.pause(); // never reads again: its kernel buffers fill, then the server's send buffer

    const fast = await Client.connect(server);
    await fast.request({ type: "subscribe", topic: "firehose" });
    const publisher = await Client.connect(server);
    expect(server.gateway.connections.size).toBe(3);

    const payload = "p".repeat(4096);
    const TOTAL = 4000; // 16 MiB: far beyond loopback socket buffers plus the 256 KiB limit
    const BATCH = 50;
    let droppedAt = -1;
    let received = 0;
    for (let sent = 0; sent < TOTAL; sent += BATCH) {
      for (let i = sent; i < sent + BATCH; i++) publisher.send({ type: "publish", topic: "firehose", data: `${i}:${payload}` });
      // The fast consumer keeps up; each of its frames is checked in order.
      for (; received < sent + BATCH; received++) {
        const frame = await fast.json(5000);
        expect(frame.type === "message" && (frame.data as string).startsWith(`${received}:`) && frame.offset === received + 1).toBe(true);
      }
      if (droppedAt < 0 && server.gateway.connections.size === 2) droppedAt = sent + BATCH;
    }
    expect(received).toBe(TOTAL);
    // Dropped while the flood was still going: its buffer never held more than the limit plus one batch.
    expect(droppedAt).toBeGreaterThan(0);
    expect(droppedAt).toBeLessThan(TOTAL);
    expect(await connectionsOf(server)).toBe(2);
    stuck.destroy();
    fast.close();
    publisher.close();
  });
});

describe("draining", () => {
  test("after drain, sockets are closed with 1001 and new upgrades get 503 with a message", async () => {
    const server = serve();
    const a = await Client.connect(server);
    const b = await Client.open(server.ws("/echo"));
    const readyz = () => fetch(`http://127.0.0.1:${server.port}/readyz`);
    const ready = await readyz();
    expect([ready.status, await ready.json()]).toEqual([200, { status: "ready", broker: { kind: "memory", ready: true }, draining: false }]);
    server.gateway.drain();
    expect(await within(a.closed, 2000, "a closed")).toEqual({ code: 1001, reason: "server shutting down" });
    expect(await within(b.closed, 2000, "b closed")).toEqual({ code: 1001, reason: "server shutting down" });

    const refused = await fetch(`http://127.0.0.1:${server.port}/connect`, {
      headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" },
    });
    expect(refused.status).toBe(503);
    expect(await refused.json()).toEqual({ error: "server shutting down" });
    const health = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as { status: string }).status).toBe("draining");
    // Not ready while draining, though the broker itself is fine: a balancer stops sending clients here.
    const draining = await readyz();
    expect([draining.status, await draining.json()]).toEqual([503, { status: "degraded", broker: { kind: "memory", ready: true }, draining: true }]);
  });
});
