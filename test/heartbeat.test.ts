// Read deadlines: pinging silent peers, closing dead ones with 4000, keeping peers that answer or ping.
// Time is a ManualClock (src/clock.ts): deadlines are checked exactly, in virtual seconds, without waiting.
// One test keeps the real clock, so the production wiring is covered too.
import { afterAll, describe, expect, test } from "bun:test";
import { ManualClock } from "../src/clock.ts";
import type { Conn } from "../src/connections.ts";
import { Client, connectionsOf, Opcode, RawPeer, serve, stopAll, until, type TestServer } from "./helpers.ts";

afterAll(stopAll);

// The defaults: ticks of 1,250 ms (a quarter of the shorter of interval and wait).
const INTERVAL = 5000;
const WAIT = 10_000;
const DEADLINE = INTERVAL + WAIT;
const TICK = 1250;

function heartbeatServer(): { server: TestServer; clock: ManualClock } {
  const clock = new ManualClock();
  const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT }, { clock });
  return { server, clock };
}

const conns = (server: TestServer): Conn[] => [...server.gateway.connections];

/** Waits until every connection that was pinged has answered (its pong reached the server). */
const answered = (server: TestServer) =>
  until(() => conns(server).every((c) => c.pinged < 0 || c.seen >= c.pinged), 2000, "pongs to reach the server");

/** Advances one tick at a time until `done()` (checked after each tick) or `maxMs`; returns the virtual time. */
async function runUntil(clock: ManualClock, done: () => boolean, maxMs: number, between?: () => Promise<void>): Promise<number> {
  while (!done() && clock.now() < maxMs) {
    clock.advance(TICK);
    await between?.();
  }
  return clock.now();
}

describe("a peer that neither sends nor answers pings", () => {
  for (const route of ["/connect", "/echo"] as const) {
    test(`${route}: is pinged, then closed with 4000 "heartbeat timeout" within deadline + one interval`, async () => {
      const { server, clock } = heartbeatServer();
      const before = await connectionsOf(server);
      const peer = await RawPeer.connect(server.port, route);
      const timedOut = () => server.gateway.metrics.heartbeatTimeouts > 0; // counted as the close is sent
      const closedAt = await runUntil(clock, timedOut, 60_000);
      expect(timedOut()).toBe(true);
      // Never early; at most two ticks late (the spec allows up to one whole interval).
      expect(closedAt).toBeGreaterThanOrEqual(DEADLINE);
      expect(closedAt).toBeLessThanOrEqual(DEADLINE + 2 * TICK);
      await until(() => peer.closeFrame() !== undefined, 2000, "close frame");
      expect(peer.closeFrame()).toEqual({ code: 4000, reason: "heartbeat timeout" });
      // Pinged after one silent interval, and again after each further interval of silence.
      expect(peer.count(Opcode.ping)).toBe(2);
      // The server frees the connection (and ends TCP without waiting for the peer's close frame).
      await until(() => peer.ended, 2000, "TCP end");
      expect(await connectionsOf(server)).toBe(before);
      expect(server.gateway.heartbeat.held()).toEqual({ deadlines: 0, expiries: 0 });
    });
  }

  test("with the real clock too: closed with 4000, not before the deadline", async () => {
    const server = serve({ PING_INTERVAL_MS: 100, PING_WAIT_MS: 100 });
    const opened = performance.now();
    const peer = await RawPeer.connect(server.port, "/connect");
    await until(() => peer.closeFrame() !== undefined, 5000, "close frame");
    expect(performance.now() - opened).toBeGreaterThanOrEqual(200);
    expect(peer.closeFrame()).toEqual({ code: 4000, reason: "heartbeat timeout" });
    expect(peer.count(Opcode.ping)).toBeGreaterThanOrEqual(1);
  });
});

