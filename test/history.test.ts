// History on one node (memory broker): offsets on every frame, acks that mean stored, recovery with `since`
// (exactly the missed messages, then live), the refusals, history requests over the socket and HTTP, TTL on a
// ManualClock, and history off.
import { afterAll, describe, expect, test } from "bun:test";
import { SignJWT } from "jose";
import { ManualClock } from "../src/clock.ts";
import type { ServerFrame } from "../src/protocol.ts";
import { Client, serve, stopAll, until, type TestServer } from "./helpers.ts";

afterAll(stopAll);

const KEY = "history-test-key-0123456789";

type Subscribed = Extract<ServerFrame, { type: "subscribed" }>;

async function subscribe(client: Client, topic: string, extra: Record<string, unknown> = {}): Promise<Subscribed> {
  const reply = await client.request({ type: "subscribe", topic, id: "s", ...extra });
  if (reply.type !== "subscribed") throw new Error(`expected subscribed, got ${JSON.stringify(reply)}`);
  return reply;
}

/** Publishes `count` messages {n} with ids and waits for every ack (the publisher is not subscribed). */
async function publishMany(publisher: Client, topic: string, from: number, count: number): Promise<number[]> {
  for (let n = from; n < from + count; n++) publisher.send({ type: "publish", topic, data: { n }, id: n });
  const offsets: number[] = [];
  for (let i = 0; i < count; i++) {
    const ack = await publisher.json();
    if (ack.type !== "ack") throw new Error(`expected ack, got ${JSON.stringify(ack)}`);
    offsets.push(ack.offset!);
  }
  return offsets;
}

describe("offsets", () => {
  test("every message and ack carries the topic's next offset; subscribed gives the position", async () => {
    const server = serve();
    const sub = await Client.connect(server);
    const pub = await Client.connect(server);
    const first = await subscribe(sub, "prices");
    expect(first).toEqual({ type: "subscribed", topic: "prices", epoch: expect.stringMatching(/^[0-9a-z]{8}$/), offset: 0, id: "s" });
    expect(await publishMany(pub, "prices", 0, 3)).toEqual([1, 2, 3]);
    for (let n = 0; n < 3; n++) expect(await sub.json()).toEqual({ type: "message", topic: "prices", data: { n }, offset: n + 1 });
    pub.send({ type: "publish", topic: "other", data: "x", id: 9 });
    expect(await pub.json()).toEqual({ type: "ack", id: 9, offset: 1 }); // offsets are per topic
    const late = await Client.connect(server);
    expect(await subscribe(late, "prices")).toEqual({ ...first, offset: 3 });
    for (const c of [sub, pub, late]) c.close();
  });
});

