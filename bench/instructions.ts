// Instructions per echo / per fan-out delivery, raw Bun floor vs switchboard, counted by valgrind's callgrind:
// a figure that does not move with the machine's load, for when wall-clock CPU is too noisy to compare 5%.
// Run: bun bench/instructions.ts echo|fanout [rounds]   (needs valgrind; ~1.5 min per echo run, ~4 per fan-out)
//
// Each server runs under callgrind and is driven by this file in `drive` mode, in its own process, with a
// fixed number of messages: warm-up (so the JIT has compiled the hot path), counters zeroed, the measured
// messages, counters dumped. Loads are closed loops of fixed shape, so both servers see the same batching.
// Counts are user-space only (the kernel's share of a send is the same for both: the same uWS syscalls), and
// the machine's JIT, GC and timer threads are included: "main" is the JS thread alone.
//
// Not the CPU time: instructions ignore cache misses and the kernel. Use it to find and size per-message work,
// and `bun run bench` on a quiet machine for the verdict.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clientFrame, LoadConn, median } from "./lib.ts";

interface Drive {
  mode: "echo" | "fanout";
  port: number;
  welcome: boolean;
}
const ECHO = { conns: 20, inFlight: 8, warmup: 150_000, measured: 150_000 };
/** Warm-up publishes go to a topic nobody holds (cheap under valgrind), as in bench/load/fanout.ts. */
const FANOUT = { subscribers: 1000, window: 16, warmup: 50_000, measured: 600 };

if (process.argv[2] === "drive") await drive(JSON.parse(process.argv[3]!) as Drive);
else await orchestrate(process.argv[2] === "fanout" ? "fanout" : "echo", Number(process.argv[3] ?? 2));

async function orchestrate(mode: "echo" | "fanout", rounds: number): Promise<void> {
  const servers: Record<string, string> = {
    raw: mode === "echo" ? "bench/baselines/raw-echo.ts" : "bench/baselines/raw-publish.ts",
    switchboard: "bench/servers/switchboard.ts",
  };
  const perUnit: Record<string, { main: number; total: number }[]> = {};
  for (let round = 0; round < rounds; round++) {
    for (const [name, script] of Object.entries(servers)) {
      const r = await countOne(mode, script, name === "switchboard");
      (perUnit[name] ??= []).push(r);
      console.error(`[instructions] ${mode} round ${round + 1}/${rounds} ${name}: ${r.main.toFixed(1)} main, ${r.total.toFixed(1)} all threads`);
    }
  }
  const unit = mode === "echo" ? "echo (20 connections x 8 in flight, 64 B)" : "delivery (1 publisher, 1,000 subscribers)";
  console.log(`instructions per ${unit}, ${rounds} rounds, bun ${Bun.version}:`);
  const base = perUnit.raw!;
  for (const [name, xs] of Object.entries(perUnit)) {
    const ratio = (k: "main" | "total") => median(xs.map((x, i) => x[k] / base[i]![k])).toFixed(3);
    console.log(
      `${name.padEnd(12)} main ${median(xs.map((x) => x.main)).toFixed(1)} (x${ratio("main")})  all threads ${median(xs.map((x) => x.total)).toFixed(1)} (x${ratio("total")})`,
    );
  }
}

