// The timing wheel itself, driven directly on a ManualClock: random tracking, expiries, frames, closes (also
// from inside the wheel's own callbacks, which run while a bucket is being walked) and clock advances. After
// every step, every open connection is exactly where its slot says, and nothing closed is held.
import { expect, test } from "bun:test";
import { ManualClock } from "../src/clock.ts";
import { Heartbeat, type Beating, type WheelSlot } from "../src/heartbeat.ts";

class Peer implements Beating {
  seen = 0;
  pinged = -1;
  closed = false;
  wheelBucket: Beating[] | undefined = undefined;
  wheelIndex = -1;
  expiry: WheelSlot | undefined = undefined;
}

test("wheel invariants hold under 5,000 random steps, with closes from inside callbacks", () => {
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const pick = <T>(set: Set<T>): T | undefined => [...set][Math.floor(random() * set.size)];
  const clock = new ManualClock(0);
  const live = new Set<Peer>();
  let wheel!: Heartbeat<Peer>;
  const close = (peer: Peer) => {
    if (peer.closed) return;
    peer.closed = true;
    live.delete(peer);
    wheel.untrack(peer);
  };
  wheel = new Heartbeat<Peer>({
    intervalMs: 40,
    waitMs: 40,
    clock,
    ping: () => {
      if (random() < 0.3) {
        const other = pick(live);
        if (other !== undefined) close(other); // a close in the middle of walking a bucket
      }
    },
    timeout: close,
    expire: close,
    failed: () => {
      throw new Error("no callback here throws");
    },
  });
  const slotHolds = (slot: WheelSlot, peer: Peer) => slot.wheelBucket?.[slot.wheelIndex] === peer;
  for (let step = 0; step < 5000; step++) {
    const r = random();
    if (r < 0.3) {
      const peer = new Peer();
      live.add(peer);
      wheel.track(peer);
      if (random() < 0.5) wheel.expireAt(peer, clock.wall() + Math.floor(random() * 500));
    } else if (r < 0.45) {
      const peer = pick(live);
      if (peer !== undefined) close(peer);
    } else if (r < 0.6) {
      const peer = pick(live);
      if (peer !== undefined) peer.seen = wheel.tick; // a frame arrived
    } else {
      clock.advance(Math.floor(random() * 30));
    }
    const held = wheel.held();
    expect(held.deadlines).toBe(live.size);
    expect(held.expiries).toBe([...live].filter((p) => p.expiry?.wheelBucket !== undefined).length);
    for (const peer of live) {
      expect(slotHolds(peer, peer)).toBe(true);
      if (peer.expiry?.wheelBucket !== undefined) expect(slotHolds(peer.expiry, peer)).toBe(true);
    }
  }
  wheel.stop();
});
