// Batched delivery (issue 14): fan-out x1,000 with a publisher sending bursts of B publishes in one TCP write (so
// the server reads them in one event-loop tick), raw Bun's per-frame floor vs switchboard per frame vs switchboard
// with `?batch=1` subscribers, interleaved rounds. Reports messages delivered per second (acked publishes x
// subscribers; 10 sampling subscribers' message counts are checked at the end, and none may be dropped: 0 lost) and the server's CPU per message.
// Also the memory an idle connection costs with and without `?batch=1` (the flag lives in the Conn's extras).
// Then publish -> receive latency of the three at the same offered load (below).
// Run: bun bench/batch.ts [--quick] [--rounds=N] [--burst=10] [--period=20] [--only=throughput|latency|both] [--json].
import { clientFrame, connectAll, cpuSplit, LoadConn, median, rssBytes, spawnServer, type ServerProcess } from "./lib.ts";

const quick = process.argv.includes("--quick");
const BURST = Number(process.argv.find((a) => a.startsWith("--burst="))?.slice(8) ?? 10);
const ROUNDS = Number(process.argv.find((a) => a.startsWith("--rounds="))?.slice(9) ?? (quick ? 1 : 3));
const SECONDS = quick ? 2 : 4;
const SUBSCRIBERS = 1000;
const fmt = (x: number, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
type Kind = "raw" | "per-frame" | "batch";

async function server(kind: Kind): Promise<ServerProcess> {
  const cmd = kind === "raw" ? ["bun", "bench/baselines/raw-publish.ts"] : ["bun", "bench/servers/switchboard.ts"];
  // History off: the raw floor has none, and a batch then carries the same frames as the per-frame runs.
  return spawnServer(cmd, { HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "warn", HISTORY_SIZE: "0" }, navigator.hardwareConcurrency > 1 ? 0 : null);
}

interface Run {
  messagesPerSec: number;
  cpuUsPerMessage: number;
  /** Share of the server's CPU spent in the kernel (writes to the subscribers' sockets, loopback TCP). */
  kernelShare: number;
  lost: number;
}

async function run(kind: Kind): Promise<Run> {
  const s = await server(kind);
  try {
    const path = kind === "batch" ? "/connect?batch=1" : "/connect";
    const subs = await connectAll(s.port, SUBSCRIBERS, path);
    // Messages a sampling subscriber received: one per frame, or one per line of a batch frame. The others only
    // count frames (decoding every payload would make the generator the bottleneck); a dropped one is a loss.
    const counts = new Map<LoadConn, number>();
    const decoder = new TextDecoder();
    for (const [i, c] of subs.entries()) {
      c.write(clientFrame(JSON.stringify({ type: "subscribe", topic: "bench" })));
      if (i >= 10) continue;
      counts.set(c, 0);
      c.capture = (payload) => {
        const text = decoder.decode(payload);
        if (!text.includes('"type":"message"')) return;
        let lines = 1;
        for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) lines++;
        counts.set(c, counts.get(c)! + lines);
      };
    }
    const before = kind === "raw" ? 1 : 2; // (welcome +) subscribed
    while (subs.some((c) => c.frames < before)) await Bun.sleep(10);
    const burst = Buffer.concat(Array.from({ length: BURST }, () => clientFrame(`{"type":"publish","topic":"bench","data":{"price":101.25},"id":1}`)));
    let acked = 0;
    let publishing = true;
    let outstanding = 0;
    // Two bursts in flight: a new one once a burst's acks are in.
    const pub = new LoadConn(s.port, "/connect", (c, n) => {
      acked += n;
      outstanding -= n;
      while (publishing && outstanding <= BURST) {
        c.write(burst);
        outstanding += BURST;
      }
    });
    await pub.open();
    if (kind !== "raw") while (pub.frames < 1) await Bun.sleep(5);
    acked = 0;
    pub.write(burst);
    pub.write(burst);
    outstanding = 2 * BURST;
    await Bun.sleep(1500); // warm-up
    const [a0, c0, t0] = [acked, await cpuSplit(s.pid), performance.now()];
    await Bun.sleep(SECONDS * 1000);
    const [a1, c1, t1] = [acked, await cpuSplit(s.pid), performance.now()];
    const [user, system] = [c1.user - c0.user, c1.system - c0.system];
    publishing = false;
    const until = performance.now() + 10_000;
    while ((outstanding > 0 || [...counts.values()].some((n) => n < acked)) && performance.now() < until) await Bun.sleep(20);
    const lost = [...counts.values()].reduce((sum, n) => sum + Math.max(0, acked - n), 0) + subs.filter((c) => c.closed).length;
    for (const c of [...subs, pub]) c.close();
    const messages = (a1 - a0) * SUBSCRIBERS;
    return { messagesPerSec: (messages * 1000) / (t1 - t0), cpuUsPerMessage: (user + system) / messages, kernelShare: system / (user + system), lost };
  } finally {
    await s.kill();
  }
}

