// Batched delivery (issue 14): a client that asks at the upgrade (`?batch=1`) gets the messages of one topic
// published within one event-loop tick as one text frame, the server frames joined by "\n", each line byte for
// byte what a non-batching client gets. Real servers (memory and a real redis-server), real sockets (helpers'
// Client and RawPeer, the typed client behind a recording TCP proxy). In-process publishes on the memory broker
// are synchronous, so a loop of them falls in one tick: that is how these tests make a burst.
import { afterEach, describe, expect, test } from "bun:test";
import net from "node:net";
import { connect, type SwitchboardClient } from "../src/client.ts";
import type { Conn } from "../src/connections.ts";
import type { Json } from "../src/protocol.ts";
import { Client, encodeFrame, Opcode, RawPeer, rawHttpConnection, recordEvents, redisForFile, serve, stopAll, until, within, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const KEY = "batching-test-api-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };

/** Sockets, raw peers, typed clients and proxies of the current test, closed after it. */
const closers: (() => void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await stopAll();
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A message frame exactly as the server serializes it (offset with history on). */
const msg = (topic: string, data: Json, offset?: number): string =>
  `{"type":"message","topic":"${topic}","data":${JSON.stringify(data)}${offset === undefined ? "" : `,"offset":${offset}`}}`;

/** A deterministic pseudo-random source (the same choices on every run). */
function lcg(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
}

interface Opened {
  c: Client;
  /** The welcome frame as sent. */
  welcome: string;
  id: string;
}

/** Opens /connect with `query` ("?batch=1" batches) and takes its welcome. */
async function open(server: TestServer, query = ""): Promise<Opened> {
  const c = await Client.open(`${server.ws("/connect")}${query}`);
  closers.push(() => c.close());
  const welcome = await c.text();
  const parsed = JSON.parse(welcome) as { type: string; connectionId: string };
  if (parsed.type !== "welcome") throw new Error(`expected welcome, got ${welcome}`);
  return { c, welcome, id: parsed.connectionId };
}

/** The server's Conn of a connection id (for in-process calls of the pipeline, as an embedding app makes). */
function connOf(server: TestServer, id: string): Conn {
  const conn = [...server.gateway.connections].find((c) => server.gateway.connectionId(c) === id);
  if (conn === undefined) throw new Error(`no connection ${id}`);
  return conn;
}

/** Frames read until `n` lines (server frames) arrived; each frame as its lines. Throws past `n`. */
async function readLines(c: Client, n: number, ms = 5000): Promise<string[][]> {
  const frames: string[][] = [];
  let count = 0;
  while (count < n) {
    const lines = (await c.text(ms)).split("\n");
    frames.push(lines);
    count += lines.length;
  }
  if (count !== n) throw new Error(`expected ${n} lines, got ${count}: ${JSON.stringify(frames)}`);
  return frames;
}

/** `n` frames of a non-batching client. */
async function readFrames(c: Client, n: number, ms = 5000): Promise<string[]> {
  const frames: string[] = [];
  while (frames.length < n) frames.push(await c.text(ms));
  return frames;
}

/** Subscribes and checks the reply (history on: position `offset` of some epoch; off, null: none). */
async function subscribe(c: Client, topic: string, offset: number | null = 0): Promise<{ epoch?: string; offset?: number }> {
  const reply = await c.request({ type: "subscribe", topic, id: `s-${topic}` });
  if (offset === null) expect(reply).toEqual({ type: "subscribed", topic, id: `s-${topic}` });
  else expect(reply).toEqual({ type: "subscribed", topic, epoch: expect.any(String), offset, id: `s-${topic}` });
  return reply as { epoch?: string; offset?: number };
}

/** A raw TCP WebSocket peer (no compression negotiated: payloads are the exact bytes) read frame by frame. */
class Peer {
  private next = 0;
  private constructor(readonly peer: RawPeer) {}

  static async open(server: TestServer, query: string): Promise<{ p: Peer; welcome: string; id: string }> {
    const raw = await RawPeer.connect(server.port, `/connect${query}`);
    closers.push(() => raw.destroy());
    const p = new Peer(raw);
    const welcome = (await p.frame()).payload.toString();
    return { p, welcome, id: (JSON.parse(welcome) as { connectionId: string }).connectionId };
  }

  /** The next frame: a whole (FIN) text frame, never fragmented. */
  async frame(ms = 5000): Promise<{ payload: Buffer }> {
    await until(() => this.peer.frames.length > this.next, ms, "a frame");
    const frame = this.peer.frames[this.next++]!;
    expect({ fin: frame.fin, opcode: frame.opcode, rsv1: frame.rsv1 }).toEqual({ fin: true, opcode: Opcode.text, rsv1: false });
    return frame;
  }

  async text(ms?: number): Promise<string> {
    return (await this.frame(ms)).payload.toString();
  }

  /** Several frames in one TCP write: the server reads them together and handles them in one tick. */
  sendAll(frames: unknown[]): void {
    this.peer.socket.write(Buffer.concat(frames.map((f) => encodeFrame(Opcode.text, Buffer.from(JSON.stringify(f))))));
  }

  send(frame: unknown): void {
    this.peer.send(Opcode.text, JSON.stringify(frame));
  }

  get pending(): number {
    return this.peer.frames.length - this.next;
  }
}

const post = (server: TestServer, path: string, body: unknown) =>
  fetch(`http://127.0.0.1:${server.port}${path}`, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), headers: AUTH });

/**
 * Publishes `total` messages `{p: tag, i}` on `c` keeping `window` unanswered, so the topic gets new messages
 * continuously until the last ack (as test/history-cluster.test.ts's flood).
 */
