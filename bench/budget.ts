// Quick check of the core server's performance budget, side by side with raw Bun.serve floors in one run:
//   echo:    server CPU per message and msgs/s on /echo vs bench/baselines/raw-echo.ts
//   fan-out: deliveries/s and server CPU per delivery on /connect vs bench/baselines/raw-publish.ts
//   idle:    server RSS per idle /connect connection vs a raw Bun.serve connection
// Servers run as their own processes pinned to CPU 0; this load generator should run on CPU 1:
//   taskset -c 1 bun bench/budget.ts [--quick]
// Runs are interleaved (switchboard, raw, switchboard, raw, ...) and medians reported.
import { clientFrame, cpuMicros, LoadConn, median, rssBytes, spawnServer, type ServerProcess } from "./lib.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 2 : 3;
const SECONDS = quick ? 2 : 4;
const WARMUP_MS = 1000;
const cores = Number((await Bun.$`nproc --all`.text()).trim());
const pinned = cores > 1;

type Kind = "switchboard" | "raw";
const servers: Record<string, Record<Kind, string[]>> = {
  echo: { switchboard: ["bun", "src/index.ts"], raw: ["bun", "bench/baselines/raw-echo.ts"] },
  publish: { switchboard: ["bun", "src/index.ts"], raw: ["bun", "bench/baselines/raw-publish.ts"] },
};
const ENV = { PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn", PING_INTERVAL_MS: "5000", PING_WAIT_MS: "10000" };

const start = (scenario: string, kind: Kind): Promise<ServerProcess> =>
  spawnServer(servers[scenario]![kind], ENV, pinned ? 0 : null);

async function measure(server: ServerProcess, count: () => number): Promise<{ rate: number; cpuPerMsgUs: number }> {
  await Bun.sleep(WARMUP_MS);
  const c0 = count();
  const cpu0 = await cpuMicros(server.pid);
  const t0 = performance.now();
  await Bun.sleep(SECONDS * 1000);
  const c1 = count();
  const cpu1 = await cpuMicros(server.pid);
  const t1 = performance.now();
  const messages = c1 - c0;
  return { rate: (messages * 1000) / (t1 - t0), cpuPerMsgUs: (cpu1 - cpu0) / messages };
}

async function echoRun(kind: Kind) {
  const server = await start("echo", kind);
  const CONNS = 100;
  const IN_FLIGHT = 8;
  const frame = clientFrame("x".repeat(64));
  const batch = Buffer.concat(Array.from({ length: IN_FLIGHT }, () => frame));
  const conns = Array.from(
    { length: CONNS },
    () => new LoadConn(server.port, "/echo", (c, n) => c.write(batch.subarray(0, n * frame.length))),
  );
  await Promise.all(conns.map((c) => c.open()));
  for (const c of conns) c.write(batch);
  const result = await measure(server, () => conns.reduce((s, c) => s + c.frames, 0));
  for (const c of conns) c.close();
  await server.kill();
  return result;
}

async function fanoutRun(kind: Kind, subscribers: number) {
  const server = await start("publish", kind);
  const subscribe = clientFrame(JSON.stringify({ type: "subscribe", topic: "bench" }));
  const subs = Array.from({ length: subscribers }, () => new LoadConn(server.port, "/connect"));
  for (let i = 0; i < subs.length; i += 200) await Promise.all(subs.slice(i, i + 200).map((c) => c.open()));
  for (const s of subs) s.write(subscribe);
  const ready = kind === "switchboard" ? 2 : 1; // welcome + subscribed, or subscribed
  while (subs.some((s) => s.frames < ready)) await Bun.sleep(10);
  const WINDOW = 4;
  const publish = clientFrame(JSON.stringify({ type: "publish", topic: "bench", data: { price: 101.25, qty: 3, side: "buy" }, id: 1 }));
  const pub = new LoadConn(server.port, "/connect", (c, n) => {
    for (let i = 0; i < n; i++) c.write(publish); // one publish per ack (and the welcome starts it)
  });
  await pub.open();
  for (let i = 0; i < WINDOW - 1; i++) pub.write(publish);
  const result = await measure(server, () => subs.reduce((s, c) => s + c.frames, 0));
  for (const c of [...subs, pub]) c.close();
  await server.kill();
  return result;
}

async function idleRun(kind: Kind, n: number) {
  const server = await start("publish", kind);
  await Bun.sleep(500);
  const before = await rssBytes(server.pid);
  const conns = Array.from({ length: n }, () => new LoadConn(server.port, "/connect"));
  for (let i = 0; i < conns.length; i += 500) await Promise.all(conns.slice(i, i + 500).map((c) => c.open()));
  await Bun.sleep(2000);
  const after = await rssBytes(server.pid);
  for (const c of conns) c.close();
  await server.kill();
  return { perConnBytes: (after - before) / n };
}

async function interleaved<T>(name: string, run: (kind: Kind) => Promise<T>) {
  const results: Record<Kind, T[]> = { switchboard: [], raw: [] };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const kind of ["switchboard", "raw"] as const) {
      const r = await run(kind);
      results[kind].push(r);
      console.error(`  ${name} round ${round} ${kind}: ${JSON.stringify(r, (_, v) => (typeof v === "number" ? +v.toFixed(3) : v))}`);
    }
  }
  return results;
}