const kinds: Kind[] = ["raw", "per-frame", "batch"];
const only = process.argv.find((a) => a.startsWith("--only="))?.slice(7);
const results: Record<Kind, Run[]> = { raw: [], "per-frame": [], batch: [] };
for (let round = 0; round < (only === "latency" ? 0 : ROUNDS); round++) {
  for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) {
    results[kind].push(await run(kind));
    console.error(`round ${round + 1}/${ROUNDS} ${kind}: ${fmt(results[kind].at(-1)!.messagesPerSec)} messages/s`);
  }
}
const raw = median(results.raw.map((r) => r.messagesPerSec));
console.log(`\n${new Date().toISOString().slice(0, 10)}, ${navigator.hardwareConcurrency} cores, bun ${Bun.version}, fan-out x${fmt(SUBSCRIBERS)}, bursts of ${BURST} publishes per tick, ${ROUNDS} rounds x ${SECONDS} s\n`);
console.log("| server | messages delivered/s | vs raw per-frame floor | server CPU us/message | of it in the kernel | lost |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const kind of only === "latency" ? [] : kinds) {
  const rate = median(results[kind].map((r) => r.messagesPerSec));
  console.log(`| ${kind === "raw" ? "raw Bun, a frame per message" : kind === "batch" ? "switchboard, ?batch=1" : "switchboard, a frame per message"} | ${fmt(rate)} | ${fmt(rate / raw, 2)}x | ${fmt(median(results[kind].map((r) => r.cpuUsPerMessage)), 3)} | ${fmt(median(results[kind].map((r) => r.kernelShare)) * 100)}% | ${results[kind].reduce((n, r) => n + r.lost, 0)} |`);
}

