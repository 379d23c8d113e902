// Read deadlines: pinging silent peers, closing dead ones with 4000, keeping peers that answer or ping.
import { afterAll, describe, expect, test } from "bun:test";
import { Client, connectionsOf, Opcode, RawPeer, serve, stopAll, until } from "./helpers.ts";

afterAll(stopAll);

const INTERVAL = 300;
const WAIT = 300;
const DEADLINE = INTERVAL + WAIT;
// Scheduling slack for a loaded 2-core CI machine; the spec's own bound is DEADLINE + INTERVAL.
const SLACK = 250;

describe("a peer that neither sends nor answers pings", () => {
  for (const route of ["/connect", "/echo"] as const) {
    test(`${route}: is pinged, then closed with 4000 "heartbeat timeout" within deadline + one interval`, async () => {
      const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT });
      const before = await connectionsOf(server);
      const opened = performance.now();
      const peer = await RawPeer.connect(server.port, route);
      await until(() => peer.closeFrame() !== undefined, DEADLINE + INTERVAL + SLACK + 500, "close frame");
      const elapsed = performance.now() - opened;
      expect(peer.closeFrame()).toEqual({ code: 4000, reason: "heartbeat timeout" });
      expect(elapsed).toBeGreaterThanOrEqual(DEADLINE);
      expect(elapsed).toBeLessThan(DEADLINE + INTERVAL + SLACK);
      expect(peer.count(Opcode.ping)).toBeGreaterThanOrEqual(1);
      // The server frees the connection (and ends TCP without waiting for the peer's close frame).
      await until(() => peer.ended, 2000, "TCP end");
      expect(await connectionsOf(server)).toBe(before);
    });
  }

  test("is pinged again every interval while it stays silent", async () => {
    const server = serve({ PING_INTERVAL_MS: 100, PING_WAIT_MS: 600 });
    const peer = await RawPeer.connect(server.port, "/connect");
    await until(() => peer.closeFrame() !== undefined, 2500, "close frame");
    // deadline 700 ms / interval 100 ms: pings at ~100, 200, ... 600 ms of silence
    expect(peer.count(Opcode.ping)).toBeGreaterThanOrEqual(4);
    expect(peer.closeFrame()?.code).toBe(4000);
  });
});

describe("peers that stay", () => {
  test("a silent client that answers pings (browser-style) stays connected for many deadlines", async () => {
    const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT });
    const client = await Client.connect(server);
    let closed = false;
    client.closed.then(() => (closed = true));
    await Bun.sleep(DEADLINE * 4);
    expect(closed).toBe(false);
    expect(client.pending).toBe(0); // pings are control frames: no application frame arrived
    expect(await client.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
    client.close();
  });

  test("a raw peer that answers pings with pongs only stays connected", async () => {
    const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT });
    const peer = await RawPeer.connect(server.port, "/connect");
    let answered = 0;
    const responder = setInterval(() => {
      while (answered < peer.count(Opcode.ping)) {
        peer.send(Opcode.pong);
        answered++;
      }
    }, 20);
    await Bun.sleep(DEADLINE * 4);
    clearInterval(responder);
    expect(answered).toBeGreaterThanOrEqual(3);
    expect(peer.closeFrame()).toBeUndefined();
    expect(peer.ended).toBe(false);
    peer.destroy();
  });

  test("a peer that pings the server itself (gws style) gets pongs and stays, never answering pings", async () => {
    const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT });
    const peer = await RawPeer.connect(server.port, "/echo");
    const pinger = setInterval(() => peer.send(Opcode.ping, "hb"), INTERVAL / 2);
    await Bun.sleep(DEADLINE * 4);
    clearInterval(pinger);
    expect(peer.closeFrame()).toBeUndefined();
    expect(peer.ended).toBe(false);
    const pongs = peer.frames.filter((f) => f.opcode === Opcode.pong);
    expect(pongs.length).toBeGreaterThanOrEqual(8);
    expect(pongs.every((f) => f.payload.toString() === "hb")).toBe(true);
    peer.destroy();
  });

  test("a peer that keeps sending messages stays, though it ignores pings", async () => {
    const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT });
    const peer = await RawPeer.connect(server.port, "/connect");
    let lastSent = performance.now();
    const talker = setInterval(() => {
      peer.send(Opcode.text, '{"type":"ping"}');
      lastSent = performance.now();
    }, INTERVAL / 2);
    await Bun.sleep(DEADLINE * 4);
    clearInterval(talker);
    expect(peer.closeFrame()).toBeUndefined();
    expect(peer.count(Opcode.ping)).toBe(0); // never silent for an interval, so never pinged
    // ...and once it goes silent, the deadline runs from its last frame.
    await until(() => peer.closeFrame() !== undefined, DEADLINE + INTERVAL + SLACK + 500, "close frame");
    expect(performance.now() - lastSent).toBeGreaterThanOrEqual(DEADLINE);
    expect(peer.closeFrame()?.code).toBe(4000);
  });

  test("the deadline does not hurt others: a dead peer closes while a live one on the same server stays", async () => {
    const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT });
    const live = await Client.connect(server);
    await live.request({ type: "subscribe", topic: "t" });
    const dead = await RawPeer.connect(server.port, "/connect");
    dead.send(Opcode.text, '{"type":"subscribe","topic":"t"}');
    await until(() => dead.closeFrame() !== undefined, DEADLINE + INTERVAL + SLACK + 500, "close frame");
    live.send({ type: "publish", topic: "t", data: "after", id: 9 });
    const frames = [await live.text(), await live.text()].sort();
    expect(frames).toEqual(['{"type":"ack","id":9}', '{"type":"message","topic":"t","data":"after"}']);
    live.close();
  });
});
