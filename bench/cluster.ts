// Scale-out benchmarks, side by side in one run:
//   fan-out: single node (memory broker)  vs  two nodes sharing a real redis-server (publisher on node A,
//            subscribers split over A and B): deliveries/s with a window of publishes in flight, and
//            publish-to-receive latency at a fixed publish rate, per node.
//   workers: /echo throughput with WORKERS=1 vs WORKERS=2 (REDIS_URL set for both).
// Also, per mode, deliveries per CPU-second of the server processes (nodes + Redis): on a shared 2-core box the
// rate alone follows whatever else the machine does; the ratio per CPU-second is the steadier comparison.
// Run: bun bench/cluster.ts [--quick] [--rounds=N] [--window=N] [--only=fanout]. On 2 cores nothing can be pinned apart here (two nodes + Redis +
// load), so every process is reported with its own CPU use; read the figures as relative, not absolute.
import { clientFrame, cpuMicros, LoadConn, median, spawnServer, startRedis, type ServerProcess } from "./lib.ts";

const quick = process.argv.includes("--quick");
const flag = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const ROUNDS = Number(flag("rounds") ?? (quick ? 1 : 3));
/** Publishes in flight on node A in the throughput phase: a new one per ack. */
const WINDOW = Number(flag("window") ?? 16);
const ONLY_FANOUT = flag("only") === "fanout";
const SECONDS = quick ? 2 : 3;
const SUBSCRIBERS = 500;
const LATENCY_RATE = 500; // publishes per second in the latency phase
const BASE_ENV = { HOST: "127.0.0.1", LOG_LEVEL: "warn" };

const node = (env: Record<string, string>) => spawnServer(["bun", "src/index.ts"], { ...BASE_ENV, PORT: "0", ...env }, null);