// Publish -> receive latency at the same offered load: bursts of BURST publishes every LATENCY_PERIOD_MS (an open
// loop: the publisher does not wait for acks; every 20 ms: 500,000 deliveries/s, a fifth of what raw Bun sustains per
// frame here, so the load generator's own queueing stays out of the figures; --period=8 is about half). 10 sampling
// subscribers parse every message (data.t is the publisher's performance.now()); all must arrive (0 lost).
const LATENCY_PERIOD_MS = Number(process.argv.find((a) => a.startsWith("--period="))?.slice(9) ?? 20);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function latency(kind: Kind): Promise<{ p50: number; p99: number; max: number; lost: number }> {
  const s = await server(kind);
  try {
    const subs = await connectAll(s.port, SUBSCRIBERS, kind === "batch" ? "/connect?batch=1" : "/connect");
    const samples: number[] = [];
    const received = new Map<LoadConn, number>();
    const decoder = new TextDecoder();
    for (const [i, c] of subs.entries()) {
      c.write(clientFrame(JSON.stringify({ type: "subscribe", topic: "bench" })));
      if (i % (SUBSCRIBERS / 10) !== 0) continue;
      received.set(c, 0);
      c.capture = (payload) => {
        const now = performance.now();
        for (const line of decoder.decode(payload).split("\n")) {
          if (!line.includes('"type":"message"')) continue;
          received.set(c, received.get(c)! + 1);
          samples.push((now - JSON.parse(line).data.t) * 1000);
        }
      };
    }
    const before = kind === "raw" ? 1 : 2;
    while (subs.some((c) => c.frames < before)) await Bun.sleep(10);
    const pub = new LoadConn(s.port, "/connect");
    await pub.open();
    const bursts = Math.floor((SECONDS * 1000) / LATENCY_PERIOD_MS);
    const start = performance.now();
    for (let b = 0; b < bursts; b++) {
      const wait = start + b * LATENCY_PERIOD_MS - performance.now();
      if (wait > 1) await Bun.sleep(wait);
      const t = performance.now();
      pub.write(Buffer.concat(Array.from({ length: BURST }, () => clientFrame(`{"type":"publish","topic":"bench","data":{"t":${t}}}`))));
    }
    const sent = bursts * BURST;
    const until = performance.now() + 5000;
    while ([...received.values()].some((n) => n < sent) && performance.now() < until) await Bun.sleep(20);
    const lost = [...received.values()].reduce((sum, n) => sum + Math.max(0, sent - n), 0) + subs.filter((c) => c.closed).length;
    for (const c of [...subs, pub]) c.close();
    return { p50: pct(samples, 50), p99: pct(samples, 99), max: Math.max(...samples), lost };
  } finally {
    await s.kill();
  }
}
const latencies: Record<Kind, { p50: number; p99: number; max: number; lost: number }[]> = { raw: [], "per-frame": [], batch: [] };
for (let round = 0; round < (only === "throughput" ? 0 : ROUNDS); round++) {
  for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) latencies[kind].push(await latency(kind));
}
const offered = (BURST * 1000 * SUBSCRIBERS) / LATENCY_PERIOD_MS;
console.log(`\n| publish -> receive, bursts of ${BURST} every ${LATENCY_PERIOD_MS} ms (${fmt(offered)} deliveries/s offered) | p50 us | p99 us | max us | lost |`);
console.log("| --- | --- | --- | --- | --- |");
for (const kind of only === "throughput" ? [] : kinds) {
  const rs = latencies[kind];
  console.log(`| ${kind === "raw" ? "raw Bun, a frame per message" : kind === "batch" ? "switchboard, ?batch=1" : "switchboard, a frame per message"} | ${fmt(median(rs.map((r) => r.p50)))} | ${fmt(median(rs.map((r) => r.p99)))} | ${fmt(median(rs.map((r) => r.max)))} | ${rs.reduce((n, r) => n + r.lost, 0)} |`);
}

// Idle memory per connection, with and without ?batch=1 (5,000 connections each, one server each).
async function idle(batch: boolean): Promise<{ rss: number; heap: number }> {
  const s = await server("per-frame");
  try {
    await Bun.sleep(500);
    const [heap0, rss0] = [await s.heap(), await rssBytes(s.pid)];
    const conns = await connectAll(s.port, 5000, batch ? "/connect?batch=1" : "/connect");
    while (conns.some((c) => c.frames < 1)) await Bun.sleep(10);
    await Bun.sleep(1000);
    const [heap1, rss1] = [await s.heap(), await rssBytes(s.pid)];
    for (const c of conns) c.close();
    return { rss: (rss1 - rss0) / conns.length, heap: (heap1.heapSize - heap0.heapSize) / conns.length };
  } finally {
    await s.kill();
  }
}
// For `bun run bench` (its batch scenario): the medians as one line of JSON.
if (process.argv.includes("--json")) {
  const summary = (kind: Kind) => ({
    messagesPerSec: median(results[kind].map((r) => r.messagesPerSec)),
    ratios: results[kind].map((r, i) => r.messagesPerSec / results.raw[i]!.messagesPerSec),
    lost: results[kind].reduce((n, r) => n + r.lost, 0) + latencies[kind].reduce((n, r) => n + r.lost, 0),
    p50: median(latencies[kind].map((r) => r.p50)),
    p99: median(latencies[kind].map((r) => r.p99)),
  });
  console.log(`=${JSON.stringify({ burst: BURST, offered, raw: summary("raw"), perFrame: summary("per-frame"), batch: summary("batch") })}`);
}

if (only === undefined) {
  const plainIdle = await idle(false);
  const batchIdle = await idle(true);
  console.log("\n| idle /connect connection (5,000) | server RSS bytes | JS heap bytes |");
  console.log("| --- | --- | --- |");
  console.log(`| without batch | ${fmt(plainIdle.rss)} | ${fmt(plainIdle.heap)} |`);
  console.log(`| ?batch=1 | ${fmt(batchIdle.rss)} | ${fmt(batchIdle.heap)} |`);
}