/** One server under callgrind, one driver: instructions per unit between the driver's @zero and @dump. */
async function countOne(mode: "echo" | "fanout", script: string, welcome: boolean): Promise<{ main: number; total: number }> {
  const dir = mkdtempSync(join(tmpdir(), "sb-callgrind-"));
  // The server's own HOST variable also names valgrind's control pipes: callgrind_control must see the same.
  // Synchronous JIT: valgrind runs one thread at a time, so a background compile started in the warm-up
  // would finish inside the window in some rounds (+3-4% there); in line, compiles stay in the warm-up.
  const env = {
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_LEVEL: "warn",
    PING_INTERVAL_MS: "3600000",
    PING_WAIT_MS: "3600000",
    BUN_JSC_useConcurrentJIT: "false",
  };
  const server = Bun.spawn(
    // --smc-check: JIT code is written at run time; --separate-threads: the JS thread apart from the others.
    ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--separate-threads=yes", `--vgdb-prefix=${dir}/vgdb`,
      `--callgrind-out-file=${dir}/cg`, `--log-file=${dir}/valgrind.log`, "bun", script],
    { env, stdout: "pipe", stderr: "inherit" },
  );
  const killer = setTimeout(() => server.kill("SIGKILL"), 30 * 60_000);
  let driver: Bun.Subprocess | undefined;
  try {
    const decoder = new TextDecoder();
    let head = "";
    let port = 0;
    for await (const chunk of server.stdout) {
      head += decoder.decode(chunk);
      const m = head.match(/127\.0\.0\.1:(\d+)/);
      if (m) {
        port = Number(m[1]);
        break;
      }
    }
    if (port === 0) throw new Error(`${script} did not print its port under valgrind`);
    const control = async (flag: string) => {
      const p = Bun.spawn(["callgrind_control", `--vgdb-prefix=${dir}/vgdb`, flag, String(server.pid)], { env, stdout: "ignore", stderr: "ignore" });
      await p.exited;
    };
    const args: Drive = { mode, port, welcome };
    const proc = Bun.spawn(["bun", import.meta.path, "drive", JSON.stringify(args)], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
    driver = proc;
    let buffered = "";
    for await (const chunk of proc.stdout) {
      buffered += decoder.decode(chunk);
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line !== "@zero" && line !== "@dump") continue;
        await control(line === "@zero" ? "--zero" : "--dump");
        proc.stdin.write("go\n");
        proc.stdin.flush();
      }
    }
    if ((await proc.exited) !== 0) throw new Error("driver failed");
    // With --separate-threads, the dump is one file per thread: cg.1-01 (the JS thread), cg.1-02, ...
    const perThread = readdirSync(dir)
      .filter((f) => f.startsWith("cg.1-"))
      .map((f) => ({ thread: f.slice(5), ir: Number(readFileSync(join(dir, f), "utf8").match(/^(?:totals|summary): (\d+)/m)?.[1] ?? NaN) }));
    const units = mode === "echo" ? ECHO.measured : FANOUT.measured * FANOUT.subscribers;
    const main = perThread.find((t) => t.thread === "01")?.ir ?? NaN;
    const total = perThread.reduce((sum, t) => sum + t.ir, 0);
    return { main: main / units, total: total / units };
  } finally {
    clearTimeout(killer);
    driver?.kill("SIGKILL");
    server.kill("SIGKILL");
    await server.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

// --- driver (its own process): fixed counts, closed loops, every wait bounded ---------------------------------

async function drive(args: Drive): Promise<void> {
  const deadline = Date.now() + 25 * 60_000;
  const until = async (done: () => boolean, what: string) => {
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
      await Bun.sleep(5);
    }
  };
  const stdin = Bun.stdin.stream().getReader();
  /** Prints a marker and waits for the orchestrator's "go" (after it zeroed or dumped the counters). */
  const mark = async (marker: "@zero" | "@dump") => {
    console.log(marker);
    const { done } = await stdin.read();
    if (done) throw new Error("orchestrator went away");
  };

  if (args.mode === "echo") {
    const frame = clientFrame("x".repeat(64));
    let sent = 0;
    let budget = 0;
    const send = (c: LoadConn, n: number) => {
      const k = Math.min(n, budget - sent);
      if (k <= 0) return;
      sent += k;
      c.write(Buffer.concat(Array.from({ length: k }, () => frame)));
    };
    const conns = Array.from({ length: ECHO.conns }, () => new LoadConn(args.port, "/echo", send));
    await Promise.all(conns.map((c) => c.open()));
    const received = () => conns.reduce((sum, c) => sum + c.frames, 0);
    for (const [phase, count] of [["warm-up", ECHO.warmup], ["measured", ECHO.measured]] as const) {
      budget += count;
      for (const c of conns) send(c, ECHO.inFlight);
      await until(() => received() >= budget, phase);
      await mark(phase === "warm-up" ? "@zero" : "@dump");
    }
    process.exit(0);
  }

  const before = args.welcome ? 2 : 1; // (welcome +) subscribed
  const subs = Array.from({ length: FANOUT.subscribers }, () => new LoadConn(args.port, "/connect"));
  for (let i = 0; i < subs.length; i += 200) await Promise.all(subs.slice(i, i + 200).map((s) => s.open()));
  const subscribe = clientFrame(JSON.stringify({ type: "subscribe", topic: "bench" }));
  for (const s of subs) s.write(subscribe);
  await until(() => subs.every((s) => s.frames >= before), "subscribed");
  const delivered = () => subs.reduce((sum, s) => sum + s.frames - before, 0);
  const frames = {
    warm: clientFrame(`{"type":"publish","topic":"warmup","data":{"t":1234567890123},"id":1}`),
    bench: clientFrame(`{"type":"publish","topic":"bench","data":{"t":1234567890123},"id":1}`),
  };
  let frame = frames.warm;
  let published = 0;
  let budget = 0;
  let acked = 0;
  let started = false;
  const publish = (c: LoadConn, n: number) => {
    const k = Math.min(n, budget - published);
    if (k <= 0) return;
    published += k;
    c.write(Buffer.concat(Array.from({ length: k }, () => frame)));
  };
  const pub = new LoadConn(args.port, "/connect", (c, n) => {
    if (!started) return;
    acked += n;
    publish(c, n);
  });
  await pub.open();
  if (args.welcome) await until(() => pub.frames >= 1, "welcome");
  started = true;
  budget = FANOUT.warmup;
  publish(pub, FANOUT.window);
  await until(() => acked >= budget, "warm-up");
  await mark("@zero");
  frame = frames.bench;
  budget += FANOUT.measured;
  publish(pub, FANOUT.window);
  await until(() => acked >= budget && delivered() >= FANOUT.measured * subs.length, "measured");
  if (subs.some((s) => s.closed)) throw new Error("a subscriber was dropped");
  await mark("@dump");
  process.exit(0);
}