function flood(c: Client, topic: string, tag: string, total: number, window: number): Promise<void> {
  let sent = 0;
  const sendNext = () => c.send({ type: "publish", topic, data: { p: tag, i: sent }, id: `${tag}-${sent++}` });
  const done = (async () => {
    while (sent < Math.min(window, total)) sendNext();
    for (let acked = 0; acked < total; acked++) {
      const frame = await c.json(5000);
      if (frame.type !== "ack" || frame.offset === undefined) throw new Error(`publisher ${tag}: expected an ack, got ${JSON.stringify(frame)}`);
      if (sent < total) sendNext();
    }
  })();
  done.catch(() => {}); // awaited by the test
  return done;
}

/**
 * A batching subscriber of `topic` following a flood: reads messages (checking each offset is the last + 1) up
 * to offset `to`, and returns the last offset it saw.
 */
async function follow(c: Client, topic: string, after: number, to: number, seen: number[]): Promise<number> {
  let last = after;
  while (last < to) {
    for (const line of (await c.text(5000)).split("\n")) {
      const frame = JSON.parse(line) as { type: string; topic: string; offset?: number };
      if (frame.type !== "message" || frame.topic !== topic) throw new Error(`expected a message of ${topic}, got ${line}`);
      if (frame.offset !== last + 1) throw new Error(`after offset ${last} came ${frame.offset}: ${frame.offset! <= last ? "a duplicate" : "a gap"}`);
      seen.push(frame.offset);
      last = frame.offset;
    }
  }
  return last;
}

/** Takes frames up to `unsubscribed` of `topic`: the offsets of the messages before it (each the last + 1). */
async function drainUntilUnsubscribed(c: Client, topic: string, after: number, seen: number[], expectedFrame: string): Promise<number> {
  let last = after;
  for (;;) {
    for (const line of (await c.text(5000)).split("\n")) {
      if (line === expectedFrame) return last;
      const frame = JSON.parse(line) as { type: string; offset?: number };
      if (frame.type !== "message" || frame.offset !== last + 1) throw new Error(`after offset ${last}: unexpected ${line}`);
      seen.push(frame.offset);
      last = frame.offset;
    }
  }
}