describe("recovery with since", () => {
  test("a subscriber away for 1,000 messages gets exactly those, in order, then live ones", async () => {
    const server = serve({ HISTORY_SIZE: 1000 });
    const pub = await Client.connect(server);
    let sub = await Client.connect(server);
    const { epoch } = await subscribe(sub, "feed");
    await publishMany(pub, "feed", 0, 5);
    for (let n = 0; n < 5; n++) expect((await sub.json()).type).toBe("message");
    sub.close();
    await until(() => server.topics.localInterest("feed") === 0, 2000, "the old socket to leave");
    await publishMany(pub, "feed", 5, 1000);
    sub = await Client.connect(server);
    expect(await subscribe(sub, "feed", { since: { epoch, offset: 5 } })).toEqual({
      type: "subscribed",
      topic: "feed",
      epoch,
      offset: 1005,
      recovered: true,
      id: "s",
    });
    for (let offset = 6; offset <= 1005; offset++) {
      expect(await sub.json()).toEqual({ type: "message", topic: "feed", data: { n: offset - 1 }, offset });
    }
    await publishMany(pub, "feed", 1005, 1);
    expect(await sub.json()).toEqual({ type: "message", topic: "feed", data: { n: 1005 }, offset: 1006 });
    await sub.silence(30);
    sub.close();
    pub.close();
  });

  test("too old an offset, a wrong epoch, a future offset: recovered false, nothing replayed, then live", async () => {
    const server = serve({ HISTORY_SIZE: 10 });
    const pub = await Client.connect(server);
    const probe = await Client.connect(server);
    const { epoch } = await subscribe(probe, "t");
    probe.close();
    await publishMany(pub, "t", 0, 30);
    let top = 30;
    for (const since of [
      { epoch, offset: 5 }, // offsets 6..20 are gone: only 21..30 are kept
      { epoch: "wrongep0", offset: 29 },
      { epoch, offset: 40 }, // a position the topic never reached
    ]) {
      const c = await Client.connect(server);
      expect(await subscribe(c, "t", { since })).toEqual({ type: "subscribed", topic: "t", epoch, offset: top, recovered: false, id: "s" });
      await publishMany(pub, "t", 100, 1);
      expect(await c.json()).toEqual({ type: "message", topic: "t", data: { n: 100 }, offset: ++top });
      c.close();
    }
    // 24..33 are the ten kept: resuming after 23 is the oldest position that can be recovered.
    const edge = await Client.connect(server);
    const at = await subscribe(edge, "t", { since: { epoch, offset: 23 } });
    expect(at).toEqual({ type: "subscribed", topic: "t", epoch, offset: 33, recovered: true, id: "s" });
    for (let offset = 24; offset <= 33; offset++) expect(((await edge.json()) as { offset: number }).offset).toBe(offset);
    const current = await Client.connect(server);
    expect(await subscribe(current, "t", { since: { epoch, offset: 33 } })).toEqual({ ...at, offset: 33, recovered: true });
    await current.silence(30);
    for (const c of [pub, edge, current]) c.close();
  });

  test("a restarted server has new epochs: recovery is refused, not silently wrong", async () => {
    const first = serve();
    const c1 = await Client.connect(first);
    const { epoch } = await subscribe(c1, "t");
    await publishMany(c1, "t", 0, 1).catch(() => {});
    c1.close();
    await first.shutdown();
    const second = serve();
    const c2 = await Client.connect(second);
    const reply = await subscribe(c2, "t", { since: { epoch, offset: 1 } });
    expect(reply.recovered).toBe(false);
    expect(reply.epoch).not.toBe(epoch);
    expect(reply.offset).toBe(0);
    c2.close();
  });

  test("a malformed since is invalid_message and subscribes nothing", async () => {
    const server = serve();
    const c = await Client.connect(server);
    for (const since of [{ epoch: "", offset: 1 }, { epoch: "e", offset: -1 }, { epoch: "e", offset: 1.5 }, { epoch: "e" }, "e:1", { epoch: "e", offset: 1, x: 1 }]) {
      const reply = await c.request({ type: "subscribe", topic: "t", since, id: 1 });
      expect(reply).toMatchObject({ type: "error", code: "invalid_message", id: 1 });
    }
    expect(server.topics.localInterest("t")).toBe(0);
    c.close();
  });
});

