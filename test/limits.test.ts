// Limits under abuse: per-connection rate limit and flood close, server-wide and per-IP connection caps.
import { afterAll, describe, expect, test } from "bun:test";
import { Client, serve, stopAll, until, within, type TestServer } from "./helpers.ts";

afterAll(stopAll);

async function upgradeStatus(server: TestServer, route = "/connect") {
  const res = await fetch(`http://127.0.0.1:${server.port}${route}`, {
    headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" },
  });
  return { status: res.status, body: res.status === 101 ? undefined : await res.json() };
}

describe("rate limit", () => {
  test("a burst beyond RATE_LIMIT_BURST gets rate_limited errors; the connection stays and recovers", async () => {
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 20, RATE_LIMIT_BURST: 5 });
    const c = await Client.connect(server);
    for (let i = 0; i < 8; i++) c.send({ type: "ping", id: i });
    const replies = [];
    for (let i = 0; i < 8; i++) replies.push(await c.json());
    expect(replies.slice(0, 5)).toEqual([0, 1, 2, 3, 4].map((id) => ({ type: "pong", id })));
    for (const r of replies.slice(5)) {
      expect(r).toEqual({ type: "error", code: "rate_limited", message: "over 20 messages per second: slow down" });
    }
    await Bun.sleep(300); // refills ~6 tokens
    expect(await c.request({ type: "ping", id: "later" })).toEqual({ type: "pong", id: "later" });
    expect(server.gateway.metrics.rateLimited).toBe(3);
    c.close();
  });

  test("a client that keeps flooding is closed with 1008; others are unaffected", async () => {
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 50, RATE_LIMIT_BURST: 10 });
    const calm = await Client.connect(server);
    const flooder = await Client.connect(server);
    for (let i = 0; i < 200; i++) flooder.send({ type: "ping" });
    expect(await within(flooder.closed, 3000, "flood close")).toEqual({ code: 1008, reason: "rate limit exceeded" });
    expect(await calm.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
    calm.close();
  });

  test("a client at the allowed rate is never limited", async () => {
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 100, RATE_LIMIT_BURST: 5 });
    const c = await Client.connect(server);
    for (let i = 0; i < 30; i++) {
      expect(await c.request({ type: "ping", id: i })).toEqual({ type: "pong", id: i });
      await Bun.sleep(15); // ~66 msg/s
    }
    expect(server.gateway.metrics.rateLimited).toBe(0);
    c.close();
  });
});

describe("connection caps", () => {
  test("MAX_CONNECTIONS: beyond it upgrades get 503; existing clients are unaffected; a freed slot is reusable", async () => {
    const server = serve({ MAX_CONNECTIONS: 2 });
    const a = await Client.connect(server);
    const b = await Client.open(server.ws("/echo"));
    expect(await upgradeStatus(server)).toEqual({ status: 503, body: { error: "server is at its connection limit: retry later or elsewhere" } });
    expect((await upgradeStatus(server, "/echo")).status).toBe(503);
    expect(await a.request({ type: "ping" })).toEqual({ type: "pong" });
    b.close();
    await until(() => server.gateway.connections.size === 1, 2000, "slot freed");
    const c = await Client.connect(server);
    expect(await c.request({ type: "ping", id: 2 })).toEqual({ type: "pong", id: 2 });
    a.close();
    c.close();
  });

  test("MAX_CONNECTIONS_PER_IP: beyond it upgrades get 429; closing one frees the address's slot", async () => {
    const server = serve({ MAX_CONNECTIONS_PER_IP: 2 });
    const a = await Client.connect(server);
    const b = await Client.connect(server);
    expect(await upgradeStatus(server)).toEqual({ status: 429, body: { error: "at most 2 connections per client address" } });
    a.close();
    await until(() => server.gateway.perIp.get("127.0.0.1") === 1, 2000, "per-ip count drops");
    const c = await Client.connect(server);
    expect(server.gateway.perIp.get("127.0.0.1")).toBe(2);
    b.close();
    c.close();
    await until(() => server.gateway.perIp.size === 0, 2000, "per-ip map empties");
  });
});