describe("the upgrade and the welcome", () => {
  const opts = { PING_INTERVAL_MS: 5000, PING_WAIT_MS: 10000 };
  const welcome = (id: string, batch: boolean) =>
    `{"type":"welcome","connectionId":${JSON.stringify(id)},"heartbeat":{"intervalMs":5000,"timeoutMs":15000}${batch ? ',"batch":true' : ""}}`;

  test('?batch=1 ends the welcome with ,"batch":true}; no parameter or batch=0 is byte for byte today\'s welcome', async () => {
    const server = serve(opts);
    const on = await open(server, "?batch=1");
    expect(on.welcome).toBe(welcome(on.id, true));
    expect(on.welcome.endsWith(',"batch":true}')).toBe(true);
    for (const query of ["", "?batch=0", "?other=x", "?other=x&batch=0"]) {
      const off = await open(server, query);
      expect(off.welcome).toBe(welcome(off.id, false));
    }
    // With other parameters around it too; and the raw peer sees the same bytes.
    const both = await open(server, "?x=1&batch=1&y=2");
    expect(both.welcome).toBe(welcome(both.id, true));
    const raw = await Peer.open(server, "?batch=1");
    expect(raw.welcome).toBe(welcome(raw.id, true));
    expect([...server.gateway.connections].map((c) => c.batch)).toEqual([true, false, false, false, false, true, true]);
  });

  test("batch=2, batch=yes, batch= and batch=true: HTTP 400 {error: batch must be 0 or 1}, nothing held under the caps", async () => {
    const server = serve({ MAX_CONNECTIONS: 1, MAX_CONNECTIONS_PER_IP: 1 });
    const queries = ["batch=2", "batch=yes", "batch=", "batch=true", "batch=01", "x=1&batch=2"];
    for (const query of queries) {
      const { socket, reply, closed } = await rawHttpConnection(server.port);
      closers.push(() => socket.destroy());
      socket.write(
        `GET /connect?${query} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
      await until(() => /\r\n\r\n[\s\S]*\}$/.test(reply.text) || reply.closed, 3000, `the answer to ?${query}`);
      const [head, body] = reply.text.split("\r\n\r\n") as [string, string];
      expect(head.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
      expect(head.toLowerCase()).toContain("content-type: application/json");
      expect(body).toBe('{"error":"batch must be 0 or 1"}');
      socket.destroy();
      await within(closed, 3000, "close");
    }
    expect(server.gateway.metrics.upgradesRejected.get("bad_query")).toBe(queries.length);
    expect(server.gateway.registry.counted).toBe(0);
    expect(server.gateway.connections.size).toBe(0);
    // The one place under MAX_CONNECTIONS=1 is free: a batching client gets it.
    const good = await open(server, "?batch=1");
    expect(JSON.parse(good.welcome)).toMatchObject({ type: "welcome", batch: true });
  });
});

describe("a burst in one tick", () => {
  for (const history of [true, false]) {
    test(`10 publishes in one tick: one frame of 10 lines for a batching subscriber, 10 frames for the other, line for line (history ${history ? "on" : "off"})`, async () => {
      const server = serve(history ? {} : { HISTORY_SIZE: 0 });
      const plain = await open(server);
      const batching = await open(server, "?batch=1");
      for (const s of [plain, batching]) await subscribe(s.c, "burst", history ? 0 : null);
      for (let n = 1; n <= 10; n++) expect(server.topics.publish("burst", { n })).toBe(history ? n : 0);
      const expected = range(1, 10).map((n) => msg("burst", { n }, history ? n : undefined));
      expect(await readFrames(plain.c, 10)).toEqual(expected);
      expect(await batching.c.text()).toBe(expected.join("\n"));
      // A burst of one is one frame of one line, as for anyone else; and nothing came in between.
      server.topics.publish("burst", "one");
      expect(await plain.c.text()).toBe(msg("burst", "one", history ? 11 : undefined));
      expect(await batching.c.text()).toBe(msg("burst", "one", history ? 11 : undefined));
      expect([plain.c.pending, batching.c.pending]).toEqual([0, 0]);
    });
  }

  test("a tick with messages of two topics: one frame per topic, each topic's messages in order; other subscribers unchanged", async () => {
    const server = serve();
    const batching = await open(server, "?batch=1");
    const onlyA = await open(server, "?batch=1");
    const plain = await open(server);
    for (const t of ["two.a", "two.b"]) {
      await subscribe(batching.c, t);
      await subscribe(plain.c, t);
    }
    await subscribe(onlyA.c, "two.a");
    const order: [string, number][] = [["two.a", 1], ["two.b", 1], ["two.a", 2], ["two.a", 3], ["two.b", 2]];
    for (const [topic, n] of order) server.topics.publish(topic, n);
    expect(await readFrames(plain.c, 5)).toEqual(order.map(([topic, n]) => msg(topic, n, n)));
    const frames = [await batching.c.text(), await batching.c.text()].toSorted();
    expect(frames).toEqual([[1, 2, 3].map((n) => msg("two.a", n, n)).join("\n"), [1, 2].map((n) => msg("two.b", n, n)).join("\n")]);
    expect(await onlyA.c.text()).toBe([1, 2, 3].map((n) => msg("two.a", n, n)).join("\n"));
    server.topics.publish("two.c", "nobody"); // no subscriber anywhere: nothing
    server.topics.publish("two.b", "end");
    expect(await batching.c.text()).toBe(msg("two.b", "end", 3));
    expect(await plain.c.text()).toBe(msg("two.b", "end", 3));
    expect([batching.c.pending, onlyA.c.pending, plain.c.pending]).toEqual([0, 0, 0]);
  });
});

describe("batching on and off against the same publishers", () => {
  test("sockets, HTTP and in-process bursts on three topics over a while: identical per-topic sequences (data, offsets, order)", async () => {
    const server = serve({ API_KEY: KEY, HISTORY_SIZE: 1000 });
    const topics = ["mix.a", "mix.b", "mix.c"] as const;
    const plain = await open(server);
    const batching = await open(server, "?batch=1");
    for (const t of topics) {
      await subscribe(plain.c, t);
      await subscribe(batching.c, t);
    }
    const publishers = [await open(server), await open(server)];
    const rand = lcg(14);
    let total = 0;
    const burst = (round: number) => {
      for (let j = 0; j < 10; j++) expect(server.topics.publish(topics[rand(3)]!, { p: "tick", round, j })).toBeGreaterThan(0);
      total += 10;
    };
    const sockets = publishers.map(async (p, n) => {
      for (let round = 0; round < 30; round++) {
        const k = 1 + rand(6);
        for (let j = 0; j < k; j++) p.c.send({ type: "publish", topic: topics[rand(3)]!, data: { p: `s${n}`, round, j }, id: `${round}-${j}` });
        for (let j = 0; j < k; j++) expect(await p.c.json()).toMatchObject({ type: "ack", id: `${round}-${j}`, offset: expect.any(Number) });
        total += k;
        if (n === 0 && round % 5 === 0) burst(round);
      }
    });
    const http = (async () => {
      for (let round = 0; round < 20; round++) {
        const topic = topics[rand(3)]!;
        const res = await post(server, "/publish", { topic, data: { p: "http", round } });
        expect(res.status).toBe(200);
        expect(await res.json()).toEqual({ status: "published", topic, offset: expect.any(Number) });
        total++;
      }
    })();
    await Promise.all([...sockets, http]);
    const plainFrames = await readFrames(plain.c, total);
    const batchFrames = await readLines(batching.c, total);
    const byTopic = (lines: string[]) => {
      const out = new Map<string, string[]>(topics.map((t) => [t, []]));
      for (const line of lines) out.get((JSON.parse(line) as { topic: string }).topic)!.push(line);
      return out;
    };
    const plainByTopic = byTopic(plainFrames);
    expect(byTopic(batchFrames.flat())).toEqual(plainByTopic);
    let sum = 0;
    for (const t of topics) {
      const offsets = plainByTopic.get(t)!.map((line) => (JSON.parse(line) as { offset: number }).offset);
      expect(offsets).toEqual(range(1, offsets.length)); // every message of the topic once, in offset order
      sum += offsets.length;
    }
    expect(sum).toBe(total);
    // Batching took place (the in-process bursts at least), and no frame mixes topics.
    expect(batchFrames.length).toBeLessThan(total);
    for (const frame of batchFrames) expect(new Set(frame.map((l) => (JSON.parse(l) as { topic: string }).topic)).size).toBe(1);
    expect([plain.c.pending, batching.c.pending]).toEqual([0, 0]);
  });
});

describe("MAX_PAYLOAD_BYTES bounds a batch", () => {
  /** One topic's frames split into batches as documented: joined by "\n" while the batch stays within `max`. */
  const greedy = (frames: string[], max: number): string[] => {
    const out: string[] = [];
    for (const frame of frames) {
      const last = out.at(-1);
      if (last !== undefined && Buffer.byteLength(last) + 1 + Buffer.byteLength(frame) <= max) out[out.length - 1] = `${last}\n${frame}`;
      else out.push(frame);
    }
    return out;
  };

  test("a burst whose frames total more than 2048 bytes arrives as frames of at most 2048 bytes, together exactly the messages in order", async () => {
    const server = serve({ MAX_PAYLOAD_BYTES: 2048 });
    const { p } = await Peer.open(server, "?batch=1");
    const plain = await open(server);
    p.send({ type: "subscribe", topic: "limit", id: 1 });
    expect(JSON.parse(await p.text())).toMatchObject({ type: "subscribed", topic: "limit", offset: 0, id: 1 });
    await subscribe(plain.c, "limit");
    for (let n = 1; n <= 10; n++) server.topics.publish("limit", `${n}:${"x".repeat(400)}`);
    const expected = await readFrames(plain.c, 10);
    expect(expected).toEqual(range(1, 10).map((n) => msg("limit", `${n}:${"x".repeat(400)}`, n)));
    const batches = greedy(expected, 2048);
    expect(batches.map((b) => b.split("\n").length)).toEqual([4, 4, 2]);
    for (const batch of batches) {
      const payload = (await p.frame()).payload;
      expect(payload.length).toBeLessThanOrEqual(2048);
      expect(payload.toString()).toBe(batch);
    }
    expect(p.pending).toBe(0);
  });

  test("exactly 2048 bytes is one frame; 2049 bytes is two", async () => {
    const server = serve({ MAX_PAYLOAD_BYTES: 2048 });
    const { p } = await Peer.open(server, "?batch=1");
    p.send({ type: "subscribe", topic: "edge", id: 1 });
    expect(JSON.parse(await p.text())).toMatchObject({ type: "subscribed", topic: "edge", offset: 0, id: 1 });
    // Frames of exactly `size` bytes (offsets stay one digit here).
    const data = (size: number, offset: number) => "y".repeat(size - msg("edge", "", offset).length);
    server.topics.publish("edge", data(1024, 1));
    server.topics.publish("edge", data(1023, 2));
    const fits = await p.frame();
    expect(fits.payload.length).toBe(2048);
    expect(fits.payload.toString()).toBe(`${msg("edge", data(1024, 1), 1)}\n${msg("edge", data(1023, 2), 2)}`);
    server.topics.publish("edge", data(1024, 3));
    server.topics.publish("edge", data(1024, 4));
    expect((await p.frame()).payload.toString()).toBe(msg("edge", data(1024, 3), 3));
    expect((await p.frame()).payload.toString()).toBe(msg("edge", data(1024, 4), 4));
    expect(p.pending).toBe(0);
  });

  test("a message whose frame is longer than the limit (published over HTTP within the body limit) arrives alone, exact", async () => {
    const server = serve({ MAX_PAYLOAD_BYTES: 2048, API_KEY: KEY });
    const { p } = await Peer.open(server, "?batch=1");
    const plain = await open(server);
    p.send({ type: "subscribe", topic: "big", id: 1 });
    expect(JSON.parse(await p.text())).toMatchObject({ type: "subscribed", topic: "big", offset: 0, id: 1 });
    await subscribe(plain.c, "big");
    const large = "z".repeat(2048 - '{"topic":"big","data":""}'.length);
    const body = JSON.stringify({ topic: "big", data: large });
    expect(Buffer.byteLength(body)).toBe(2048); // the largest body the HTTP API takes
    const res = await post(server, "/publish", body);
    expect([res.status, await res.json()]).toEqual([200, { status: "published", topic: "big", offset: 1 }]);
    const frame = msg("big", large, 1);
    expect(Buffer.byteLength(frame)).toBeGreaterThan(2048);
    expect(await plain.c.text()).toBe(frame);
    expect((await p.frame()).payload.toString()).toBe(frame);
    // In one tick with small ones around it: the small ones before it, it alone, the small ones after it.
    for (const data of ["s1", "s2", large, "s3", "s4"]) server.topics.publish("big", data);
    const around = ["s1", "s2", large, "s3", "s4"].map((data, i) => msg("big", data, i + 2));
    expect(await readFrames(plain.c, 5)).toEqual(around);
    expect((await p.frame()).payload.toString()).toBe(`${around[0]}\n${around[1]}`);
    expect((await p.frame()).payload.toString()).toBe(around[2]!);
    expect((await p.frame()).payload.toString()).toBe(`${around[3]}\n${around[4]}`);
    expect(p.pending).toBe(0);
  });

  // The bound is MAX_PAYLOAD_BYTES in bytes: the first version compared string lengths (UTF-16 code units), and
  // JSON keeps non-ASCII text raw, so 10 messages of 300 "é" came as 2 frames of 3274 and 3275 bytes.
  test("non-ASCII data: the bound is in bytes (UTF-8), not in string length", async () => {
    const server = serve({ MAX_PAYLOAD_BYTES: 2048 });
    const { p } = await Peer.open(server, "?batch=1");
    p.send({ type: "subscribe", topic: "utf8", id: 1 });
    expect(JSON.parse(await p.text())).toMatchObject({ type: "subscribed", topic: "utf8", offset: 0, id: 1 });
    const data = "é".repeat(300);
    for (let n = 1; n <= 10; n++) server.topics.publish("utf8", data);
    const frames = range(1, 10).map((n) => msg("utf8", data, n));
    const got: Buffer[] = [];
    for (let lines = 0; lines < 10; ) {
      const payload = (await p.frame()).payload;
      got.push(payload);
      lines += payload.toString().split("\n").length;
    }
    expect(got.map((b) => b.toString()).join("\n")).toBe(frames.join("\n"));
    expect(got.map((b) => b.length)).toEqual(greedy(frames, 2048).map((b) => Buffer.byteLength(b)));
    for (const payload of got) expect(payload.length).toBeLessThanOrEqual(2048);
  });
});

describe("ordering seams", () => {
  test("a batching client's unsubscribe in the same tick as a burst: the burst's messages come before its unsubscribed", async () => {
    const server = serve();
    const { p } = await Peer.open(server, "?batch=1");
    const plain = await open(server);
    p.send({ type: "subscribe", topic: "seam.unsub", id: 1 });
    expect(JSON.parse(await p.text())).toMatchObject({ type: "subscribed", topic: "seam.unsub", offset: 0, id: 1 });
    p.send({ type: "subscribe", topic: "seam.other", id: 2 });
    expect(JSON.parse(await p.text())).toMatchObject({ type: "subscribed", topic: "seam.other", offset: 0, id: 2 });
    await subscribe(plain.c, "seam.unsub");
    // The batching client itself publishes the burst and unsubscribes, in one TCP write: one read, one tick.
    p.sendAll([...range(1, 10).map((n) => ({ type: "publish", topic: "seam.unsub", data: n })), { type: "unsubscribe", topic: "seam.unsub", id: "u" }]);
    const expected = range(1, 10).map((n) => msg("seam.unsub", n, n));
    expect(await readFrames(plain.c, 10)).toEqual(expected);
    const lines: string[] = [];
    while (lines.length < 11) lines.push(...(await p.text()).split("\n"));
    expect(lines).toEqual([...expected, '{"type":"unsubscribed","topic":"seam.unsub","id":"u"}']);
    // Nothing of the topic after it: the next frame is the other topic's.
    server.topics.publish("seam.unsub", "after");
    server.topics.publish("seam.other", "sentinel");
    expect(await p.text()).toBe(msg("seam.other", "sentinel", 1));
    expect(await plain.c.text()).toBe(msg("seam.unsub", "after", 11));
    expect(p.pending).toBe(0);
  });

  test("the server's unsubscribe (POST /api/unsubscribe's command) in the same tick as a burst: messages first, then reason server", async () => {
    const server = serve({ API_KEY: KEY });
    const batching = await open(server, "?batch=1");
    const reference = await open(server); // non-batching, unsubscribed the same way
    const stays = await open(server);
    for (const s of [batching, reference, stays]) await subscribe(s.c, "seam.server");
    for (const s of [batching, reference]) await subscribe(s.c, "seam.other");
    const expected = range(1, 10).map((n) => msg("seam.server", n, n));
    // What POST /api/unsubscribe does (gateway.control), here in the very tick of the burst.
    for (let n = 1; n <= 10; n++) server.topics.publish("seam.server", n);
    expect(server.gateway.control({ type: "unsubscribe", connectionId: batching.id, topic: "seam.server" })).toBe(1);
    expect(server.gateway.control({ type: "unsubscribe", connectionId: reference.id, topic: "seam.server" })).toBe(1);
    server.topics.publish("seam.server", 11); // after the unsubscribe, same tick: not for them
    const unsubscribed = '{"type":"unsubscribed","topic":"seam.server","reason":"server"}';
    expect(await readFrames(reference.c, 11)).toEqual([...expected, unsubscribed]);
    expect(await batching.c.text()).toBe(expected.join("\n"));
    expect(await batching.c.text()).toBe(unsubscribed);
    expect(await readFrames(stays.c, 11)).toEqual([...expected, msg("seam.server", 11, 11)]);
    server.topics.publish("seam.other", "sentinel");
    for (const s of [batching, reference]) expect(await s.c.text()).toBe(msg("seam.other", "sentinel", 1));
    expect([batching.c.pending, reference.c.pending, stays.c.pending]).toEqual([0, 0, 0]);

    // Over HTTP while a publisher floods the topic: every message before `unsubscribed` (1..k, in order), none after.
    const sub = await open(server, "?batch=1");
    await subscribe(sub.c, "seam.http");
    await subscribe(sub.c, "seam.other", 1);
    const pub = await open(server);
    const done = flood(pub.c, "seam.http", "f", 300, 8);
    const seen: number[] = [];
    const last = await follow(sub.c, "seam.http", 0, 50, seen);
    const res = await post(server, "/api/unsubscribe", { connectionId: sub.id, topic: "seam.http" });
    expect([res.status, await res.json()]).toEqual([200, { status: "sent", unsubscribed: 1 }]);
    const k = await drainUntilUnsubscribed(sub.c, "seam.http", last, seen, '{"type":"unsubscribed","topic":"seam.http","reason":"server"}');
    expect(seen).toEqual(range(1, k));
    await done;
    expect(k).toBeLessThan(300);
    server.topics.publish("seam.other", "sentinel");
    expect(await sub.c.text()).toBe(msg("seam.other", "sentinel", 2));
    expect(sub.c.pending).toBe(0);
  });

  test("subscribing while a burst is pending: subscribed at the position, then exactly the later messages, none twice", async () => {
    const server = serve();
    const early = await open(server, "?batch=1"); // holds the topic before: gets all of them
    const plain = await open(server);
    const late = await open(server, "?batch=1");
    const resumer = await open(server, "?batch=1");
    const epoch = (await subscribe(early.c, "seam.sub")).epoch!;
    await subscribe(plain.c, "seam.sub");
    // In one tick: 5 messages, `late` subscribes, `resumer` resumes after offset 2, 5 more messages.
    for (let n = 1; n <= 5; n++) server.topics.publish("seam.sub", n);
    server.topics.subscribe(connOf(server, late.id), "seam.sub", "late");
    server.topics.subscribe(connOf(server, resumer.id), "seam.sub", "resume", { epoch, offset: 2 });
    for (let n = 6; n <= 10; n++) server.topics.publish("seam.sub", n);
    const all = range(1, 10).map((n) => msg("seam.sub", n, n));
    expect(await readFrames(plain.c, 10)).toEqual(all);
    expect((await readLines(early.c, 10)).flat()).toEqual(all);
    expect(await late.c.text()).toBe(`{"type":"subscribed","topic":"seam.sub","epoch":"${epoch}","offset":5,"id":"late"}`);
    expect(await late.c.text()).toBe(all.slice(5).join("\n"));
    // The replay (3..5) comes as single frames in the recovery step, the live ones (6..10) as their batch.
    expect(await resumer.c.text()).toBe(`{"type":"subscribed","topic":"seam.sub","epoch":"${epoch}","offset":5,"recovered":true,"id":"resume"}`);
    expect((await readLines(resumer.c, 8)).flat()).toEqual(all.slice(2));

    // The same from the socket: one TCP write of 5 publishes, a subscribe, 5 publishes.
    const { p } = await Peer.open(server, "?batch=1");
    p.sendAll([
      ...range(11, 15).map((n) => ({ type: "publish", topic: "seam.sub", data: n })),
      { type: "subscribe", topic: "seam.sub", id: "raw" },
      ...range(16, 20).map((n) => ({ type: "publish", topic: "seam.sub", data: n })),
    ]);
    const more = range(11, 20).map((n) => msg("seam.sub", n, n));
    expect(await readFrames(plain.c, 10)).toEqual(more);
    for (const s of [early, late, resumer]) expect((await readLines(s.c, 10)).flat()).toEqual(more);
    const parsed: unknown = JSON.parse(await p.text());
    expect(parsed).toEqual({ type: "subscribed", topic: "seam.sub", epoch, offset: expect.any(Number), id: "raw" });
    const reply = parsed as { offset: number };
    expect(reply.offset).toBeGreaterThanOrEqual(15);
    const lines: string[] = [];
    while (lines.length < 20 - reply.offset) lines.push(...(await p.text()).split("\n"));
    expect(lines).toEqual(more.slice(reply.offset - 10));
    server.topics.publish("seam.sub", "end");
    for (const c of [early.c, late.c, resumer.c, plain.c]) expect(await c.text()).toBe(msg("seam.sub", "end", 21));
    expect(await p.text()).toBe(msg("seam.sub", "end", 21));
  });

  test("a since-resubscribe during a flood (same connection, and a new one): every offset once, in order", async () => {
    const server = serve({ HISTORY_SIZE: 1000 });
    const topic = "seam.flood";
    let sub = await open(server, "?batch=1");
    const { epoch } = await subscribe(sub.c, topic);
    const pub = await open(server);
    const done = flood(pub.c, topic, "m", 400, 8);
    const seen: number[] = [];
    let last = await follow(sub.c, topic, 0, 100, seen);
    // Unsubscribe, take what comes before `unsubscribed`, resume after the last offset seen.
    sub.c.send({ type: "unsubscribe", topic, id: "u" });
    last = await drainUntilUnsubscribed(sub.c, topic, last, seen, `{"type":"unsubscribed","topic":"${topic}","id":"u"}`);
    const again = await sub.c.request({ type: "subscribe", topic, since: { epoch, offset: last }, id: "r1" });
    expect(again).toEqual({ type: "subscribed", topic, epoch, offset: expect.any(Number), recovered: true, id: "r1" });
    last = await follow(sub.c, topic, last, 200, seen);
    // A new connection resumes where the old one stopped.
    sub.c.close();
    sub = await open(server, "?batch=1");
    const moved = await sub.c.request({ type: "subscribe", topic, since: { epoch, offset: last }, id: "r2" });
    expect(moved).toEqual({ type: "subscribed", topic, epoch, offset: expect.any(Number), recovered: true, id: "r2" });
    last = await follow(sub.c, topic, last, 400, seen);
    await done;
    expect(seen).toEqual(range(1, 400));
    pub.c.send({ type: "publish", topic, data: "end" });
    expect(await sub.c.text()).toBe(msg(topic, "end", 401));
    expect(sub.c.pending).toBe(0);
    expect(server.gateway.hub.recovering).toBe(0);
  });
});

describe("two nodes on Redis", () => {
  let redis: TestRedis;
  redisForFile(async () => (redis = await startRedis()));

  async function node(): Promise<TestServer> {
    const server = serve({ REDIS_URL: redis.url, HISTORY_SIZE: 1000 });
    await until(() => server.gateway.readiness().ready, 5000, "node ready");
    return server;
  }

  test("a batching subscriber on B of a topic published in bursts on A: every offset once, in order, line for line", async () => {
    const a = await node();
    const b = await node();
    const topic = "cluster.burst";
    const batching = await open(b, "?batch=1");
    const plain = await open(b);
    const { epoch } = await subscribe(batching.c, topic);
    await subscribe(plain.c, topic);
    for (let round = 0; round < 20; round++) {
      const offsets = await Promise.all(range(1, 10).map((j) => a.topics.publish(topic, { round, j })));
      expect(offsets).toEqual(range(round * 10 + 1, round * 10 + 10));
    }
    const expected = range(0, 199).map((i) => msg(topic, { round: Math.floor(i / 10), j: (i % 10) + 1 }, i + 1));
    expect(await readFrames(plain.c, 200)).toEqual(expected);
    const frames = await readLines(batching.c, 200);
    expect(frames.flat()).toEqual(expected);
    expect(frames.length).toBeLessThan(200); // B got some of them in one tick from Redis

    // And a since-resubscribe on B while a publisher on A floods the topic.
    const pub = await open(a);
    const done = flood(pub.c, topic, "m", 300, 8);
    const seen: number[] = [];
    let last = await follow(batching.c, topic, 200, 300, seen);
    batching.c.send({ type: "unsubscribe", topic, id: "u" });
    last = await drainUntilUnsubscribed(batching.c, topic, last, seen, `{"type":"unsubscribed","topic":"${topic}","id":"u"}`);
    const again = await batching.c.request({ type: "subscribe", topic, since: { epoch, offset: last }, id: "r" });
    expect(again).toEqual({ type: "subscribed", topic, epoch, offset: expect.any(Number), recovered: true, id: "r" });
    await follow(batching.c, topic, last, 500, seen);
    await done;
    expect(seen).toEqual(range(201, 500));
    expect((await readFrames(plain.c, 300)).map((f) => (JSON.parse(f) as { offset: number }).offset)).toEqual(range(201, 500));
    pub.c.send({ type: "publish", topic, data: "end", id: "end" });
    expect(await pub.c.json()).toEqual({ type: "ack", id: "end", offset: 501 });
    expect(await batching.c.text()).toBe(msg(topic, "end", 501));
    expect(await plain.c.text()).toBe(msg(topic, "end", 501));
    for (const n of [a, b]) {
      expect(n.gateway.hub.recovering).toBe(0);
      expect(n.gateway.metrics.streamBreaks).toBe(0);
    }
  });
});

/**
 * A TCP proxy that records each connection's request line and the WebSocket frames the server sends down (the
 * server is run without permessage-deflate, so their payloads are plain text).
 */
async function recordingProxy(upstreamPort: number) {
  const requestLines: string[] = [];
  const downstream: string[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, "127.0.0.1");
    let up = "";
    let recorded = false;
    let down = Buffer.alloc(0);
    let upgraded = false;
    client.on("data", (chunk: Buffer) => {
      if (!recorded) {
        up += chunk.toString("latin1");
        if (up.includes("\r\n")) {
          requestLines.push(up.slice(0, up.indexOf("\r\n")));
          recorded = true;
        }
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      client.write(chunk);
      down = Buffer.concat([down, chunk]);
      if (!upgraded) {
        const end = down.indexOf("\r\n\r\n");
        if (end < 0) return;
        down = down.subarray(end + 4);
        upgraded = true;
      }
      for (;;) {
        if (down.length < 2) return;
        let length = down[1]! & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (down.length < 4) return;
          length = down.readUInt16BE(2);
          offset = 4;
        } else if (length === 127) {
          if (down.length < 10) return;
          length = Number(down.readBigUInt64BE(2));
          offset = 10;
        }
        if (down.length < offset + length) return;
        if ((down[0]! & 0x0f) === Opcode.text) downstream.push(down.subarray(offset, offset + length).toString());
        down = down.subarray(offset + length);
      }
    });
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => {});
    upstream.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, requestLines, downstream };
}

describe("the typed client", () => {
  /** Bursts of 10 published in one tick to a typed client's topic: what its handler saw, and the frames sent down. */
  async function run(batch: boolean | undefined) {
    const server = serve({ PERMESSAGE_DEFLATE: false });
    const proxy = await recordingProxy(server.port);
    const client: SwitchboardClient = connect(`http://127.0.0.1:${proxy.port}`, batch === undefined ? { reconnect: false } : { reconnect: false, batch });
    closers.push(() => client.close());
    const events = recordEvents(client);
    const handled: { data: Json; offset: number | undefined }[] = [];
    client.subscribe("typed", (data, frame) => handled.push({ data, offset: frame.offset }));
    await within(client.ready(), 5000, "the client open");
    await until(() => events.subscribed.length === 1, 5000, "subscribed");
    for (let round = 0; round < 5; round++) {
      for (let j = 1; j <= 10; j++) server.topics.publish("typed", { round, j });
      await until(() => handled.length === (round + 1) * 10, 5000, `round ${round} handled`);
    }
    server.topics.publish("typed", "one");
    await until(() => handled.length === 51, 5000, "the single one");
    expect(events.error).toEqual([]);
    const conns = [...server.gateway.connections];
    return { handled, proxy, batchOnServer: conns.map((c) => c.batch) };
  }

  const expected = [
    ...range(0, 49).map((i) => ({ data: { round: Math.floor(i / 10), j: (i % 10) + 1 }, offset: i + 1 })),
    { data: "one", offset: 51 },
  ];

  test("batch on by default: ?batch=1 at the upgrade, batches on the wire, the handler sees single messages in order, once", async () => {
    const { handled, proxy, batchOnServer } = await run(undefined);
    expect(handled).toEqual(expected);
    expect(proxy.requestLines).toEqual(["GET /connect?batch=1 HTTP/1.1"]);
    expect(batchOnServer).toEqual([true]);
    expect(proxy.downstream[0]).toEndWith(',"batch":true}');
    // The messages came as 5 frames of 10 lines and one of 1.
    const messages = proxy.downstream.filter((f) => f.startsWith('{"type":"message"'));
    expect(messages.map((f) => f.split("\n").length)).toEqual([10, 10, 10, 10, 10, 1]);
    expect(messages.flatMap((f) => f.split("\n"))).toEqual(expected.map((m) => msg("typed", m.data, m.offset)));
  });

  test("{ batch: false }: no batch parameter at the upgrade, one frame per message, the same handler sequence", async () => {
    const { handled, proxy, batchOnServer } = await run(false);
    expect(handled).toEqual(expected);
    expect(proxy.requestLines).toEqual(["GET /connect HTTP/1.1"]);
    expect(batchOnServer).toEqual([false]);
    expect(proxy.downstream[0]).not.toContain('"batch"');
    const messages = proxy.downstream.filter((f) => f.startsWith('{"type":"message"'));
    expect(messages).toEqual(expected.map((m) => msg("typed", m.data, m.offset)));
  });
});

describe("presence", () => {
  test("join/leave to a batching presence: true subscriber are single frames, exactly as to a non-batching one", async () => {
    const server = serve();
    const watchers = [await open(server, "?batch=1"), await open(server)];
    for (const [i, w] of watchers.entries()) {
      expect(await w.c.request({ type: "subscribe", topic: "room", presence: true, id: i })).toEqual({ type: "subscribed", topic: "room", epoch: expect.any(String), offset: 0, id: i });
    }
    // The second watcher's own join reached the first.
    expect(await watchers[0]!.c.text()).toBe(`{"type":"join","topic":"room","client":{"connectionId":"${watchers[1]!.id}","user":null}}`);
    for (const guestQuery of ["", "?batch=1"]) {
      const guest = await open(server, guestQuery);
      expect(await guest.c.request({ type: "subscribe", topic: "room", info: { name: "ann" }, id: 1 })).toMatchObject({ type: "subscribed", id: 1 });
      const join = `{"type":"join","topic":"room","client":{"connectionId":"${guest.id}","user":null,"info":{"name":"ann"}}}`;
      const leave = join.replace('"type":"join"', '"type":"leave"');
      for (const w of watchers) expect(await w.c.text()).toBe(join);
      expect(await guest.c.request({ type: "unsubscribe", topic: "room", id: 2 })).toEqual({ type: "unsubscribed", topic: "room", id: 2 });
      for (const w of watchers) expect(await w.c.text()).toBe(leave);
      await guest.c.request({ type: "subscribe", topic: "room", info: { name: "ann" }, id: 3 });
      for (const w of watchers) expect(await w.c.text()).toBe(join);
      guest.c.close();
      for (const w of watchers) expect(await w.c.text()).toBe(leave);
    }
    // Several joins and leaves in one tick (server-side unsubscribes): each its own frame, never joined.
    const guests = [await open(server), await open(server), await open(server)];
    for (const g of guests) {
      await subscribe(g.c, "room");
      for (const w of watchers) expect(await w.c.text()).toBe(`{"type":"join","topic":"room","client":{"connectionId":"${g.id}","user":null}}`);
    }
    for (const g of guests) expect(server.gateway.control({ type: "unsubscribe", connectionId: g.id, topic: "room" })).toBe(1);
    const leaves = guests.map((g) => `{"type":"leave","topic":"room","client":{"connectionId":"${g.id}","user":null}}`);
    for (const w of watchers) expect(await readFrames(w.c, 3)).toEqual(leaves);
    // Messages of the room still batch for the batching watcher.
    for (let n = 1; n <= 3; n++) server.topics.publish("room", n);
    expect(await watchers[0]!.c.text()).toBe(range(1, 3).map((n) => msg("room", n, n)).join("\n"));
    expect(await readFrames(watchers[1]!.c, 3)).toEqual(range(1, 3).map((n) => msg("room", n, n)));
    for (const w of watchers) expect(w.c.pending).toBe(0);
  });
});

describe("server-side closes", () => {
  // Server-side closes send the pending batches first (hub.flushNow): the first version closed the socket while
  // its batch waited for the end of the tick, so batching clients lost what non-batching ones got (3 vs 0).
  for (const [what, code, reason] of [
    ["a disconnect (POST /api/disconnect's command)", 4003, "disconnected by server"],
    ["a shutdown", 1001, "server shutting down"],
  ] as const) {
    test(`${what} in the same tick as a burst: the burst's messages come before the close, as for a non-batching client`, async () => {
      const server = serve();
      const batching = await open(server, "?batch=1");
      const plain = await open(server);
      for (const s of [batching, plain]) await subscribe(s.c, "closing");
      for (let n = 1; n <= 3; n++) server.topics.publish("closing", n);
      let stopped: Promise<void> = Promise.resolve();
      if (code === 4003) for (const s of [batching, plain]) expect(server.gateway.control({ type: "disconnect", connectionId: s.id })).toBe(1);
      else stopped = server.shutdown();
      for (const s of [batching, plain]) expect(await within(s.c.closed, 5000, "the close")).toEqual({ code, reason });
      await stopped;
      const expected = range(1, 3).map((n) => msg("closing", n, n));
      expect(await readFrames(plain.c, 3)).toEqual(expected);
      expect(batching.c.pending).toBe(1);
      expect(await batching.c.text()).toBe(expected.join("\n"));
    });
  }
});

describe("the hub forgets batch topics nobody holds", () => {
  // The first version removed a topic's batch topic only when the topic got another message: quiet per-user or
  // per-room topics piled up forever, and every message then paid a map lookup.
  test("after unsubscribes and closes, no batch topic is left, and a topic batched again works", async () => {
    const server = serve();
    const a = await open(server, "?batch=1");
    const b = await open(server, "?batch=1");
    for (let i = 0; i < 50; i++) await subscribe(a.c, `quiet.${i}`);
    for (let i = 0; i < 50; i++) await subscribe(b.c, `other.${i}`);
    expect(server.gateway.hub.batchedTopics).toBe(100);
    for (let i = 0; i < 50; i++) expect(await a.c.request({ type: "unsubscribe", topic: `quiet.${i}`, id: i })).toEqual({ type: "unsubscribed", topic: `quiet.${i}`, id: i });
    expect(server.gateway.hub.batchedTopics).toBe(50);
    b.c.close();
    await until(() => server.gateway.connections.size === 1, 3000, "b's close");
    expect(server.gateway.hub.batchedTopics).toBe(0);
    // Batched again from scratch: one frame for a tick's burst, as before.
    await subscribe(a.c, "quiet.0", 0);
    for (let n = 1; n <= 3; n++) server.topics.publish("quiet.0", n);
    expect((await a.c.text()).split("\n").map((line) => (JSON.parse(line) as { data: number }).data)).toEqual([1, 2, 3]);
  });
});

describe("BATCH_MAX_DELAY_MS", () => {
  // Two publishes in two event-loop ticks (a setImmediate between them): two frames at the default (0: the end of
  // each tick), one frame when a batch may wait for more.
  const twoTicks = async (server: TestServer) => {
    server.topics.publish("slow", 1);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    server.topics.publish("slow", 2);
  };
  const data = (frame: string) => frame.split("\n").map((line) => (JSON.parse(line) as { data: number }).data);

  test("0 (the default): a batch per tick", async () => {
    const server = serve();
    const { c } = await open(server, "?batch=1");
    await subscribe(c, "slow");
    await twoTicks(server);
    expect(data(await c.text())).toEqual([1]);
    expect(data(await c.text())).toEqual([2]);
  });

  test("200: messages of several ticks in one frame, in order; a non-batching subscriber is not delayed", async () => {
    const server = serve({ BATCH_MAX_DELAY_MS: 200 });
    const { c } = await open(server, "?batch=1");
    const plain = await open(server);
    await subscribe(c, "slow");
    await subscribe(plain.c, "slow");
    await twoTicks(server);
    expect(await readFrames(plain.c, 2)).toEqual([1, 2].map((n) => `{"type":"message","topic":"slow","data":${n},"offset":${n}}`));
    expect(data(await c.text())).toEqual([1, 2]);
    // A server close sends what waits at once, whatever the delay.
    server.topics.publish("slow", 3);
    server.gateway.drain();
    expect(data(await c.text())).toEqual([3]);
  });
});
