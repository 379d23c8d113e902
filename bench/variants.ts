// Server CPU per message (echo) or per delivery (fan-out) for three servers, interleaved rounds, paired
// ratios against raw Bun: the raw floor, the raw floor with switchboard's modules loaded (a bigger process
// and heap, same handler), and switchboard. Use it when `bun run bench` shows a ratio whose spread is too
// wide to read. Run: bun bench/variants.ts echo|fanout [rounds] (servers on CPU 0, load on CPU 1).
import { cpuMicros, median, spawnServer } from "./lib.ts";

const mode = process.argv[2] === "fanout" ? "fanout" : "echo";
const ROUNDS = Number(process.argv[3] ?? 8);
const variants: Record<string, { cmd: string[]; welcome: boolean }> =
  mode === "echo"
    ? {
        raw: { cmd: ["bun", "bench/baselines/raw-echo.ts"], welcome: false },
        "raw+modules": { cmd: ["bun", "bench/baselines/raw-echo-loaded.ts"], welcome: false },
        switchboard: { cmd: ["bun", "bench/servers/switchboard.ts"], welcome: true },
      }
    : {
        raw: { cmd: ["bun", "bench/baselines/raw-publish.ts"], welcome: false },
        "raw+modules": { cmd: ["bun", "bench/baselines/raw-publish-loaded.ts"], welcome: false },
        switchboard: { cmd: ["bun", "bench/servers/switchboard.ts"], welcome: true },
      };

const perUnit: Record<string, number[]> = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, { cmd, welcome }] of Object.entries(variants)) {
    const server = await spawnServer(cmd, { PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn" }, 0);
    const args =
      mode === "echo"
        ? ["bench/load/echo.ts", { port: server.port, conns: 100, mode: "closed", inFlight: 8, seconds: 3, warmupMs: 800 }]
        : ["bench/load/fanout.ts", { port: server.port, subscribers: 1000, seconds: 3, warmupMs: 800, window: 16, samplers: 0, welcome }];
    const proc = Bun.spawn(["taskset", "-c", "1", "bun", args[0] as string, JSON.stringify(args[1])], { stdout: "pipe" });
    let out = "";
    let cpu0 = 0;
    let cpu1 = 0;
    for await (const chunk of proc.stdout) {
      out += new TextDecoder().decode(chunk);
      if (out.includes("@start") && cpu0 === 0) cpu0 = await cpuMicros(server.pid);
      if (out.includes("@end") && cpu1 === 0) cpu1 = await cpuMicros(server.pid);
    }
    const result = JSON.parse(out.split("\n").find((l) => l.startsWith("="))!.slice(1));
    (perUnit[name] ??= []).push((cpu1 - cpu0) / (mode === "echo" ? result.messages : result.deliveries));
    await server.kill();
  }
}
const base = perUnit.raw!;
console.log(`server CPU us per ${mode === "echo" ? "echo" : "delivery (1 publisher, 1,000 subscribers)"}, ${ROUNDS} rounds:`);
for (const [name, xs] of Object.entries(perUnit)) {
  const paired = median(xs.map((x, i) => x / base[i]!));
  console.log(`${name.padEnd(12)} median ${median(xs).toFixed(3)}  paired ratio vs raw ${paired.toFixed(3)}  rounds ${xs.map((x) => x.toFixed(3)).join(" ")}`);
}
