// The memory history store on its own: retention per topic, the byte bound (oldest entries of the whole
// process first), TTL on a ManualClock, positions kept for held topics, and a randomized run against a model.
import { describe, expect, test } from "bun:test";
import { ManualClock } from "../src/clock.ts";
import { ENTRY_OVERHEAD_BYTES, MemoryHistory, TOPIC_OVERHEAD_BYTES } from "../src/history/memory.ts";
import { plan, Recovery } from "../src/history/recovery.ts";
import { withOffset } from "../src/protocol.ts";

const head = (topic: string, data: string) => `{"type":"message","topic":"${topic}","data":"${data}"`;

function store(overrides: Partial<ConstructorParameters<typeof MemoryHistory>[0]> = {}, held = new Set<string>()) {
  const clock = new ManualClock();
  const history = new MemoryHistory({ size: 5, ttlMs: 10_000, maxBytes: 1 << 20, clock, held: (t) => held.has(t), ...overrides });
  return { history, clock, held };
}

describe("offsets and retention", () => {
  test("offsets count from 1 per topic; the last `size` are kept; reads after a position or the latest", () => {
    const { history } = store();
    for (let i = 1; i <= 8; i++) expect(history.append("a", head("a", `m${i}`)).offset).toBe(i);
    expect(history.append("b", head("b", "x")).offset).toBe(1);
    const latest = history.read("a", { limit: 100, create: false });
    expect(latest.offset).toBe(8);
    expect(latest.messages.map((m) => m.offset)).toEqual([4, 5, 6, 7, 8]);
    expect(latest.messages[0]!.frame).toBe(withOffset(head("a", "m4"), 4));
    expect(latest.complete).toBe(false); // no `since`: nothing to be complete about
    const epoch = latest.epoch;
    const after5 = history.read("a", { since: { epoch, offset: 5 }, limit: 100, create: false });
    expect([after5.messages.map((m) => m.offset), after5.complete]).toEqual([[6, 7, 8], true]);
    const limited = history.read("a", { since: { epoch, offset: 3 }, limit: 2, create: false });
    expect([limited.messages.map((m) => m.offset), limited.complete]).toEqual([[4, 5], false]);
    const tooOld = history.read("a", { since: { epoch, offset: 2 }, limit: 100, create: false });
    expect([tooOld.messages.map((m) => m.offset), tooOld.complete]).toEqual([[4, 5, 6, 7, 8], false]);
    const current = history.read("a", { since: { epoch, offset: 8 }, limit: 100, create: false });
    expect([current.messages, current.complete]).toEqual([[], true]);
    const future = history.read("a", { since: { epoch, offset: 9 }, limit: 100, create: false });
    expect([future.messages, future.complete]).toEqual([[], false]);
    const otherEpoch = history.read("a", { since: { epoch: "zzzzzzzz", offset: 5 }, limit: 2, create: false });
    expect([otherEpoch.messages.map((m) => m.offset), otherEpoch.complete]).toEqual([[7, 8], false]);
  });

  test("a read creates a position only when asked; an unknown topic without it reports offset 0 and stores nothing", () => {
    const { history } = store();
    const probe = history.read("nobody", { limit: 10, create: false });
    expect([probe.offset, probe.messages, history.gauges().topics]).toEqual([0, [], 0]);
    const created = history.read("fresh", { limit: 10, create: true });
    expect(history.gauges().topics).toBe(1);
    history.append("fresh", head("fresh", "first"));
    expect(history.read("fresh", { since: { epoch: created.epoch, offset: 0 }, limit: 10, create: false }).complete).toBe(true);
  });
});

describe("TTL", () => {
  test("entries expire ttlMs after the last publish; a held topic keeps its position, a free one gets a new epoch", () => {
    const held = new Set(["kept"]);
    const { history, clock } = store({}, held);
    history.append("kept", head("kept", "1"));
    history.append("free", head("free", "1"));
    const keptEpoch = history.read("kept", { limit: 10, create: false }).epoch;
    const freeEpoch = history.read("free", { limit: 10, create: false }).epoch;
    clock.advance(9_999);
    expect(history.read("kept", { limit: 10, create: false }).messages.length).toBe(1);
    clock.advance(1);
    const kept = history.read("kept", { since: { epoch: keptEpoch, offset: 0 }, limit: 10, create: false });
    expect([kept.epoch, kept.offset, kept.messages, kept.complete]).toEqual([keptEpoch, 1, [], false]);
    expect(history.append("kept", head("kept", "2")).offset).toBe(2);
    const free = history.read("free", { limit: 10, create: true });
    expect(free.epoch).not.toBe(freeEpoch);
    expect(free.offset).toBe(0);
    expect(history.counters.expired).toBe(2); // each topic's one message
  });
});

