// The /echo fast path records activity itself (it bypasses the /connect frame path and `ws.data`): a peer that
// keeps echoing is never pinged or closed, and once silent its deadline runs from its last frame.
// Time is a ManualClock (src/clock.ts), as in test/heartbeat.test.ts.
import { afterAll, expect, test } from "bun:test";
import { ManualClock } from "../src/clock.ts";
import { Opcode, RawPeer, serve, stopAll, until } from "./helpers.ts";

afterAll(stopAll);

const INTERVAL = 5000;
const WAIT = 10_000;
const DEADLINE = INTERVAL + WAIT;
const TICK = 1250; // a quarter of the shorter of interval and wait

test("/echo: a peer that keeps sending (text and binary) stays, though it ignores pings; silent, its deadline runs from its last frame", async () => {
  const clock = new ManualClock();
  const server = serve({ PING_INTERVAL_MS: INTERVAL, PING_WAIT_MS: WAIT }, { clock });
  const peer = await RawPeer.connect(server.port, "/echo");
  const metrics = server.gateway.metrics;
  let lastSentAt = 0;
  let sent = 0;
  while (clock.now() < DEADLINE * 4) {
    clock.advance(TICK);
    const before = metrics.echoes;
    if (sent++ % 2 === 0) peer.send(Opcode.text, "still here");
    else peer.send(Opcode.binary, Buffer.from([1, 2, 3]));
    lastSentAt = clock.now();
    await until(() => metrics.echoes > before, 2000, "echo handled");
  }
  expect(metrics.heartbeatTimeouts).toBe(0);
  expect(peer.count(Opcode.ping)).toBe(0);
  expect(peer.closeFrame()).toBeUndefined();

  while (metrics.heartbeatTimeouts === 0 && clock.now() < lastSentAt + DEADLINE * 2) clock.advance(TICK);
  const closedAt = clock.now();
  expect(closedAt - lastSentAt).toBeGreaterThanOrEqual(DEADLINE);
  expect(closedAt - lastSentAt).toBeLessThanOrEqual(DEADLINE + 2 * TICK);
  await until(() => peer.closeFrame() !== undefined, 2000, "close frame");
  expect(peer.closeFrame()).toEqual({ code: 4000, reason: "heartbeat timeout" });
});