/** A subscriber that parses messages to measure latency: data.t is the publisher's performance.now(). */
async function sampler(port: number, topic: string, samples: number[]): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/connect`, { perMessageDeflate: false } as never);
  await new Promise((resolve, reject) => ((ws.onopen = resolve), (ws.onerror = reject)));
  let subscribed!: () => void;
  const ready = new Promise<void>((r) => (subscribed = r));
  ws.onmessage = (e) => {
    const frame = JSON.parse(e.data as string);
    if (frame.type === "subscribed") subscribed();
    else if (frame.type === "message" && frame.data.t !== undefined) samples.push((performance.now() - frame.data.t) * 1000);
  };
  ws.send(JSON.stringify({ type: "subscribe", topic }));
  await ready;
  return ws;
}

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

interface FanoutResult {
  deliveriesPerSec: number;
  latencyUs: Record<string, { p50: number; p99: number; max: number; n: number }>;
  cpu: Record<string, number>;
  dropped: number;
}

async function fanout(mode: "single" | "two-nodes", redisUrl: string, redisPid: number): Promise<FanoutResult> {
  const nodes: ServerProcess[] = [];
  if (mode === "single") nodes.push(await node({}));
  else for (let i = 0; i < 2; i++) nodes.push(await node({ REDIS_URL: redisUrl }));
  const [a, b = a] = nodes as [ServerProcess, ServerProcess?];
  const subscribe = clientFrame(JSON.stringify({ type: "subscribe", topic: "bench" }));
  const subs: LoadConn[] = [];
  for (let i = 0; i < SUBSCRIBERS; i++) subs.push(new LoadConn(i % 2 === 0 ? a.port : b!.port, "/connect"));
  for (let i = 0; i < subs.length; i += 100) await Promise.all(subs.slice(i, i + 100).map((s) => s.open()));
  for (const s of subs) s.write(subscribe);
  while (subs.some((s) => s.frames < 2)) await Bun.sleep(10); // welcome + subscribed (after Redis confirmed)

  // Throughput: WINDOW publishes in flight on node A, one more per ack.
  const publish = clientFrame(JSON.stringify({ type: "publish", topic: "bench", data: { price: 101.25, qty: 3 }, id: 1 }));
  let pumping = false;
  const pub = new LoadConn(a.port, "/connect", (c, n) => {
    if (pumping) for (let i = 0; i < n; i++) c.write(publish);
  });
  await pub.open();
  while (pub.frames < 1) await Bun.sleep(5);
  pumping = true;
  for (let i = 0; i < WINDOW; i++) pub.write(publish);
  await Bun.sleep(1000);
  const pids: Record<string, number> = Object.fromEntries(nodes.map((n, i) => [`node${"AB"[i]}`, n.pid]));
  if (mode === "two-nodes") pids.redis = redisPid;
  const cpu0 = Object.fromEntries(await Promise.all(Object.entries(pids).map(async ([k, pid]) => [k, await cpuMicros(pid)] as const)));
  const self0 = process.cpuUsage();
  const d0 = subs.reduce((s, c) => s + c.frames, 0);
  const t0 = performance.now();
  await Bun.sleep(SECONDS * 1000);
  const d1 = subs.reduce((s, c) => s + c.frames, 0);
  const elapsedUs = (performance.now() - t0) * 1000;
  const cpu: Record<string, number> = {};
  for (const [k, pid] of Object.entries(pids)) cpu[k] = ((await cpuMicros(pid)) - cpu0[k]!) / elapsedUs;
  const self = process.cpuUsage(self0);
  cpu.loadGenerator = (self.user + self.system) / elapsedUs;
  pumping = false;
  await Bun.sleep(300); // let the window drain
  const dropped = subs.filter((s) => s.closed).length;
  // Latency is measured unloaded (the 500 counting subscribers leave first): on 2 cores a loaded generator
  // would measure its own queueing, not the broker hop.
  for (const s of subs) s.close();
  while (subs.some((s) => !s.closed)) await Bun.sleep(10);

  // Latency at a fixed rate, sampled by one parsing subscriber per node.
  const samples: Record<string, number[]> = { nodeA: [], ...(mode === "two-nodes" ? { nodeB: [] } : {}) };
  const samplers = [await sampler(a.port, "bench", samples.nodeA!)];
  if (mode === "two-nodes") samplers.push(await sampler(b!.port, "bench", samples.nodeB!));
  const total = LATENCY_RATE * SECONDS;
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / LATENCY_RATE;
    const wait = due - performance.now();
    if (wait > 1) await Bun.sleep(wait);
    pub.write(clientFrame(JSON.stringify({ type: "publish", topic: "bench", data: { t: performance.now() } })));
  }
  await Bun.sleep(500);
  const latencyUs: FanoutResult["latencyUs"] = {};
  for (const [k, xs] of Object.entries(samples)) latencyUs[k] = { p50: pct(xs, 50), p99: pct(xs, 99), max: Math.max(...xs), n: xs.length };

  pub.close();
  for (const s of samplers) s.close();
  for (const n of nodes) await n.kill();
  return { deliveriesPerSec: ((d1 - d0) * 1e6) / elapsedUs, latencyUs, cpu, dropped };
}

async function echo(workers: number, redisUrl: string): Promise<{ rate: number; loadCpu: number }> {
  const server = await node({ WORKERS: String(workers), REDIS_URL: redisUrl });
  const CONNS = 100;
  const IN_FLIGHT = 8;
  const frame = clientFrame("x".repeat(64));
  const batch = Buffer.concat(Array.from({ length: IN_FLIGHT }, () => frame));
  const conns = Array.from({ length: CONNS }, () => new LoadConn(server.port, "/echo", (c, n) => c.write(batch.subarray(0, n * frame.length))));
  await Promise.all(conns.map((c) => c.open()));
  for (const c of conns) c.write(batch);
  await Bun.sleep(1000);
  const c0 = conns.reduce((s, c) => s + c.frames, 0);
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  await Bun.sleep(SECONDS * 1000);
  const c1 = conns.reduce((s, c) => s + c.frames, 0);
  const elapsedUs = (performance.now() - t0) * 1000;
  const self = process.cpuUsage(self0);
  for (const c of conns) c.close();
  await server.kill("SIGTERM"); // the supervisor drains and reaps its workers
  return { rate: ((c1 - c0) * 1e6) / elapsedUs, loadCpu: (self.user + self.system) / elapsedUs };
}

/** Deliveries per CPU-second of the nodes and Redis (the load generator left out). */
const serverCpuRate = (r: FanoutResult) => r.deliveriesPerSec / Object.entries(r.cpu).reduce((sum, [k, v]) => (k === "loadGenerator" ? sum : sum + v), 0);

const fmt = (x: number, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
const cores = Number((await Bun.$`nproc --all`.text()).trim());
console.log(`# switchboard cluster bench (${cores} cores, bun ${Bun.version}, ${new Date().toISOString().slice(0, 10)}; ${ROUNDS} interleaved rounds, medians; HISTORY_SIZE=${process.env.HISTORY_SIZE ?? "default"})`);

