// Presence costs (issue 11), each side by side in one run:
//   1. refresh at 10,000 connections x 5 topics (1,000 topics) on one node + Redis: Redis commands/s and CPU,
//      server CPU, with PRESENCE_TTL_MS=3000 (a refresh round a second; the default 30 s does a tenth of it);
//   2. presence request round trip at 1,000 members, memory vs Redis;
//   3. fan-out x1,000 (presence:true subscribers) with and without a churner subscribing/unsubscribing 50 times a
//      second (each a join and a leave to 1,000 watchers): publishes acked per second (x1,000 = deliveries).
// Run: bun bench/presence.ts [--quick]. Machine figures are relative: 2 shared cores, nothing pinned.
import { clientFrame, connectAll, cpuMicros, LoadConn, median, redisCommands, spawnServer, startRedis, waitReady, type ServerProcess } from "./lib.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 1 : 2;
const BASE_ENV = { HOST: "127.0.0.1", LOG_LEVEL: "warn" };
const fmt = (x: number, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });

async function node(env: Record<string, string>): Promise<ServerProcess> {
  const server = await spawnServer(["bun", "src/index.ts"], { ...BASE_ENV, PORT: "0", ...env }, null);
  await waitReady(server.port);
  return server;
}

const subscribe = (topic: string, presence = false) => clientFrame(JSON.stringify({ type: "subscribe", topic, ...(presence ? { presence: true } : {}) }));

// 1. Refresh cost.
async function refreshCost(): Promise<Record<string, number>> {
  const redis = await startRedis();
  const server = await node({ REDIS_URL: redis.url, PRESENCE_TTL_MS: "3000" });
  try {
    const CONNS = quick ? 2000 : 10_000;
    const conns = await connectAll(server.port, CONNS);
    for (const [i, c] of conns.entries()) for (let k = 0; k < 5; k++) c.write(subscribe(`t${(i * 5 + k) % 1000}`));
    while (conns.some((c) => c.frames < 6)) await Bun.sleep(20); // welcome + 5 subscribed
    await Bun.sleep(1500); // the adds and their join events settle
    const seconds = quick ? 3 : 10;
    const [s0, r0, k0] = [await cpuMicros(server.pid), await cpuMicros(redis.pid), await redisCommands(redis.url)];
    const t0 = performance.now();
    await Bun.sleep(seconds * 1000);
    const elapsedUs = (performance.now() - t0) * 1000;
    const [s1, r1, k1] = [await cpuMicros(server.pid), await cpuMicros(redis.pid), await redisCommands(redis.url)];
    const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    const entries = Number(/^switchboard_presence_entries (\d+)$/m.exec(metrics)?.[1] ?? NaN);
    for (const c of conns) c.close();
    return {
      connections: CONNS,
      entries,
      redisCommandsPerSec: ((k1 - k0 - 2) * 1e6) / elapsedUs, // less the two INFO calls
      serverCpu: (s1 - s0) / elapsedUs,
      redisCpu: (r1 - r0) / elapsedUs,
    };
  } finally {
    await server.kill();
    await redis.stop();
  }
}