const fmt = (x: number, d = 2) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
const machine = `${cores} cores, bun ${Bun.version}, ${new Date().toISOString().slice(0, 10)}`;
console.log(`# switchboard budget check (${machine}; server pinned to CPU 0: ${pinned}; ${ROUNDS} interleaved rounds, medians)`);

const echo = await interleaved("echo", echoRun);
const e = (k: Kind, f: "rate" | "cpuPerMsgUs") => median(echo[k].map((r) => r[f]));
console.log(`echo 100 conns x 8 in flight, 64 B: switchboard ${fmt(e("switchboard", "rate"), 0)} msg/s, ${fmt(e("switchboard", "cpuPerMsgUs"), 3)} us CPU/msg | raw ${fmt(e("raw", "rate"), 0)} msg/s, ${fmt(e("raw", "cpuPerMsgUs"), 3)} us CPU/msg | CPU ratio ${fmt(e("switchboard", "cpuPerMsgUs") / e("raw", "cpuPerMsgUs"))} (budget <= 1.15), throughput ratio ${fmt(e("switchboard", "rate") / e("raw", "rate"))}`);

const SUBS = quick ? 1000 : 1000;
const fan = await interleaved(`fan-out x${SUBS}`, (k) => fanoutRun(k, SUBS));
const f = (k: Kind, x: "rate" | "cpuPerMsgUs") => median(fan[k].map((r) => r[x]));
console.log(`fan-out 1 publisher -> ${SUBS} subscribers: switchboard ${fmt(f("switchboard", "rate"), 0)} deliveries/s, ${fmt(f("switchboard", "cpuPerMsgUs"), 3)} us CPU/delivery | raw ${fmt(f("raw", "rate"), 0)} deliveries/s, ${fmt(f("raw", "cpuPerMsgUs"), 3)} us CPU/delivery | deliveries ratio ${fmt(f("switchboard", "rate") / f("raw", "rate"))} (budget >= 0.85)`);

const IDLE = quick ? 5000 : 10000;
const idle = await interleaved(`idle x${IDLE}`, (k) => idleRun(k, IDLE));
const i = (k: Kind) => median(idle[k].map((r) => r.perConnBytes));
console.log(`idle /connect connections (${IDLE}): switchboard ${fmt(i("switchboard") / 1024)} KiB RSS/conn | raw ${fmt(i("raw") / 1024)} KiB RSS/conn (budget <= 3 KiB)`);
process.exit(0);