describe("history requests", () => {
  test("latest, after a position, an unknown epoch, limits; over the socket and GET /api/history alike", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const c = await Client.connect(server);
    await publishMany(c, "h", 0, 120);
    const epoch = ((await c.request({ type: "history", topic: "h", limit: 1, id: 1 })) as { epoch: string }).epoch;
    const entries = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => ({ offset: from + i, data: { n: from + i - 1 } }));
    const latest = await c.request({ type: "history", topic: "h", limit: 3, id: 2 });
    expect(latest).toEqual({ type: "history", topic: "h", epoch, offset: 120, messages: entries(118, 120), id: 2 });
    expect(await c.request({ type: "history", topic: "h", since: { epoch, offset: 110 }, limit: 4, id: 3 })).toEqual({
      type: "history", topic: "h", epoch, offset: 120, messages: entries(111, 114), id: 3,
    });
    expect(await c.request({ type: "history", topic: "h", since: { epoch: "unknown0", offset: 110 }, limit: 2, id: 4 })).toEqual({
      type: "history", topic: "h", epoch, offset: 120, messages: entries(119, 120), id: 4,
    });
    const all = (await c.request({ type: "history", topic: "h", id: 5 })) as { messages: unknown[] };
    expect(all.messages).toEqual(entries(21, 120)); // HISTORY_SIZE 100 kept, limit default 100
    for (const limit of [0, 101, 1.5, "3"]) {
      expect(await c.request({ type: "history", topic: "h", limit, id: 6 })).toMatchObject({ type: "error", code: "invalid_message", id: 6 });
    }
    expect(await c.request({ type: "history", topic: "bad topic", id: 7 })).toMatchObject({ type: "error", code: "invalid_topic", id: 7 });
    expect(await c.request({ type: "history", topic: "never", id: 8 })).toEqual({
      type: "history", topic: "never", epoch: expect.any(String), offset: 0, messages: [], id: 8,
    });

    const get = (query: string, auth = `Bearer ${KEY}`) => fetch(`${server.url}/api/history?${query}`, { headers: { authorization: auth } });
    let res = await get(`topic=h&since=110&epoch=${epoch}&limit=4`);
    expect([res.status, await res.json()]).toEqual([200, { topic: "h", epoch, offset: 120, messages: entries(111, 114) }]);
    res = await get("topic=h&limit=2");
    expect([res.status, await res.json()]).toEqual([200, { topic: "h", epoch, offset: 120, messages: entries(119, 120) }]);
    res = await get("topic=h&since=110&epoch=unknown0&limit=1");
    expect(((await res.json()) as { messages: unknown[] }).messages).toEqual(entries(120, 120));
    res = await get("topic=h", "Bearer wrong-key-wrong-key");
    expect([res.status, await res.json()]).toEqual([401, { error: "invalid API key" }]);
    res = await fetch(`${server.url}/api/history?topic=h`, { method: "POST", headers: { authorization: `Bearer ${KEY}` } });
    expect([res.status, res.headers.get("allow")]).toEqual([405, "GET"]);
    res = await get("limit=0", "Bearer wrong-key-wrong-key"); // the key is checked before the query
    expect([res.status, await res.json()]).toEqual([401, { error: "invalid API key" }]);
    for (const query of ["topic=h&limit=0", "topic=h&limit=101", "topic=h&limit=x", "topic=h&since=3", "topic=bad%20topic", "", "topic=h&since=-1&epoch=e"]) {
      res = await get(query);
      expect(res.status).toBe(400);
      expect(typeof ((await res.json()) as { error: unknown }).error).toBe("string");
    }
    c.close();
  });

  test("a history request needs subscribe permission on the topic; a since-subscribe the same", async () => {
    const secret = "history-test-secret-of-at-least-32-characters";
    const server = serve({ AUTH_SECRET: secret });
    const jwt = await new SignJWT({ sub: "reader", topics: { subscribe: ["news.*"], publish: [] } })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(secret));
    const c = await Client.open(`${server.ws()}?token=${jwt}`);
    expect((await c.json()).type).toBe("welcome");
    expect(await c.request({ type: "history", topic: "secret", id: 1 })).toEqual({
      type: "error", code: "forbidden", message: "not allowed to read the history of secret", id: 1,
    });
    expect(await c.request({ type: "subscribe", topic: "secret", since: { epoch: "e", offset: 0 }, id: 2 })).toEqual({
      type: "error", code: "forbidden", message: "not allowed to subscribe to secret", id: 2,
    });
    expect(await c.request({ type: "history", topic: "news.today", id: 3 })).toMatchObject({ type: "history", topic: "news.today", offset: 0, messages: [], id: 3 });
    c.close();
  });

  test("without PUBLISH_API_KEY, GET /api/history is 403", async () => {
    const server = serve();
    const res = await fetch(`${server.url}/api/history?topic=h`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(res.status).toBe(403);
  });
});

