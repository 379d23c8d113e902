// The typed client's history support against real servers: positions kept per held topic and sent as `since`
// on every resubscribe (server-side drops, a restarted memory server, history off), `subscribe(..., {since})`,
// publish() offsets, history(), and the recovery probe end to end (examples/recovery-probe.ts: two client
// processes, a real redis-server, the server process SIGKILLed and restarted twice while publishing).
import { afterAll, describe, expect, test } from "bun:test";
import {
  connect,
  SwitchboardError,
  type ClientEvents,
  type ClientOptions,
  type MessageFrame,
  type Position,
  type SwitchboardClient,
} from "../src/client.ts";
import { collectOutput, freePort, serve, spawnEntry, stopAll, until, within, type Entry, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const clients: SwitchboardClient[] = [];
const track = (c: SwitchboardClient) => (clients.push(c), c);
const fast = { reconnect: { baseMs: 20, capMs: 100 } } satisfies ClientOptions;
const probes: Bun.Subprocess[] = [];
let redis: TestRedis | undefined;
afterAll(async () => {
  for (const c of clients) c.close();
  for (const p of probes) p.kill("SIGKILL");
  await Promise.all(probes.map((p) => p.exited));
  await stopAll();
  await redis?.stop();
});

type Handled = { n: number; offset: number | undefined };

/** A typed client holding `topic`: every message handled, and every recovery / subscribed event, in order. */
function holder(client: SwitchboardClient, topic: string, since?: Position) {
  const handled: Handled[] = [];
  const recoveries: (ClientEvents["recovery"] & { lastBefore: number | undefined })[] = [];
  const subscribed: ClientEvents["subscribed"][] = [];
  const closes: ClientEvents["close"][] = [];
  client.on("recovery", (e) => {
    if (e.topic === topic) recoveries.push({ ...e, lastBefore: handled.at(-1)?.offset });
  });
  client.on("subscribed", (e) => {
    if (e.topic === topic) subscribed.push(e);
  });
  client.on("close", (e) => closes.push(e));
  const unsubscribe = client.subscribe<{ n: number }>(
    topic,
    (data, frame: MessageFrame) => handled.push({ n: data.n, offset: frame.offset }),
    since === undefined ? {} : { since },
  );
  return { handled, recoveries, subscribed, closes, unsubscribe };
}

/** Closes the typed client's connection from the server's side, as the gateway does on an internal error. */
function dropServerSide(server: TestServer, client: SwitchboardClient): void {
  const conn = [...server.gateway.connections].find((c) => server.gateway.connectionId(c) === client.connectionId);
  if (conn === undefined) throw new Error(`no server-side connection ${client.connectionId}`);
  conn.ws.close(1011, "internal error");
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("memory server", () => {
  test("three server-side drops while another client publishes: every message once, in order, replayed from the last handled", async () => {
    const server = serve({ HISTORY_SIZE: 1000 });
    const topic = "drops";
    const a = track(connect(server.ws(), fast));
    const p = track(connect(server.ws(), fast));
    await within(Promise.all([a.ready(), p.ready()]), 5000, "both clients");
    const sub = holder(a, topic);
    await until(() => sub.subscribed.length === 1, 3000, "the first subscribed");
    const epoch = sub.subscribed[0]!.epoch!;
    expect(sub.subscribed[0]).toEqual({ topic, epoch: expect.stringMatching(/^[0-9a-z]{8}$/), offset: 0 });
    expect(sub.recoveries).toEqual([]); // a first subscribe is no recovery

    // One publisher, one socket: frames leave (and get their offsets) in call order, so offset === n.
    let n = 0;
    const acks: Promise<{ offset?: number }>[] = [];
    const publishNext = () => {
      const ack = p.publish(topic, { n: ++n });
      acks.push(ack);
      return ack;
    };
    // The moment A learns its link is gone, 20 more go out: they are certainly published while A is away.
    const offClose = a.on("close", () => {
      for (let i = 0; i < 20; i++) void publishNext();
    });

    for (let round = 1; round <= 3; round++) {
      const end = round * 200;
      for (let i = 0; i < 60; i++) await publishNext();
      await until(() => sub.handled.length === n, 3000, `round ${round}: A to catch up before the drop`);
      dropServerSide(server, a);
      await until(() => sub.closes.length === round, 3000, `round ${round}: A's close`);
      expect(sub.closes[round - 1]).toEqual({ code: 1011, reason: "internal error", willReconnect: true });
      // The rest of the round goes out one ack at a time, across A's reconnect and recovery.
      while (n < end) await publishNext();
      await until(() => sub.recoveries.length === round && sub.handled.length === end, 5000, `round ${round}: recovery and all ${end} messages`);
      const recovery = sub.recoveries[round - 1]!;
      expect(recovery).toEqual({ topic, recovered: true, replayed: expect.any(Number), epoch, offset: expect.any(Number), lastBefore: expect.any(Number) });
      // Missed while away: everything after the last message handled before the drop, up to the position
      // the server reported (at least the 20 published from A's close listener).
      expect(recovery.lastBefore).toBe(end - 200 + 60);
      expect(recovery.replayed).toBe(recovery.offset! - recovery.lastBefore!);
      expect(recovery.replayed).toBeGreaterThanOrEqual(20);
    }
    offClose();
    expect((await Promise.all(acks)).map((ack) => ack.offset)).toEqual(range(1, 600));
    expect(sub.handled.map((h) => h.offset)).toEqual(range(1, 600));
    expect(sub.handled.map((h) => h.n)).toEqual(range(1, 600));
    expect(sub.subscribed.map((s) => s.epoch)).toEqual([epoch, epoch, epoch, epoch]);
  });

  test("a memory server restarted on the same port: recovery is recovered:false with the new epoch, then offsets from 1", async () => {
    const port = freePort();
    let server = serve({ PORT: port, HISTORY_SIZE: 100 });
    const topic = "restart";
    const a = track(connect(server.ws(), fast));
    const sub = holder(a, topic);
    await until(() => sub.subscribed.length === 1, 5000, "subscribed");
    const oldEpoch = sub.subscribed[0]!.epoch!;
    const p = track(connect(server.ws(), fast));
    for (let i = 1; i <= 5; i++) expect(await p.publish(topic, { n: i })).toEqual({ offset: i });
    await until(() => sub.handled.length === 5, 3000, "messages before the restart");

    await server.shutdown();
    await until(() => sub.closes.length >= 1, 3000, "A's close"); // failed attempts may follow at once
    expect(sub.closes[0]).toEqual({ code: 1001, reason: "server shutting down", willReconnect: true });
    server = serve({ PORT: port, HISTORY_SIZE: 100 });
    await until(() => sub.recoveries.length === 1, 5000, "the recovery after the restart");
    const recovery = sub.recoveries[0]!;
    expect(recovery).toEqual({ topic, recovered: false, replayed: 0, epoch: expect.stringMatching(/^[0-9a-z]{8}$/), offset: 0, lastBefore: 5 });
    expect(recovery.epoch).not.toBe(oldEpoch);

    await within(p.ready(), 5000, "the publisher back");
    for (let i = 6; i <= 8; i++) expect(await p.publish(topic, { n: i })).toEqual({ offset: i - 5 });
    await until(() => sub.handled.length === 8, 3000, "messages after the restart");
    expect(sub.handled).toEqual([...range(1, 5).map((i) => ({ n: i, offset: i })), ...range(6, 8).map((i) => ({ n: i, offset: i - 5 }))]);
    expect(sub.subscribed.map((s) => s.epoch)).toEqual([oldEpoch, recovery.epoch]);
  });

  test("subscribe with since replays exactly what follows it; publish() resolves the offset; history() the exact frame", async () => {
    const server = serve({ HISTORY_SIZE: 100 });
    const topic = "resume";
    const p = track(connect(server.ws(), fast));
    const offsets: (number | undefined)[] = [];
    for (let i = 1; i <= 10; i++) offsets.push((await p.publish(topic, { n: i })).offset);
    expect(offsets).toEqual(range(1, 10));

    const whole = await p.history(topic);
    const epoch = whole.epoch;
    expect(whole).toEqual({ type: "history", topic, epoch: expect.stringMatching(/^[0-9a-z]{8}$/), offset: 10, messages: range(1, 10).map((i) => ({ offset: i, data: { n: i } })), id: expect.any(Number) });
    expect(await p.history(topic, { since: { epoch, offset: 4 }, limit: 3 })).toEqual({
      type: "history",
      topic,
      epoch,
      offset: 10,
      messages: range(5, 7).map((i) => ({ offset: i, data: { n: i } })),
      id: expect.any(Number),
    });
    expect(await p.history(topic, { limit: 2 })).toEqual({ type: "history", topic, epoch, offset: 10, messages: range(9, 10).map((i) => ({ offset: i, data: { n: i } })), id: expect.any(Number) });
    // An epoch that is not the topic's: the latest `limit`, and the current epoch to start from.
    expect(await p.history(topic, { since: { epoch: "oldepoch", offset: 4 }, limit: 1 })).toEqual({ type: "history", topic, epoch, offset: 10, messages: [{ offset: 10, data: { n: 10 } }], id: expect.any(Number) });

    const b = track(connect(server.ws(), fast));
    const sub = holder(b, topic, { epoch, offset: 4 });
    await until(() => sub.handled.length === 6, 3000, "the replay");
    expect(sub.handled).toEqual(range(5, 10).map((i) => ({ n: i, offset: i })));
    expect(sub.subscribed).toEqual([{ topic, epoch, offset: 10 }]);
    expect(sub.recoveries).toEqual([{ topic, recovered: true, replayed: 6, epoch, offset: 10, lastBefore: undefined }]);
    expect(await p.publish(topic, { n: 11 })).toEqual({ offset: 11 });
    await until(() => sub.handled.length === 7, 3000, "a live message");
    expect(sub.handled.at(-1)).toEqual({ n: 11, offset: 11 });

    // A position from another epoch replays nothing and says so.
    const c = track(connect(server.ws(), fast));
    const stale = holder(c, topic, { epoch: "oldepoch", offset: 4 });
    await until(() => stale.recoveries.length === 1, 3000, "the stale resume");
    expect(stale.recoveries).toEqual([{ topic, recovered: false, replayed: 0, epoch, offset: 11, lastBefore: undefined }]);
    expect(await p.publish(topic, { n: 12 })).toEqual({ offset: 12 });
    await until(() => stale.handled.length === 1, 3000, "a live message after the stale resume");
    expect(stale.handled).toEqual([{ n: 12, offset: 12 }]);

    // Refusals: limit 0 is not a valid frame; history off has nothing to read.
    const invalid = await p.history(topic, { limit: 0 }).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(SwitchboardError);
    expect(invalid).toMatchObject({ code: "invalid_message", message: "invalid_message: limit: Too small: expected number to be >=1" });

    const off = serve({ HISTORY_SIZE: 0 });
    const q = track(connect(off.ws(), fast));
    expect(await q.publish(topic, { n: 1 })).toEqual({});
    const unavailable = await q.history(topic).catch((e: unknown) => e);
    expect(unavailable).toBeInstanceOf(SwitchboardError);
    expect(unavailable).toMatchObject({ code: "not_available", message: "not_available: history is off on this server (HISTORY_SIZE=0)" });
  });

  test("history off: a reconnect is recovered:false with no position, and the client keeps working", async () => {
    const server = serve({ HISTORY_SIZE: 0 });
    const topic = "nohistory";
    const a = track(connect(server.ws(), fast));
    const sub = holder(a, topic);
    await until(() => sub.subscribed.length === 1, 3000, "subscribed");
    expect(sub.subscribed).toEqual([{ topic, epoch: undefined, offset: undefined }]);
    const p = track(connect(server.ws(), fast));
    await p.publish(topic, { n: 1 });
    await until(() => sub.handled.length === 1, 3000, "the first message");

    dropServerSide(server, a);
    await until(() => sub.recoveries.length === 1, 5000, "the recovery");
    expect(sub.recoveries).toEqual([{ topic, recovered: false, replayed: 0, epoch: undefined, offset: undefined, lastBefore: undefined }]);
    expect(sub.subscribed).toHaveLength(2);
    await p.publish(topic, { n: 2 });
    await until(() => sub.handled.length === 2, 3000, "a message after the reconnect");
    expect(sub.handled).toEqual([
      { n: 1, offset: undefined },
      { n: 2, offset: undefined },
    ]);
  });
});

/** A `bun examples/recovery-probe.ts` process and its stdout lines so far. */
function probe(args: string[]) {
  const proc = Bun.spawn(["bun", "examples/recovery-probe.ts", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  probes.push(proc);
  const output = collectOutput(proc);
  return {
    proc,
    lines: () => output.stdout().split("\n").filter(Boolean),
    stderr: output.stderr,
    done: async () => {
      await proc.exited;
      await output.ended;
    },
  };
}

describe("the recovery probe, end to end", () => {
  test(
    "server SIGKILLed and restarted twice while publishing (Redis): every acked offset reaches the consumer once, in order",
    async () => {
      redis = await startRedis();
      const port = freePort();
      // A recovery is sent in one step within half the backpressure limit: 4 MiB leaves room for any replay here.
      const env = { REDIS_URL: redis.url, PORT: String(port), HISTORY_SIZE: "10000", BACKPRESSURE_LIMIT_BYTES: String(8 * 1024 * 1024), LOG_LEVEL: "warn" };
      const readyz = async () => {
        try {
          return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
        } catch {
          return false;
        }
      };
      let server: Entry = await spawnEntry(env);
      await until(readyz, 5000, "the server's readiness");
      const url = `ws://127.0.0.1:${port}`;
      const topic = "probe";
      const count = 6000;

      const consumer = probe(["consume", url, topic, String(count)]);
      await until(() => consumer.lines().some((l) => l.startsWith("ready ")), 5000, "the consumer's ready line");
      const publisher = probe(["publish", url, topic, String(count)]);
      const acked = () => publisher.lines().filter((l) => l.startsWith("acked ")).length;

      const ackedAtKill: number[] = [];
      const recovered = () => consumer.lines().filter((l) => l.startsWith("recovery ")).length;
      for (const k of [0, 1]) {
        // Each kill comes a few hundred acks after the consumer is back from the previous one, while the
        // publisher still has thousands to go (whichever of the two reconnected first).
        const threshold = Math.max(count * 0.15, acked() + 300);
        await until(() => acked() >= threshold, 8000, `${threshold} acks`);
        server.kill("SIGKILL");
        await within(server.exited(), 3000, "the server to die");
        ackedAtKill.push(acked());
        server = await spawnEntry(env);
        await until(readyz, 5000, "the restarted server's readiness");
        // The consumer is back (it recovered on the new server) before the next kill: two kills, two recoveries.
        // Its first resubscribe may meet the new server before its Redis link is up (`unavailable`, retried
        // after ~1 s) while the publisher, retrying every 50 ms, could finish meanwhile: hold the publisher
        // (SIGSTOP) until the consumer has recovered, so the next kill still comes while publishing.
        publisher.proc.kill("SIGSTOP");
        try {
          await until(() => recovered() >= k + 1, 8000, "the consumer to recover on the restarted server").catch((error: Error) => {
            throw new Error(`${error.message}; consumer: ${consumer.lines().filter((l) => !l.startsWith("got")).join(" | ")} ${consumer.stderr()}`);
          });
        } finally {
          publisher.proc.kill("SIGCONT");
        }
      }
      // The kills happened while publishing, not after it.
      for (const at of ackedAtKill) expect(at).toBeLessThan(count);

      await within(Promise.all([publisher.done(), consumer.done()]), 10_000, "both probes to finish").catch((error: Error) => {
        const tail = (lines: string[]) => lines.slice(-5).join(" | ");
        throw new Error(`${error.message}; publisher: ${tail(publisher.lines())} ${publisher.stderr()}; consumer: ${tail(consumer.lines())} ${consumer.stderr()}`);
      });
      expect(publisher.proc.exitCode).toBe(0);
      expect(consumer.proc.exitCode).toBe(0);

      const ackedPairs = publisher.lines().map((l) => l.split(" ")).filter((w) => w[0] === "acked").map((w) => [Number(w[1]), Number(w[2])] as const);
      expect(ackedPairs.map(([n]) => n)).toEqual(range(1, count));
      const got = consumer.lines().map((l) => l.split(" ")).filter((w) => w[0] === "got").map((w) => [Number(w[1]), Number(w[2])] as const);
      const offsets = got.map(([, offset]) => offset);
      for (let i = 1; i < offsets.length; i++) if (!(offsets[i]! > offsets[i - 1]!)) throw new Error(`consumer offsets not increasing at ${i}: ${offsets[i - 1]} then ${offsets[i]}`);
      const byOffset = new Map<number, number[]>();
      for (const [n, offset] of got) byOffset.set(offset, [...(byOffset.get(offset) ?? []), n]);
      const wrong = ackedPairs.filter(([n, offset]) => byOffset.get(offset)?.length !== 1 || byOffset.get(offset)![0] !== n);
      expect(wrong).toEqual([]);
      const summary = consumer.lines().find((l) => l.startsWith("summary "));
      expect(summary).toMatch(/ missing=0 out_of_order=0 failed_recoveries=0$/);
      // One recovery per restart at least (a stream break on the new node may add one), none failed.
      const recoveries = consumer.lines().filter((l) => l.startsWith("recovery "));
      expect(recoveries.length).toBeGreaterThanOrEqual(2);
      for (const line of recoveries) expect(line).toMatch(/^recovery replayed \d+ at [0-9a-z]{8}:\d+$/);
      server.kill("SIGTERM");
      await within(server.exited(), 5000, "the server to stop");
    },
    25_000, // every wait inside is bounded too; this bounds their sum
  );
});

describe("the client's own gap check", () => {
  test("a message past a gap is not handled: the client resubscribes from its last one and gets the missing ones in order", async () => {
    // A scripted peer (a real socket, speaking the protocol) that skips offset 3, the one thing a correct
    // server never does: the client must not hand 4 to the handler before 3.
    const received: unknown[] = [];
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req, srv) => (srv.upgrade(req) ? undefined : new Response("upgrade", { status: 426 })),
      websocket: {
        open: (ws) => void ws.send(JSON.stringify({ type: "welcome", connectionId: "x", heartbeat: { intervalMs: 60_000, timeoutMs: 120_000 } })),
        message: (ws, raw) => {
          const frame = JSON.parse(String(raw)) as { type: string; topic: string; id: number; since?: Position };
          received.push(frame);
          const message = (offset: number) => JSON.stringify({ type: "message", topic: "t", data: offset, offset });
          if (frame.type === "subscribe" && frame.since === undefined) {
            ws.send(JSON.stringify({ type: "subscribed", topic: "t", epoch: "e", offset: 0, id: frame.id }));
            for (const offset of [1, 2, 4, 5]) ws.send(message(offset));
          } else if (frame.type === "unsubscribe") {
            ws.send(JSON.stringify({ type: "unsubscribed", topic: "t", id: frame.id }));
          } else if (frame.type === "subscribe") {
            ws.send(JSON.stringify({ type: "subscribed", topic: "t", epoch: "e", offset: 5, recovered: true, id: frame.id }));
            for (const offset of [3, 4, 5, 6]) ws.send(message(offset));
          }
        },
      },
    });
    try {
      const client = track(connect(`ws://127.0.0.1:${server.port}`, fast));
      const seen: number[] = [];
      const recoveries: ClientEvents["recovery"][] = [];
      client.on("recovery", (e) => recoveries.push(e));
      client.subscribe("t", (_data, frame) => seen.push(frame.offset!));
      await until(() => seen.length === 6, 5000, "offsets 1..6");
      expect(seen).toEqual([1, 2, 3, 4, 5, 6]);
      expect(recoveries).toEqual([{ topic: "t", recovered: true, replayed: 3, epoch: "e", offset: 5 }]);
      expect(received.slice(1)).toEqual([
        { type: "unsubscribe", topic: "t", id: expect.any(Number) },
        { type: "subscribe", topic: "t", since: { epoch: "e", offset: 2 }, id: expect.any(Number) },
      ]);
      client.close();
    } finally {
      server.stop(true);
    }
  });
});
