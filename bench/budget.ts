// Quick check of the core server's performance budget, side by side with raw Bun.serve floors in one run:
//   echo:    server CPU per message and msgs/s on /echo vs bench/baselines/raw-echo.ts
//   fan-out: deliveries/s and server CPU per delivery on /connect vs bench/baselines/raw-publish.ts
//   idle:    server RSS per idle /connect connection vs a raw Bun.serve connection
// Servers run as their own processes pinned to CPU 0; this load generator should run on CPU 1:
//   taskset -c 1 bun bench/budget.ts [--quick]
// Runs are interleaved (switchboard, raw, switchboard, raw, ...) and medians reported.
import { clientFrame, cpuMicros, LoadConn, median, rssBytes, spawnServer, type ServerProcess } from "./lib.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 2 : 5;
const SECONDS = quick ? 2 : 3;
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

interface Sample {
  /** messages (or deliveries) per second */
  rate: number;
  /** server CPU microseconds per message */
  cpuPerMsgUs: number;
  /** share of one core used by the server and by this load generator during the window */
  serverCpu: number;
  loadCpu: number;
}

async function measure(server: ServerProcess, count: () => number): Promise<Sample> {
  await Bun.sleep(WARMUP_MS);
  const c0 = count();
  const cpu0 = await cpuMicros(server.pid);
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  await Bun.sleep(SECONDS * 1000);
  const c1 = count();
  const cpu1 = await cpuMicros(server.pid);
  const self = process.cpuUsage(self0);
  const elapsedUs = (performance.now() - t0) * 1000;
  const messages = c1 - c0;
  return {
    rate: (messages * 1e6) / elapsedUs,
    cpuPerMsgUs: (cpu1 - cpu0) / messages,
    serverCpu: (cpu1 - cpu0) / elapsedUs,
    loadCpu: (self.user + self.system) / elapsedUs,
  };
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
  // One publish per ack keeps WINDOW publishes in flight; switchboard's welcome frame is not an ack.
  const WINDOW = 16;
  const publish = clientFrame(JSON.stringify({ type: "publish", topic: "bench", data: { price: 101.25, qty: 3, side: "buy" }, id: 1 }));
  let started = false;
  const pub = new LoadConn(server.port, "/connect", (c, n) => {
    if (started) for (let i = 0; i < n; i++) c.write(publish);
  });
  await pub.open();
  if (kind === "switchboard") while (pub.frames < 1) await Bun.sleep(5);
  started = true;
  for (let i = 0; i < WINDOW; i++) pub.write(publish);
  const result = { ...(await measure(server, () => subs.reduce((s, c) => s + c.frames, 0))), dropped: 0 };
  result.dropped = subs.filter((s) => s.closed).length; // a dropped subscriber lost messages
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
console.log(`# switchboard budget check (${machine}; server pinned to CPU 0: ${pinned}; ${ROUNDS} interleaved rounds)`);
console.log("Ratios are medians of the per-round switchboard/raw ratios (each pair ran back to back), which cancels drift.");

/** Median of switchboard/raw for one field, pairing the runs of the same round. */
const pairedRatio = <T>(r: Record<Kind, T[]>, field: (t: T) => number) =>
  median(r.switchboard.map((s, i) => field(s) / field(r.raw[i]!)));
const med = <T>(xs: T[], field: (t: T) => number) => median(xs.map(field));

function report(name: string, r: Record<Kind, Sample[]>, unit: string) {
  for (const kind of ["switchboard", "raw"] as const) {
    const xs = r[kind];
    console.log(
      `${name} ${kind.padEnd(11)} ${fmt(med(xs, (x) => x.rate), 0).padStart(9)} ${unit}/s  ${fmt(med(xs, (x) => x.cpuPerMsgUs), 3)} us server CPU/${unit}  ` +
        `(server ${fmt(med(xs, (x) => x.serverCpu) * 100, 0)}% of a core, load generator ${fmt(med(xs, (x) => x.loadCpu) * 100, 0)}%)`,
    );
  }
}

const echo = await interleaved("echo", echoRun);
report("echo   ", echo, "msg");
console.log(`echo    CPU/msg ratio ${fmt(pairedRatio(echo, (x) => x.cpuPerMsgUs))} (budget <= 1.15), throughput ratio ${fmt(pairedRatio(echo, (x) => x.rate))}`);

const SUBS = 1000;
const fan = await interleaved(`fan-out x${SUBS}`, (k) => fanoutRun(k, SUBS));
report("fan-out", fan, "delivery");
const dropped = fan.switchboard.reduce((n, x) => n + x.dropped, 0);
console.log(`fan-out deliveries ratio ${fmt(pairedRatio(fan, (x) => x.rate))} (budget >= 0.85), CPU/delivery ratio ${fmt(pairedRatio(fan, (x) => x.cpuPerMsgUs))}, subscribers dropped: switchboard ${dropped}, raw ${fan.raw.reduce((n, x) => n + x.dropped, 0)}`);

const IDLE = quick ? 5000 : 10000;
const idle = await interleaved(`idle x${IDLE}`, (k) => idleRun(k, IDLE));
console.log(`idle    ${IDLE} /connect connections: switchboard ${fmt(med(idle.switchboard, (x) => x.perConnBytes) / 1024)} KiB RSS/conn, raw ${fmt(med(idle.raw, (x) => x.perConnBytes) / 1024)} KiB (budget <= 3 KiB)`);
process.exit(0);