// 2. Presence request round trip at 1,000 members.
async function presenceLatency(withRedis: boolean): Promise<{ p50: number; p99: number; statsP50: number }> {
  const redis = withRedis ? await startRedis() : undefined;
  const server = await node(redis ? { REDIS_URL: redis.url } : {});
  try {
    const members = await connectAll(server.port, 1000);
    for (const c of members) c.write(subscribe("big"));
    while (members.some((c) => c.frames < 2)) await Bun.sleep(20);
    await Bun.sleep(500);
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/connect`);
    const replies: ((v: string) => void)[] = [];
    ws.onmessage = (e) => replies.shift()?.(e.data as string);
    await new Promise((r) => (ws.onopen = r));
    await new Promise<string>((r) => replies.push(r)); // welcome
    const ask = async (type: string) => {
      const t = performance.now();
      const reply = new Promise<string>((r) => replies.push(r));
      ws.send(JSON.stringify({ type, topic: "big", id: 1 }));
      const text = await reply;
      if (type === "presence" && (JSON.parse(text) as { clients: unknown[] }).clients.length !== 1000) throw new Error(`presence returned ${text.slice(0, 80)}`);
      return (performance.now() - t) * 1000;
    };
    for (let i = 0; i < 20; i++) await ask("presence"); // warm-up
    const times: number[] = [];
    for (let i = 0; i < (quick ? 50 : 300); i++) times.push(await ask("presence"));
    const stats: number[] = [];
    for (let i = 0; i < (quick ? 50 : 300); i++) stats.push(await ask("presence_stats"));
    ws.close();
    for (const c of members) c.close();
    const sorted = times.toSorted((a, b) => a - b);
    return { p50: median(times), p99: sorted[Math.floor(sorted.length * 0.99)]!, statsP50: median(stats) };
  } finally {
    await server.kill();
    await redis?.stop();
  }
}

// 3. Join/leave beside fan-out.
async function fanoutWithChurn(churnPerSec: number): Promise<{ publishesPerSec: number; serverCpu: number }> {
  const server = await node({});
  try {
    const subs = await connectAll(server.port, 1000);
    for (const c of subs) c.write(subscribe("f", true));
    while (subs.some((c) => c.frames < 2)) await Bun.sleep(20);
    await Bun.sleep(1000); // joins of the setup delivered
    let acked = 0;
    let pumping = true;
    const publish = clientFrame(JSON.stringify({ type: "publish", topic: "f", data: { price: 101.25 }, id: 1 }));
    const pub = new LoadConn(server.port, "/connect", (c, n) => {
      acked += n;
      if (pumping) for (let i = 0; i < n; i++) c.write(publish);
    });
    await pub.open();
    while (pub.frames < 1) await Bun.sleep(5);
    acked = 0;
    for (let i = 0; i < 16; i++) pub.write(publish);
    const churner = new LoadConn(server.port, "/connect");
    await churner.open();
    const churn = churnPerSec > 0 ? setInterval(() => {
      churner.write(subscribe("f"));
      churner.write(clientFrame(JSON.stringify({ type: "unsubscribe", topic: "f" })));
    }, 1000 / churnPerSec) : undefined;
    await Bun.sleep(1000);
    const a0 = acked;
    const c0 = await cpuMicros(server.pid);
    const t0 = performance.now();
    await Bun.sleep((quick ? 2 : 4) * 1000);
    const elapsedUs = (performance.now() - t0) * 1000;
    const result = { publishesPerSec: ((acked - a0) * 1e6) / elapsedUs, serverCpu: ((await cpuMicros(server.pid)) - c0) / elapsedUs };
    pumping = false;
    clearInterval(churn);
    for (const c of [...subs, pub, churner]) c.close();
    return result;
  } finally {
    await server.kill();
  }
}

const cores = Number((await Bun.$`nproc --all`.text()).trim());
console.log(`# switchboard presence bench (${cores} cores, bun ${Bun.version}, ${new Date().toISOString().slice(0, 10)}; ${ROUNDS} round(s), medians)`);
const refresh: Record<string, number>[] = [];
for (let r = 0; r < ROUNDS; r++) refresh.push(await refreshCost());
const m = (k: string) => median(refresh.map((x) => x[k]!));
console.log(`1. refresh, ${fmt(m("connections"))} connections x 5 topics of 1,000 (${fmt(m("entries"))} entries), PRESENCE_TTL_MS=3000 (a round a second):`);
console.log(`   Redis ${fmt(m("redisCommandsPerSec"))} commands/s (a tenth of it at the default 30 s), Redis CPU ${fmt(m("redisCpu") * 100, 1)}%, server CPU ${fmt(m("serverCpu") * 100, 1)}%`);
for (const withRedis of [false, true]) {
  const runs = [];
  for (let r = 0; r < ROUNDS; r++) runs.push(await presenceLatency(withRedis));
  console.log(`2. presence of 1,000 members, ${withRedis ? "Redis " : "memory"}: round trip p50 ${fmt(median(runs.map((x) => x.p50)))} us, p99 ${fmt(median(runs.map((x) => x.p99)))} us; presence_stats p50 ${fmt(median(runs.map((x) => x.statsP50)))} us`);
}
const plain: { publishesPerSec: number; serverCpu: number }[] = [];
const churned: { publishesPerSec: number; serverCpu: number }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  plain.push(await fanoutWithChurn(0));
  churned.push(await fanoutWithChurn(50));
}
const p = median(plain.map((x) => x.publishesPerSec));
const c = median(churned.map((x) => x.publishesPerSec));
console.log(`3. fan-out x1,000 presence:true subscribers (memory): ${fmt(p)} publishes/s alone, ${fmt(c)} with 50 joins+leaves/s (ratio ${fmt(c / p, 2)}); server CPU ${fmt(median(plain.map((x) => x.serverCpu)) * 100)}% / ${fmt(median(churned.map((x) => x.serverCpu)) * 100)}%`);
process.exit(0);
