// `bun run bench` / `bun run bench -- --quick` (`--only=echo,latency,fanout,idle,soak,batch` runs a subset).
// Every scenario runs switchboard and its raw Bun.serve baseline (bench/baselines/) as separate server
// processes, driven by separate load-generator processes (bench/load/), interleaved A B A B, medians of
// paired ratios. On a multi-core machine servers are pinned to CPU 0 and generators to CPU 1 (taskset).
// Writes bench/results/<date>.json, bench/results/charts/*.svg, and the generated section of bench/RESULTS.md.
import * as hdr from "hdr-histogram-js";
import { barChart, lineChart } from "./svg.ts";
import { cpuMicros, median, rssBytes, spawnServer, type ServerProcess } from "./lib.ts";

type Kind = "switchboard" | "raw";
const KINDS: Kind[] = ["switchboard", "raw"];
const quick = process.argv.includes("--quick");
const only = process.argv.find((a) => a.startsWith("--only="))?.slice(7).split(",");
const wants = (name: string) => only === undefined || only.includes(name);
/** At least two A B rounds; `--rounds=N` for more when the machine is noisy. */
const ROUNDS = Math.max(2, Number(process.argv.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 2));

const cores = Number((await Bun.$`nproc --all`.text()).trim());
const pinned = cores > 1;
const SERVER_CPU = pinned ? 0 : null;
const LOAD_CPU = pinned ? 1 : null;
const fileLimit = Number((await Bun.$`sh -c "ulimit -n"`.text()).trim());
const date = new Date().toISOString().slice(0, 10);
const progress = (line: string) => console.error(`[bench] ${line}`);
progress(
  pinned
    ? `${cores} cores: servers pinned to CPU 0, load generators to CPU 1 (taskset)`
    : "1 core: servers and load share it; figures are relative only",
);
progress(`${quick ? "quick" : "full"} run, ${ROUNDS} interleaved rounds per scenario, bun ${Bun.version}`);

// --- processes ---------------------------------------------------------------------------------------------

const SERVER_CMD: Record<"echo" | "publish", Record<Kind, string[]>> = {
  echo: { switchboard: ["bun", "bench/servers/switchboard.ts"], raw: ["bun", "bench/baselines/raw-echo.ts"] },
  publish: { switchboard: ["bun", "bench/servers/switchboard.ts"], raw: ["bun", "bench/baselines/raw-publish.ts"] },
};
const BASE_ENV = { PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn" };

const server = (role: "echo" | "publish", kind: Kind, env: Record<string, string> = {}) =>
  spawnServer(SERVER_CMD[role][kind], { ...BASE_ENV, ...env }, SERVER_CPU);

interface Generated<R> {
  result: R;
  seconds: Record<string, number>[];
  /** server CPU microseconds between the generator's @start and @end */
  serverCpuUs: number;
}

/** Runs a generator process; reads the server's CPU at its @start/@end; returns its "=" JSON line. */
async function generate<R>(script: string, args: object, target: ServerProcess, onReady?: () => Promise<void>): Promise<Generated<R>> {
  const argv = ["bun", `bench/load/${script}.ts`, JSON.stringify(args)];
  const proc = Bun.spawn(LOAD_CPU === null ? argv : ["taskset", "-c", String(LOAD_CPU), ...argv], { stdout: "pipe", stderr: "inherit" });
  const seconds: Record<string, number>[] = [];
  let cpuStart = 0;
  let serverCpuUs = 0;
  let result: R | undefined;
  let buffered = "";
  const decoder = new TextDecoder();
  const kill = setTimeout(() => proc.kill("SIGKILL"), 10 * 60_000);
  for await (const chunk of proc.stdout) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line === "@start") cpuStart = await cpuMicros(target.pid);
      else if (line === "@end") serverCpuUs = (await cpuMicros(target.pid)) - cpuStart;
      else if (line.startsWith("@sec ")) seconds.push(JSON.parse(line.slice(5)));
      else if (line === "@ready" && onReady) {
        await onReady();
        proc.kill("SIGTERM");
      } else if (line.startsWith("=")) result = JSON.parse(line.slice(1));
    }
  }
  clearTimeout(kill);
  await proc.exited;
  if (result === undefined) throw new Error(`generator ${script} produced no result`);
  return { result, seconds, serverCpuUs };
}