const redis = await startRedis();
try {
  const runs: Record<"single" | "two-nodes", FanoutResult[]> = { single: [], "two-nodes": [] };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of ["single", "two-nodes"] as const) {
      const r = await fanout(mode, redis.url, redis.pid);
      runs[mode].push(r);
      console.error(`  fan-out round ${round} ${mode}: ${JSON.stringify(r, (_, v) => (typeof v === "number" ? +v.toFixed(2) : v))}`);
    }
  }
  console.log(`fan-out: 1 publisher on node A -> ${SUBSCRIBERS} subscribers (two-nodes: half on A, half on B via Redis)`);
  for (const mode of ["single", "two-nodes"] as const) {
    const rs = runs[mode];
    const lat = Object.keys(rs[0]!.latencyUs)
      .map((k) => `${k} p50 ${fmt(median(rs.map((r) => r.latencyUs[k]!.p50)))} us, p99 ${fmt(median(rs.map((r) => r.latencyUs[k]!.p99)))} us, max ${fmt(median(rs.map((r) => r.latencyUs[k]!.max)))} us`)
      .join("; ");
    const cpu = Object.keys(rs[0]!.cpu)
      .map((k) => `${k} ${fmt(median(rs.map((r) => r.cpu[k]!)) * 100)}%`)
      .join(", ");
    const perCpu = rs.map(serverCpuRate);
    console.log(`  ${mode.padEnd(9)} ${fmt(median(rs.map((r) => r.deliveriesPerSec))).padStart(9)} deliveries/s [${fmt(Math.min(...rs.map((r) => r.deliveriesPerSec)))}-${fmt(Math.max(...rs.map((r) => r.deliveriesPerSec)))}], ${fmt(median(perCpu))} per server CPU-second | unloaded latency at ${LATENCY_RATE} publishes/s: ${lat} | CPU: ${cpu} | subscribers dropped ${rs.reduce((n, r) => n + r.dropped, 0)}`);
  }

  const ratio = (f: (r: FanoutResult) => number) => median(runs["two-nodes"].map(f)) / median(runs.single.map(f));
  console.log(`  two-nodes / single (window ${WINDOW}): deliveries/s ${fmt(ratio((r) => r.deliveriesPerSec), 2)}x, per server CPU-second ${fmt(ratio(serverCpuRate), 2)}x`);
  if (!ONLY_FANOUT) {
    const echoRuns: Record<string, { rate: number; loadCpu: number }[]> = { "1": [], "2": [] };
    for (let round = 1; round <= ROUNDS; round++) {
      for (const w of [1, 2]) {
        const r = await echo(w, redis.url);
        echoRuns[String(w)]!.push(r);
        console.error(`  echo round ${round} WORKERS=${w}: ${JSON.stringify(r)}`);
      }
    }
    const e1 = median(echoRuns["1"]!.map((r) => r.rate));
    const e2 = median(echoRuns["2"]!.map((r) => r.rate));
    console.log(`echo 100 conns x 8 in flight, 64 B: WORKERS=1 ${fmt(e1)} msg/s, WORKERS=2 ${fmt(e2)} msg/s (ratio ${fmt(e2 / e1, 2)}); load generator ${fmt(median(echoRuns["2"]!.map((r) => r.loadCpu)) * 100)}% of a core with 2 workers`);
  }
} finally {
  await redis.stop();
}
process.exit(0);