describe("peers that stay", () => {
  test("a silent client that answers pings (browser-style) stays connected for many deadlines", async () => {
    const { server, clock } = heartbeatServer();
    const client = await Client.connect(server);
    let closed = false;
    void client.closed.then(() => (closed = true));
    await runUntil(clock, () => closed, DEADLINE * 4, () => answered(server));
    expect(closed).toBe(false);
    expect(server.gateway.metrics.heartbeatTimeouts).toBe(0);
    expect(conns(server)[0]!.pinged).toBeGreaterThan(0); // it was pinged, and answered
    expect(client.pending).toBe(0); // pings are control frames: no application frame arrived
    expect(await client.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
    client.close();
  });

  test("a raw peer that answers pings with pongs only stays connected", async () => {
    const { server, clock } = heartbeatServer();
    const peer = await RawPeer.connect(server.port, "/connect");
    let sent = 0;
    let pingsSent = 0; // by the server, as it saw them
    const answer = async () => {
      const conn = conns(server)[0]!;
      if (conn.pinged < 0 || conn.pinged === pingsSent) return; // not pinged on this tick
      pingsSent = conn.pinged;
      await until(() => peer.count(Opcode.ping) > sent, 2000, "ping to arrive");
      peer.send(Opcode.pong);
      sent++;
      await answered(server);
    };
    await runUntil(clock, () => peer.closeFrame() !== undefined, DEADLINE * 4, answer);
    expect(sent).toBeGreaterThanOrEqual(8);
    expect(server.gateway.metrics.heartbeatTimeouts).toBe(0);
    expect(peer.closeFrame()).toBeUndefined();
    expect(peer.ended).toBe(false);
    peer.destroy();
  });

  test("a peer that pings the server itself (gws style) gets pongs and stays, never answering pings", async () => {
    const { server, clock } = heartbeatServer();
    const peer = await RawPeer.connect(server.port, "/echo");
    let pings = 0;
    const pingServer = async () => {
      peer.send(Opcode.ping, "hb");
      pings++;
      await until(() => peer.frames.filter((f) => f.opcode === Opcode.pong).length >= pings, 2000, "pong");
    };
    await runUntil(clock, () => peer.closeFrame() !== undefined, DEADLINE * 4, pingServer);
    expect(peer.closeFrame()).toBeUndefined();
    expect(peer.ended).toBe(false);
    expect(server.gateway.metrics.heartbeatTimeouts).toBe(0);
    const pongs = peer.frames.filter((f) => f.opcode === Opcode.pong);
    expect(pongs.length).toBe(pings);
    expect(pongs.every((f) => f.payload.toString() === "hb")).toBe(true);
    expect(peer.count(Opcode.ping)).toBe(0); // never silent for an interval, so never pinged
    peer.destroy();
  });

  test("a peer that keeps sending messages stays, though it ignores pings; silent, its deadline runs from its last frame", async () => {
    const { server, clock } = heartbeatServer();
    const peer = await RawPeer.connect(server.port, "/connect");
    let lastSentAt = 0;
    const talk = async () => {
      const before = server.gateway.metrics.framesIn;
      peer.send(Opcode.text, '{"type":"ping"}');
      lastSentAt = clock.now();
      await until(() => server.gateway.metrics.framesIn > before, 2000, "frame handled");
    };
    await runUntil(clock, () => peer.closeFrame() !== undefined, DEADLINE * 4, talk);
    expect(server.gateway.metrics.heartbeatTimeouts).toBe(0);
    expect(peer.count(Opcode.ping)).toBe(0);
    const closedAt = await runUntil(clock, () => server.gateway.metrics.heartbeatTimeouts > 0, DEADLINE * 8);
    expect(closedAt - lastSentAt).toBeGreaterThanOrEqual(DEADLINE);
    expect(closedAt - lastSentAt).toBeLessThanOrEqual(DEADLINE + 2 * TICK);
    await until(() => peer.closeFrame() !== undefined, 2000, "close frame");
    expect(peer.closeFrame()?.code).toBe(4000);
  });

  test("the deadline does not hurt others: a dead peer closes while a live one on the same server stays", async () => {
    const { server, clock } = heartbeatServer();
    const live = await Client.connect(server);
    await live.request({ type: "subscribe", topic: "t" });
    const dead = await RawPeer.connect(server.port, "/connect");
    dead.send(Opcode.text, '{"type":"subscribe","topic":"t"}');
    await until(() => server.gateway.topics.localInterest("t") === 2, 2000, "dead subscribed");
    const liveConn = conns(server)[0]!; // the first to connect
    // Only the live client answers pings; the dead peer never does.
    const liveAnswered = () => until(() => liveConn.pinged < 0 || liveConn.seen >= liveConn.pinged, 2000, "live pong");
    await runUntil(clock, () => server.gateway.metrics.heartbeatTimeouts > 0, 60_000, liveAnswered);
    await until(() => dead.closeFrame() !== undefined, 2000, "close frame");
    expect(dead.closeFrame()?.code).toBe(4000);
    live.send({ type: "publish", topic: "t", data: "after", id: 9 });
    const frames = [await live.text(), await live.text()].sort();
    expect(frames).toEqual(['{"type":"ack","id":9,"offset":1}', '{"type":"message","topic":"t","data":"after","offset":1}']);
    expect(server.gateway.connections.size).toBe(1);
    live.close();
  });
});