async function interleave<T>(name: string, run: (kind: Kind, round: number) => Promise<T>): Promise<Record<Kind, T[]>> {
  const out: Record<Kind, T[]> = { switchboard: [], raw: [] };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const kind of KINDS) {
      const started = performance.now();
      const r = await run(kind, round);
      out[kind].push(r);
      progress(`${name}: round ${round}/${ROUNDS} ${kind} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    }
  }
  return out;
}

const pairs = <T>(r: Record<Kind, T[]>, f: (t: T) => number) => r.switchboard.map((s, i) => f(s) / f(r.raw[i]!));
const pairedRatio = <T>(r: Record<Kind, T[]>, f: (t: T) => number) => median(pairs(r, f));
/** "median [lowest-highest]" of the per-round ratios: the spread shows how noisy the machine was. */
const ratioCell = <T>(r: Record<Kind, T[]>, f: (t: T) => number) => {
  const xs = pairs(r, f);
  return `${fmt(median(xs), 2)} [${fmt(Math.min(...xs), 2)}-${fmt(Math.max(...xs), 2)}]`;
};
const med = <T>(xs: T[], f: (t: T) => number) => median(xs.map(f));
const decode = (b64: string) => hdr.decodeFromCompressedBase64(b64);
const percentiles = (b64: string) => {
  const h = decode(b64);
  return { p50: h.getValueAtPercentile(50), p99: h.getValueAtPercentile(99), p999: h.getValueAtPercentile(99.9), max: h.maxValue, samples: h.totalCount };
};

// --- scenarios ---------------------------------------------------------------------------------------------

const results: Record<string, unknown> = {};
const table: string[][] = [["scenario", "metric", "switchboard", "raw Bun", "ratio", "target", "verdict"]];
const charts: { file: string; title: string; svg: string }[] = [];
const verdict = (ok: boolean) => (ok ? "met" : "MISSED");
const fmt = (x: number, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
let echoMaxRate = 200_000;

if (wants("echo")) {
  progress("scenario 1: echo throughput, 100 connections x 8 in flight, 64 B");
  const runs = await interleave("echo", async (kind) => {
    const s = await server("echo", kind);
    const g = await generate<{ messages: number; elapsedMs: number; cpuUs: number; dropped: number }>(
      "echo",
      { port: s.port, conns: 100, mode: "closed", inFlight: 8, seconds: quick ? 2 : 5, warmupMs: 1000 },
      s,
    );
    await s.kill();
    const { messages, elapsedMs, cpuUs } = g.result;
    return { rate: (messages * 1000) / elapsedMs, cpuPerMsgUs: g.serverCpuUs / messages, serverCpu: g.serverCpuUs / (elapsedMs * 1000), loadCpu: cpuUs / (elapsedMs * 1000) };
  });
  results.echoThroughput = runs;
  echoMaxRate = med(runs.raw, (r) => r.rate);
  const cpuRatio = pairedRatio(runs, (r) => r.cpuPerMsgUs);
  const rateRatio = pairedRatio(runs, (r) => r.rate);
  table.push(["echo", "msgs/s", fmt(med(runs.switchboard, (r) => r.rate)), fmt(echoMaxRate), ratioCell(runs, (r) => r.rate), ">= 0.95", verdict(rateRatio >= 0.95)]);
  table.push(["echo", "server CPU us/msg", fmt(med(runs.switchboard, (r) => r.cpuPerMsgUs), 3), fmt(med(runs.raw, (r) => r.cpuPerMsgUs), 3), ratioCell(runs, (r) => r.cpuPerMsgUs), "<= 1.05", verdict(cpuRatio <= 1.05)]);
  table.push(["echo", "CPU share: server / load", `${fmt(med(runs.switchboard, (r) => r.serverCpu) * 100)}% / ${fmt(med(runs.switchboard, (r) => r.loadCpu) * 100)}%`, `${fmt(med(runs.raw, (r) => r.serverCpu) * 100)}% / ${fmt(med(runs.raw, (r) => r.loadCpu) * 100)}%`, "", "", ""]);
  charts.push({
    file: "echo.svg",
    title: "Echo throughput",
    svg: barChart("Echo: 100 connections x 8 in flight, 64 B", "messages/s", ["throughput"], KINDS.map((k) => ({ name: k === "raw" ? "raw Bun.serve" : k, values: [med(runs[k], (r) => r.rate)] }))),
  });
}

if (wants("latency")) {
  const rate = Math.round(echoMaxRate * 0.5);
  const seconds = Math.max(quick ? 2 : 3, Math.ceil(100_000 / rate) + 1);
  progress(`scenario 2: echo latency, open loop, 10 connections at ${fmt(rate)} msgs/s (50% of raw max), ${seconds} s`);
  const runs = await interleave("latency", async (kind) => {
    const s = await server("echo", kind);
    const g = await generate<{ sent: number; received: number; lost: number; histogram: string; cpuUs: number; elapsedMs: number }>(
      "echo",
      { port: s.port, conns: 10, mode: "open", rate, seconds, warmupMs: 1000 },
      s,
    );
    await s.kill();
    return { ...percentiles(g.result.histogram), lost: g.result.lost, loadCpu: g.result.cpuUs / (g.result.elapsedMs * 1000) };
  });
  results.echoLatency = { rate, runs };
  for (const p of ["p50", "p99", "p999", "max"] as const) {
    const ratio = pairedRatio(runs, (r) => r[p]);
    const target = p === "p999" ? "<= 1.2" : "";
    table.push(["latency @50%", `${p} us`, fmt(med(runs.switchboard, (r) => r[p])), fmt(med(runs.raw, (r) => r[p])), ratioCell(runs, (r) => r[p]), target, p === "p999" ? verdict(ratio <= 1.2) : ""]);
  }
  table.push(["latency @50%", "samples per run", fmt(med(runs.switchboard, (r) => r.samples)), fmt(med(runs.raw, (r) => r.samples)), "", ">= 100,000", verdict(Math.min(...runs.switchboard.map((r) => r.samples), ...runs.raw.map((r) => r.samples)) >= 100_000)]);
  charts.push({
    file: "latency.svg",
    title: "Echo latency at 50% load",
    svg: barChart(`Echo latency, open loop at ${fmt(rate)} msgs/s`, "microseconds", ["p50", "p99", "p99.9", "max"], KINDS.map((k) => ({ name: k === "raw" ? "raw Bun.serve" : k, values: (["p50", "p99", "p999", "max"] as const).map((p) => med(runs[k], (r) => r[p])) }))),
  });
}

if (wants("fanout")) {
  const sizes = [1000, 10_000];
  const perSize: Record<number, Record<Kind, { rate: number; cpuPerDeliveryUs: number; lost: number; p50: number; p99: number; p999: number; loadCpu: number }[]>> = {};
  for (const subscribers of sizes) {
    progress(`scenario 3: fan-out, 1 publisher -> ${fmt(subscribers)} subscribers`);
    perSize[subscribers] = await interleave(`fan-out x${subscribers}`, async (kind) => {
      const s = await server("publish", kind);
      const g = await generate<{ deliveries: number; elapsedMs: number; lost: number; droppedSubscribers: number; histogram: string; cpuUs: number }>(
        "fanout",
        { port: s.port, subscribers, seconds: quick ? 2 : 4, warmupMs: 1000, window: 16, samplers: 10, welcome: kind === "switchboard" },
        s,
      );
      await s.kill();
      const { deliveries, elapsedMs, lost, histogram, cpuUs } = g.result;
      const p = percentiles(histogram);
      return { rate: (deliveries * 1000) / elapsedMs, cpuPerDeliveryUs: g.serverCpuUs / deliveries, lost, p50: p.p50, p99: p.p99, p999: p.p999, loadCpu: cpuUs / (elapsedMs * 1000) };
    });
    const runs = perSize[subscribers]!;
    const ratio = pairedRatio(runs, (r) => r.rate);
    const lost = runs.switchboard.reduce((n, r) => n + r.lost, 0);
    table.push([`fan-out x${fmt(subscribers)}`, "deliveries/s", fmt(med(runs.switchboard, (r) => r.rate)), fmt(med(runs.raw, (r) => r.rate)), ratioCell(runs, (r) => r.rate), ">= 0.90", verdict(ratio >= 0.9)]);
    table.push([`fan-out x${fmt(subscribers)}`, "messages lost", fmt(lost), fmt(runs.raw.reduce((n, r) => n + r.lost, 0)), "", "0", verdict(lost === 0)]);
    table.push([`fan-out x${fmt(subscribers)}`, "publish->receive p50/p99/p99.9 us", `${fmt(med(runs.switchboard, (r) => r.p50))} / ${fmt(med(runs.switchboard, (r) => r.p99))} / ${fmt(med(runs.switchboard, (r) => r.p999))}`, `${fmt(med(runs.raw, (r) => r.p50))} / ${fmt(med(runs.raw, (r) => r.p99))} / ${fmt(med(runs.raw, (r) => r.p999))}`, "", "", ""]);
    table.push([`fan-out x${fmt(subscribers)}`, "load generator CPU", `${fmt(med(runs.switchboard, (r) => r.loadCpu) * 100)}%`, `${fmt(med(runs.raw, (r) => r.loadCpu) * 100)}%`, "", "", ""]);
  }
  results.fanout = perSize;
  charts.push({
    file: "fanout.svg",
    title: "Fan-out deliveries",
    svg: barChart("Fan-out: 1 publisher, 16 publishes in flight", "deliveries/s", sizes.map((n) => `${fmt(n)} subscribers`), KINDS.map((k) => ({ name: k === "raw" ? "raw Bun.serve" : k, values: sizes.map((n) => med(perSize[n]![k], (r) => r.rate)) }))),
  });
}

if (wants("idle")) {
  const maxCount = Math.max(10_000, fileLimit - 500);
  const counts = quick ? [10_000] : [10_000, maxCount];
  const perCount: Record<number, Record<Kind, { rssPerConn: number; heapPerConn: number; open: number; pings: number }[]>> = {};
  for (const count of counts) {
    progress(`scenario 4: ${fmt(count)} idle /connect connections with heartbeat pings flowing (file limit ${fmt(fileLimit)})`);
    perCount[count] = await interleave(`idle x${count}`, async (kind) => {
      // switchboard pings every second; raw Bun pings at its shortest idleTimeout (8 s, so about every 4 s)
      const env: Record<string, string> = kind === "switchboard" ? { PING_INTERVAL_MS: "1000", PING_WAIT_MS: "2000" } : { IDLE_PINGS: "1" };
      const s = await server("publish", kind, env);
      await Bun.sleep(500);
      const heap0 = await s.heap();
      const rss0 = await rssBytes(s.pid);
      let rss1 = 0;
      let heap1 = heap0;
      const g = await generate<{ open: number; closedByServer: number; pings: number }>("idle", { port: s.port, path: "/connect", count }, s, async () => {
        await Bun.sleep(6000); // long enough for both servers to ping every connection at least once
        heap1 = await s.heap();
        rss1 = await rssBytes(s.pid);
      });
      await s.kill();
      return { rssPerConn: (rss1 - rss0) / count, heapPerConn: (heap1.heapSize - heap0.heapSize) / count, open: g.result.open, pings: g.result.pings };
    });
    const runs = perCount[count]!;
    const rss = med(runs.switchboard, (r) => r.rssPerConn) / 1024;
    table.push([`idle x${fmt(count)}`, "server RSS KiB/conn", fmt(rss, 2), fmt(med(runs.raw, (r) => r.rssPerConn) / 1024, 2), ratioCell(runs, (r) => r.rssPerConn), count === 10_000 ? "<= 2 KiB" : "", count === 10_000 ? verdict(rss <= 2) : ""]);
    table.push([`idle x${fmt(count)}`, "JS heap bytes/conn", fmt(med(runs.switchboard, (r) => r.heapPerConn)), fmt(med(runs.raw, (r) => r.heapPerConn)), "", "", ""]);
    table.push([`idle x${fmt(count)}`, "open at the end / pings answered", `${fmt(med(runs.switchboard, (r) => r.open))} / ${fmt(med(runs.switchboard, (r) => r.pings))}`, `${fmt(med(runs.raw, (r) => r.open))} / ${fmt(med(runs.raw, (r) => r.pings))}`, "", "", ""]);
  }
  results.idle = perCount;
  charts.push({
    file: "idle.svg",
    title: "Idle connection memory",
    svg: barChart("Idle /connect connections: server RSS per connection", "KiB", counts.map((n) => `${fmt(n)} connections`), KINDS.map((k) => ({ name: k === "raw" ? "raw Bun.serve" : k, values: counts.map((n) => med(perCount[n]![k], (r) => r.rssPerConn) / 1024) }))),
  });
}

if (wants("soak")) {
  const seconds = quick ? 10 : 60;
  const rate = Math.round(echoMaxRate * 0.5);
  progress(`scenario 5: ${seconds} s soak on /echo at ${fmt(rate)} msgs/s, p99.9 and RSS every second`);
  const runs = await interleave("soak", async (kind) => {
    const s = await server("echo", kind);
    const rss: [number, number][] = [];
    const t0 = performance.now();
    const sampler = setInterval(async () => rss.push([(performance.now() - t0) / 1000, (await rssBytes(s.pid).catch(() => 0)) / 2 ** 20]), 1000);
    const g = await generate<{ histogram: string; lost: number }>("echo", { port: s.port, conns: 10, mode: "open", rate, seconds, warmupMs: 1000, perSecond: true }, s);
    clearInterval(sampler);
    await s.kill();
    return { perSecond: g.seconds.map((x) => [x.second!, x.p999!] as [number, number]), rss, ...percentiles(g.result.histogram), lost: g.result.lost };
  });
  results.soak = { rate, seconds, runs };
  const worst = (k: Kind) => med(runs[k], (r) => Math.max(...r.perSecond.map((p) => p[1])));
  const growth = (k: Kind) => med(runs[k], (r) => (r.rss.at(-1)?.[1] ?? 0) - (r.rss[1]?.[1] ?? 0));
  table.push(["soak", `worst 1 s p99.9 us (${seconds} s)`, fmt(worst("switchboard")), fmt(worst("raw")), fmt(worst("switchboard") / worst("raw"), 2), "", ""]);
  table.push(["soak", "RSS growth MiB (after 1 s -> end)", fmt(growth("switchboard"), 1), fmt(growth("raw"), 1), "", "", ""]);
  table.push(["soak", "messages lost", fmt(runs.switchboard.reduce((n, r) => n + r.lost, 0)), fmt(runs.raw.reduce((n, r) => n + r.lost, 0)), "", "0", ""]);
  charts.push({
    file: "soak-p999.svg",
    title: "Soak: p99.9 per second",
    svg: lineChart(`Soak at ${fmt(rate)} msgs/s: p99.9 latency per second (round 1)`, "microseconds", "second", KINDS.map((k) => ({ name: k === "raw" ? "raw Bun.serve" : k, points: runs[k][0]!.perSecond }))),
  });
  charts.push({
    file: "soak-rss.svg",
    title: "Soak: RSS",
    svg: lineChart("Soak: server RSS over time (round 1)", "MiB", "second", KINDS.map((k) => ({ name: k === "raw" ? "raw Bun.serve" : k, points: runs[k][0]!.rss }))),
  });
}

if (wants("batch")) {
  // Issue 14's target, measured by bench/batch.ts (its own generator: bursts of 10 publishes read in one tick,
  // subscribers counting the lines of batch frames): batched delivery against raw Bun's frame per message.
  progress("scenario 6: batched delivery, fan-out x1,000, bursts of 10 publishes per tick (bench/batch.ts)");
  const proc = Bun.spawn(["bun", "bench/batch.ts", "--only=both", "--json", `--rounds=${quick ? 1 : ROUNDS}`, ...(quick ? ["--quick"] : [])], { stdout: "pipe", stderr: "inherit" });
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  const json = out.split("\n").find((l) => l.startsWith("="));
  if (json === undefined) throw new Error("bench/batch.ts produced no result");
  type Side = { messagesPerSec: number; ratios: number[]; lost: number; p50: number; p99: number };
  const r = JSON.parse(json.slice(1)) as { burst: number; offered: number; raw: Side; perFrame: Side; batch: Side };
  results.batch = r;
  const name = `batch x1,000, ${r.burst}/tick`;
  const ratio = median(r.batch.ratios);
  table.push([name, "msgs delivered/s (?batch=1 vs per frame)", fmt(r.batch.messagesPerSec), fmt(r.raw.messagesPerSec), `${fmt(ratio, 2)} [${fmt(Math.min(...r.batch.ratios), 2)}-${fmt(Math.max(...r.batch.ratios), 2)}]`, ">= 3.00", verdict(ratio >= 3)]);
  table.push([name, "messages lost", fmt(r.batch.lost), fmt(r.raw.lost), "", "0", verdict(r.batch.lost === 0)]);
  table.push([name, `p99 us at ${fmt(r.offered)}/s: batch / per frame`, `${fmt(r.batch.p99)} / ${fmt(r.perFrame.p99)}`, fmt(r.raw.p99), fmt(r.batch.p99 / r.perFrame.p99, 2), "<= 1.00", verdict(r.batch.p99 <= r.perFrame.p99)]);
}

// --- report ------------------------------------------------------------------------------------------------

const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
const line = (row: string[]) => `| ${row.map((cell, c) => cell.padEnd(widths[c]!)).join(" | ")} |`;
const markdown = [line(table[0]!), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...table.slice(1).map(line)].join("\n");
console.log(markdown);

const machine = { cores, bun: Bun.version, date, pinned, fileLimit, quick };
await Bun.write(`bench/results/${date}${quick ? "-quick" : ""}.json`, JSON.stringify({ machine, results }, null, 2));
for (const chart of charts) await Bun.write(`bench/results/charts/${chart.file}`, chart.svg);

const command = `bun run bench -- ${process.argv.slice(2).join(" ")}`.trimEnd().replace(/ --$/, "");
const section = `<!-- bench:begin (generated by bench/run.ts: edit outside these markers) -->
## Latest \`bun run bench\`

Command: \`${command}\`. Machine: ${cores} cores (\`nproc\`), bun ${Bun.version}, ${date}, file limit ${fmt(fileLimit)}.
${pinned ? "Servers pinned to CPU 0, load generators to CPU 1." : "One core: nothing pinned."} ${ROUNDS} interleaved rounds per scenario;
ratios are medians of per-round switchboard/raw pairs, [lowest-highest] of those pairs beside them. Raw data: \`bench/results/${date}${quick ? "-quick" : ""}.json\`.

${markdown}

${charts.map((c) => `![${c.title}](results/charts/${c.file})`).join("\n")}
<!-- bench:end -->`;
const resultsPath = "bench/RESULTS.md";
const current = await Bun.file(resultsPath).text();
const updated = /<!-- bench:begin[\s\S]*<!-- bench:end -->/.test(current)
  ? current.replace(/<!-- bench:begin[\s\S]*<!-- bench:end -->/, section)
  : current.replace(/\n## /, `\n${section}\n\n## `);
await Bun.write(resultsPath, updated);
progress(`wrote bench/results/${date}${quick ? "-quick" : ""}.json, ${charts.length} charts and ${resultsPath}`);
process.exit(0);