describe("retention", () => {
  test("HISTORY_TTL_MS after the last publish the messages are gone: recovery fails; a held topic keeps its epoch", async () => {
    const clock = new ManualClock();
    // Heartbeats far apart: one advance() of a minute must not time the holder out (it cannot answer in between).
    const server = serve({ HISTORY_TTL_MS: 60_000, PING_INTERVAL_MS: 3_600_000, PING_WAIT_MS: 3_600_000 }, { clock });
    const holder = await Client.connect(server);
    const pub = await Client.connect(server);
    const { epoch } = await subscribe(holder, "held");
    await publishMany(pub, "held", 0, 2);
    await publishMany(pub, "free", 0, 2);
    const freeEpoch = ((await pub.request({ type: "history", topic: "free", id: 1 })) as { epoch: string }).epoch;
    clock.advance(60_000);
    const late = await Client.connect(server);
    expect(await subscribe(late, "held", { since: { epoch, offset: 0 } })).toEqual({ type: "subscribed", topic: "held", epoch, offset: 2, recovered: false, id: "s" });
    const free = await subscribe(late, "free", { since: { epoch: freeEpoch, offset: 0 } });
    expect(free.recovered).toBe(false);
    expect(free.epoch).not.toBe(freeEpoch);
    expect(free.offset).toBe(0);
    for (const c of [holder, pub, late]) c.close();
  });

  test("a position outlives the last subscriber by HISTORY_TTL_MS, even on a topic nobody published to yet", async () => {
    const clock = new ManualClock();
    const server = serve({ HISTORY_TTL_MS: 60_000, PING_INTERVAL_MS: 3_600_000, PING_WAIT_MS: 3_600_000 }, { clock });
    const first = await Client.connect(server);
    const { epoch } = await subscribe(first, "quiet");
    clock.advance(120_000); // subscribed, silent for two TTLs: still held, so the position stays
    first.close();
    await until(() => server.topics.localInterest("quiet") === 0, 2000, "the subscriber to leave");
    clock.advance(59_000); // sweeps run; the position is kept
    const pub = await Client.connect(server);
    await publishMany(pub, "quiet", 0, 2);
    const back = await Client.connect(server);
    expect(await subscribe(back, "quiet", { since: { epoch, offset: 0 } })).toEqual({ type: "subscribed", topic: "quiet", epoch, offset: 2, recovered: true, id: "s" });
    expect((await back.json()) as unknown).toEqual({ type: "message", topic: "quiet", data: { n: 0 }, offset: 1 });
    expect((await back.json()) as unknown).toEqual({ type: "message", topic: "quiet", data: { n: 1 }, offset: 2 });
    back.close();
    await until(() => server.topics.localInterest("quiet") === 0, 2000, "the subscriber to leave");
    clock.advance(60_000); // idle for a TTL with no subscriber: forgotten
    const late = await Client.connect(server);
    const reply = await subscribe(late, "quiet", { since: { epoch, offset: 2 } });
    expect([reply.recovered, reply.offset, reply.epoch === epoch]).toEqual([false, 0, false]);
    for (const c of [pub, late]) c.close();
  });

  test("a recovery larger than half the backpressure limit is refused (recovered false) rather than dropping the socket", async () => {
    const server = serve({ BACKPRESSURE_LIMIT_BYTES: 64 * 1024, HISTORY_SIZE: 1000 });
    const pub = await Client.connect(server);
    const probe = await Client.connect(server);
    const { epoch } = await subscribe(probe, "big");
    probe.close();
    for (let i = 0; i < 40; i++) pub.send({ type: "publish", topic: "big", data: "z".repeat(1000), id: i });
    for (let i = 0; i < 40; i++) await pub.json();
    const c = await Client.connect(server);
    expect(await subscribe(c, "big", { since: { epoch, offset: 0 } })).toEqual({ type: "subscribed", topic: "big", epoch, offset: 40, recovered: false, id: "s" });
    const ok = await Client.connect(server);
    expect((await subscribe(ok, "big", { since: { epoch, offset: 20 } })).recovered).toBe(true); // 20 x ~1 KB fits 32 KiB
    await c.silence(30);
    for (const x of [pub, c, ok]) x.close();
  });
});

describe("HISTORY_SIZE=0", () => {
  test("no offsets anywhere, since is ignored, history requests are unavailable", async () => {
    const server: TestServer = serve({ HISTORY_SIZE: 0, PUBLISH_API_KEY: KEY });
    const c = await Client.connect(server);
    expect(await c.request({ type: "subscribe", topic: "t", since: { epoch: "e", offset: 3 }, id: 1 })).toEqual({ type: "subscribed", topic: "t", id: 1 });
    c.send({ type: "publish", topic: "t", data: 1, id: 2 });
    const frames = [await c.json(), await c.json()];
    expect(frames).toContainEqual({ type: "ack", id: 2 });
    expect(frames).toContainEqual({ type: "message", topic: "t", data: 1 });
    expect(await c.request({ type: "history", topic: "t", id: 3 })).toEqual({
      type: "error", code: "not_available", message: "history is off on this server (HISTORY_SIZE=0)", id: 3,
    });
    const res = await fetch(`${server.url}/publish`, { method: "POST", headers: { authorization: `Bearer ${KEY}` }, body: JSON.stringify({ topic: "t", data: 2 }) });
    expect(await res.json()).toEqual({ status: "published", topic: "t" });
    const api = await fetch(`${server.url}/api/history?topic=t`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(api.status).toBe(400);
    expect(await api.json()).toEqual({ error: "history is off on this server (HISTORY_SIZE=0)" });
    c.close();
  });
});