describe("HISTORY_MAX_BYTES", () => {
  test("past the bound the oldest entries of the whole process go first, and the bound holds", () => {
    const frame = 1000;
    const perEntry = frame + ENTRY_OVERHEAD_BYTES;
    const maxBytes = 2 * TOPIC_OVERHEAD_BYTES + 2 + 10 * perEntry + 500;
    const { history } = store({ size: 100, maxBytes });
    const data = "x".repeat(frame - head("a", "").length - ',"offset":1}'.length);
    for (let i = 0; i < 6; i++) history.append("a", head("a", data));
    for (let i = 0; i < 6; i++) history.append("b", head("b", data));
    expect(history.bytes).toBeLessThanOrEqual(maxBytes);
    const a = history.read("a", { limit: 100, create: false });
    const b = history.read("b", { limit: 100, create: false });
    // 12 entries do not fit, 10 do (give or take the offsets' digits): a's two oldest went, b is whole.
    expect(a.messages.map((m) => m.offset)).toEqual([3, 4, 5, 6]);
    expect(b.messages.map((m) => m.offset)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(history.counters.evicted).toBe(2);
    expect(history.read("a", { since: { epoch: a.epoch, offset: 1 }, limit: 100, create: false }).complete).toBe(false);
  });

  test("positions of idle topics (subscribe/unsubscribe churn) never push stored messages out", () => {
    const held = new Set<string>();
    const maxBytes = 1 << 20;
    const { history } = store({ size: 100, maxBytes }, held);
    for (let i = 0; i < 3000; i++) {
      const topic = `churn.${"x".repeat(190)}.${i}`;
      held.add(topic);
      history.read(topic, { limit: 0, create: true }); // a subscribe takes a position
      held.delete(topic);
      history.touch(topic); // its last subscriber left
    }
    // Idle positions stay within an eighth of the bound, the oldest forgotten first.
    expect(history.gauges().bytes).toBeLessThanOrEqual(maxBytes / 8 + 1);
    expect(history.gauges().topics).toBeLessThan(3000);
    expect(history.position(`churn.${"x".repeat(190)}.2999`)).toBeDefined();
    expect(history.position(`churn.${"x".repeat(190)}.0`)).toBeUndefined();
    for (let i = 1; i <= 5; i++) history.append("real", head("real", String(i)));
    const read = history.read("real", { since: { epoch: history.position("real")!.epoch, offset: 0 }, limit: 100, create: false });
    expect([read.messages.map((m) => m.offset), read.complete, history.counters.evicted]).toEqual([[1, 2, 3, 4, 5], true, 0]);
  });

  test("a read stops before its messages pass maxBytes (what the caller can send at once)", () => {
    const { history } = store({ size: 100 });
    for (let i = 1; i <= 10; i++) history.append("b", head("b", "y".repeat(100)));
    const epoch = history.position("b")!.epoch;
    const frame = history.read("b", { limit: 1, create: false }).messages[0]!.frame.length;
    const cut = history.read("b", { since: { epoch, offset: 0 }, limit: 100, create: false, maxBytes: 3 * frame + 1 });
    expect([cut.messages.map((m) => m.offset), cut.complete]).toEqual([[1, 2, 3], false]);
    const latest = history.read("b", { limit: 100, create: false, maxBytes: 2 * frame });
    expect(latest.messages.map((m) => m.offset)).toEqual([9, 10]);
    expect(history.read("b", { since: { epoch, offset: 0 }, limit: 0, create: true }).messages).toEqual([]);
  });

  test("randomized: publishes, reads and time against a model; bytes never exceed the bound", () => {
    let seed = 20261129;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const maxBytes = 40_000;
    const { history, clock } = store({ size: 7, maxBytes, ttlMs: 5000 });
    const model = new Map<string, { epoch: string; offsets: number[] }>();
    for (let step = 0; step < 20_000; step++) {
      const topic = `t${Math.floor(random() * 12)}`;
      const r = random();
      if (r < 0.6) {
        const { offset } = history.append(topic, head(topic, "y".repeat(Math.floor(random() * 400))));
        const before = model.get(topic);
        const position = history.position(topic)!;
        if (before === undefined || before.epoch !== position.epoch) model.set(topic, { epoch: position.epoch, offsets: [offset] });
        else {
          expect(offset).toBe(before.offsets.at(-1)! + 1);
          before.offsets.push(offset);
        }
      } else if (r < 0.95) {
        const read = history.read(topic, { limit: 100, create: false });
        const known = model.get(topic);
        if (read.messages.length > 0) {
          const offsets = read.messages.map((m) => m.offset);
          // consecutive, ending at the topic's offset, at most `size`, and only offsets that were published
          expect(offsets).toEqual(offsets.map((_, i) => offsets[0]! + i));
          expect(offsets.at(-1)).toBe(read.offset);
          expect(offsets.length).toBeLessThanOrEqual(7);
          expect(known?.epoch).toBe(read.epoch);
          for (const m of read.messages) expect(m.frame.endsWith(`,"offset":${m.offset}}`)).toBe(true);
        }
      } else {
        clock.advance(Math.floor(random() * 3000));
      }
      expect(history.bytes).toBeLessThanOrEqual(maxBytes);
    }
    history.close();
  });
});

describe("plan: the switch from history to live", () => {
  const stored = (topic: string, offsets: number[]) => offsets.map((offset) => ({ offset, frame: withOffset(head(topic, String(offset)), offset) }));
  const offsetsOf = (frames: string[]) => frames.map((f) => (JSON.parse(f) as { offset: number }).offset);
  const held = (offsets: number[], epoch = "e", budget = 1 << 20) => {
    const live = new Recovery(budget);
    for (const m of stored("t", offsets)) live.add(m.frame, m.offset, epoch);
    return live;
  };

  test("first subscriber here: replay, then the held messages the read did not have; the position is the newest", () => {
    const read = { epoch: "e", offset: 10, messages: stored("t", [8, 9, 10]), complete: true };
    const result = plan(read, { epoch: "e", offset: 7 }, held([9, 10, 11, 12]), 1 << 20)!;
    expect([result.at, result.recovered, offsetsOf(result.frames)]).toEqual([{ epoch: "e", offset: 12 }, true, [8, 9, 10, 11, 12]]);
    const plain = plan(read, undefined, held([9, 10, 11, 12]), 1 << 20)!;
    expect([plain.at, plain.recovered, plain.frames]).toEqual([{ epoch: "e", offset: 12 }, undefined, []]);
  });

  test("others already subscribed here: the replay stops at this node's stream; what the read had beyond it comes live", () => {
    // The read ran after Redis published 9 and 10, but this node has delivered only up to 8 so far.
    const read = { epoch: "e", offset: 10, messages: stored("t", [6, 7, 8, 9, 10]), complete: true };
    const result = plan(read, { epoch: "e", offset: 5 }, held([]), 1 << 20, { epoch: "e", offset: 8 })!;
    expect([result.at, result.recovered, offsetsOf(result.frames)]).toEqual([{ epoch: "e", offset: 8 }, true, [6, 7, 8]]);
    // This node is ahead of the read: the held messages fill the rest.
    const behindRead = { epoch: "e", offset: 8, messages: stored("t", [7, 8]), complete: true };
    const ahead = plan(behindRead, { epoch: "e", offset: 6 }, held([9, 10]), 1 << 20, { epoch: "e", offset: 10 })!;
    expect([ahead.at, ahead.recovered, offsetsOf(ahead.frames)]).toEqual([{ epoch: "e", offset: 10 }, true, [7, 8, 9, 10]]);
  });

  test("a client ahead of this node's stream waits (undefined) instead of getting a message twice", () => {
    const read = { epoch: "e", offset: 10, messages: stored("t", [10]), complete: true };
    expect(plan(read, { epoch: "e", offset: 9 }, held([]), 1 << 20, { epoch: "e", offset: 8 })).toBeUndefined();
  });

  test("a gap in the held messages, a new epoch, an overflow, or too much to send: recovered false", () => {
    const read = { epoch: "e", offset: 10, messages: stored("t", [9, 10]), complete: true };
    expect(plan(read, { epoch: "e", offset: 8 }, held([11, 13]), 1 << 20)).toEqual({ at: { epoch: "e", offset: 13 }, recovered: false, frames: [] });
    expect(plan(read, { epoch: "e", offset: 8 }, held([1], "f"), 1 << 20)).toEqual({ at: { epoch: "f", offset: 1 }, recovered: false, frames: [] });
    expect(plan(read, { epoch: "e", offset: 8 }, held([]), 1 << 20, { epoch: "f", offset: 3 })).toEqual({ at: { epoch: "f", offset: 3 }, recovered: false, frames: [] });
    const small = held([11], "e", 10);
    expect(small.overflowed).toBe(true);
    expect(plan(read, undefined, small, 1 << 20)).toEqual({ at: { epoch: "e", offset: 11 }, recovered: undefined, frames: [] });
    expect(plan(read, { epoch: "e", offset: 8 }, undefined, 20)!.recovered).toBe(false);
  });
});
