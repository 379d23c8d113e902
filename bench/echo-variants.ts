// Server CPU per /echo message for three servers, 8 interleaved rounds, paired ratios against raw Bun:
// raw echo, raw echo with switchboard's modules loaded, and switchboard. Use it when `bun run bench` shows an
// echo ratio whose spread is too wide to read. Run: bun bench/echo-variants.ts [rounds] (load on CPU 1).
import { median, spawnServer, cpuMicros } from "./lib.ts";
const variants: Record<string, string[]> = { raw: ["bun", "bench/baselines/raw-echo.ts"], "raw+modules": ["bun", "bench/baselines/raw-echo-loaded.ts"], switchboard: ["bun", "bench/servers/switchboard.ts"] };
const res: Record<string, number[]> = {};
const ROUNDS = Number(process.argv[2] ?? 8);
for (let round = 0; round < ROUNDS; round++) for (const [name, cmd] of Object.entries(variants)) {
  const s = await spawnServer(cmd, { PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn" }, 0);
  const proc = Bun.spawn(["taskset", "-c", "1", "bun", "bench/load/echo.ts", JSON.stringify({ port: s.port, conns: 100, mode: "closed", inFlight: 8, seconds: 3, warmupMs: 800 })], { stdout: "pipe" });
  let out = ""; let c0 = 0, c1 = 0;
  for await (const chunk of proc.stdout) { out += new TextDecoder().decode(chunk); if (out.includes("@start") && !c0) c0 = await cpuMicros(s.pid); if (out.includes("@end") && !c1) c1 = await cpuMicros(s.pid); }
  const r = JSON.parse(out.split("\n").find(l => l.startsWith("="))!.slice(1));
  (res[name] ??= []).push((c1 - c0) / r.messages);
  await s.kill();
}
const base = res.raw!;
for (const [k, v] of Object.entries(res)) console.log(k.padEnd(12), "median", median(v).toFixed(3), "paired ratio vs raw", median(v.map((x, i) => x / base[i]!)).toFixed(3), v.map(x => x.toFixed(2)).join(" "));
