// Limits under abuse: per-identity rate limit and flood close, server-wide and per-IP connection caps.
import { afterAll, describe, expect, test } from "bun:test";
import { ManualClock } from "../src/clock.ts";
import { Client, serve, stopAll, until, within, type TestServer } from "./helpers.ts";

afterAll(stopAll);

async function upgradeStatus(server: TestServer, route = "/connect") {
  const res = await fetch(`http://127.0.0.1:${server.port}${route}`, {
    headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" },
  });
  return { status: res.status, body: res.status === 101 ? undefined : await res.json() };
}

describe("rate limit (per identity, on an injected clock)", () => {
  const pings = async (c: Client, ids: number[]) => {
    for (const id of ids) c.send({ type: "ping", id });
    const replies = [];
    for (const _ of ids) replies.push(await c.json());
    return replies;
  };
  const limited = (id: number, rate: number) =>
    ({ type: "error", code: "rate_limited", message: `over ${rate} messages per second: slow down`, id }) as const;

  test("a burst beyond RATE_LIMIT_BURST gets rate_limited errors carrying the frame's id; the connection recovers", async () => {
    const clock = new ManualClock();
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 20, RATE_LIMIT_BURST: 5 }, { clock });
    const c = await Client.connect(server);
    const replies = await pings(c, [0, 1, 2, 3, 4, 5, 6, 7]);
    expect(replies).toEqual([...[0, 1, 2, 3, 4].map((id) => ({ type: "pong", id }) as const), limited(5, 20), limited(6, 20), limited(7, 20)]);
    clock.advance(300); // refills 6 tokens
    expect(await c.request({ type: "ping", id: "later" })).toEqual({ type: "pong", id: "later" });
    expect(server.gateway.metrics.rateLimited).toBe(3);
    c.close();
  });

  test("one burst of 2 x RATE_LIMIT_BURST + 1 frames costs errors only, never the connection", async () => {
    const clock = new ManualClock();
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 20, RATE_LIMIT_BURST: 5 }, { clock });
    const c = await Client.connect(server);
    const ids = Array.from({ length: 11 }, (_, i) => i);
    const replies = await pings(c, ids);
    expect(replies.filter((r) => r.type === "pong")).toHaveLength(5);
    expect(replies.slice(5)).toEqual(ids.slice(5).map((id) => limited(id, 20)));
    clock.advance(1000);
    expect(await c.request({ type: "ping", id: 99 })).toEqual({ type: "pong", id: 99 });
    c.close();
  });

  test("reconnecting does not refill the budget: the identity's bucket is shared", async () => {
    const clock = new ManualClock();
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 10, RATE_LIMIT_BURST: 3 }, { clock });
    const first = await Client.connect(server);
    expect((await pings(first, [0, 1, 2, 3])).at(-1)).toEqual(limited(3, 10));
    first.close();
    await until(() => server.gateway.connections.size === 0, 2000, "first closed");
    const again = await Client.connect(server);
    expect(await pings(again, [4])).toEqual([limited(4, 10)]);
    clock.advance(100); // one token
    expect(await pings(again, [5, 6])).toEqual([{ type: "pong", id: 5 }, limited(6, 10)]);
    again.close();
  });

  test("a client that keeps sending at 4x its rate is closed with 1008 within seconds; its identity's other connection recovers after a pause", async () => {
    const clock = new ManualClock();
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 50, RATE_LIMIT_BURST: 10 }, { clock });
    const calm = await Client.connect(server);
    const flooder = await Client.connect(server);
    let id = 0;
    let closedAt = -1;
    const closed1008 = () => server.gateway.metrics.closes.get(1008) > 0; // counted in the server's close handler
    for (let step = 0; step < 10 && closedAt < 0; step++) {
      for (let i = 0; i < 100; i++) flooder.send({ type: "ping", id: id++ });
      await until(() => closed1008() || server.gateway.metrics.framesIn >= id, 3000, "frames handled");
      if (closed1008()) closedAt = clock.now();
      else clock.advance(500);
    }
    expect(await within(flooder.closed, 3000, "flood close")).toEqual({ code: 1008, reason: "rate limit exceeded" });
    // Strikes: 90 in the first burst (under 10 + 2.5 s x 50 = 135: a burst alone is not closed), then +75
    // refused -12.5 forgiven per step: past the limit in the second step, at 500 ms of clock.
    expect(closedAt).toBe(500);
    // The calm client shares the flooder's address, so its identity and bucket (open mode): it is served again
    // once the bucket refills and the strikes drain.
    clock.advance(1000);
    expect(await calm.request({ type: "ping", id: "calm" })).toEqual({ type: "pong", id: "calm" });
    calm.close();
  });

  test("a client at the allowed rate is never limited", async () => {
    const clock = new ManualClock();
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 100, RATE_LIMIT_BURST: 5 }, { clock });
    const c = await Client.connect(server);
    for (let i = 0; i < 300; i++) {
      expect(await c.request({ type: "ping", id: i })).toEqual({ type: "pong", id: i });
      clock.advance(15); // ~66 msg/s
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
