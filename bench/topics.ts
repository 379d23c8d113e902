// The cost of typed topics (issue 12), switchboard with and without topic definitions in the same run:
//   1. server CPU per publish to a topic with one subscriber (so the publish path dominates), data of ~60 bytes
//      and of ~10 KiB (200 records), without definitions and with a zod schema on the topic;
//   2. fan-out x1,000 (the floor scenario's shape: 16 publishes in flight), without and with a schema.
// Rounds interleave the two servers; ratios are medians of per-round pairs. The raw Bun.serve floors come from
// `bun run bench -- --only=echo,fanout,idle`, run beside this one. Run: bun bench/topics.ts [--quick].
import { clientFrame, cpuMicros, LoadConn, median, spawnServer, type ServerProcess } from "./lib.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 2 : 4;
const SECONDS = quick ? 2 : 4;
const CORES = navigator.hardwareConcurrency;
const fmt = (x: number, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });

type Variant = "plain" | "schema";
const ENV: Record<Variant, Record<string, string>> = {
  plain: {},
  schema: { SWITCHBOARD_CONFIG: "bench/topics.config.ts" },
};

async function node(variant: Variant): Promise<ServerProcess> {
  // The server on CPU 0, this process (the load) wherever the scheduler puts it: the figure is server CPU.
  return spawnServer(["bun", "src/index.ts"], { HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "warn", ...ENV[variant] }, CORES > 1 ? 0 : null);
}

const small = (t: number) => ({ t, user: "ann", text: "hello, everyone in this room" });
const ITEMS = Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item-${i}-abcdefghij`, price: 12.34 + i }));
const large = (t: number) => ({ t, items: ITEMS });

async function open(port: number, onFrames?: (c: LoadConn, n: number) => void): Promise<LoadConn> {
  const c = new LoadConn(port, "/connect", onFrames);
  await c.open();
  c.answerPings = true;
  while (c.frames < 1) await Bun.sleep(2); // welcome
  return c;
}

/** Publishes as fast as acks come back (16 in flight) for SECONDS; returns publishes/s and server us per publish. */
async function pump(server: ServerProcess, topic: string, frame: Uint8Array, subscribers: number): Promise<{ rate: number; cpuUs: number }> {
  const subs = await Promise.all(Array.from({ length: subscribers }, () => open(server.port)));
  for (const s of subs) s.write(clientFrame(JSON.stringify({ type: "subscribe", topic })));
  while (subs.some((s) => s.frames < 2)) await Bun.sleep(5);
  let acked = 0;
  let pumping = true;
  const pub = await open(server.port, (c, n) => {
    acked += n;
    if (pumping) for (let i = 0; i < n; i++) c.write(frame);
  });
  acked = 0;
  for (let i = 0; i < 16; i++) pub.write(frame);
  await Bun.sleep(1500); // warm-up: the publish path compiled before the window
  const [a0, c0, t0] = [acked, await cpuMicros(server.pid), performance.now()];
  await Bun.sleep(SECONDS * 1000);
  const [a1, c1, t1] = [acked, await cpuMicros(server.pid), performance.now()];
  pumping = false;
  for (const c of [...subs, pub]) c.close();
  return { rate: ((a1 - a0) * 1000) / (t1 - t0), cpuUs: (c1 - c0) / (a1 - a0) };
}

interface Case {
  name: string;
  topic: string;
  data: (t: number) => unknown;
  subscribers: number;
}
const CASES: Case[] = [
  { name: "publish ~60 B, 1 subscriber", topic: "bench.small", data: small, subscribers: 1 },
  { name: "publish ~10 KiB (200 records), 1 subscriber", topic: "bench.large", data: large, subscribers: 1 },
  { name: "fan-out x1,000, ~20 B", topic: "bench", data: (t) => ({ t }), subscribers: quick ? 300 : 1000 },
];

const results: Record<string, Record<Variant, { rate: number; cpuUs: number }[]>> = {};
for (const c of CASES) {
  const frame = clientFrame(JSON.stringify({ type: "publish", topic: c.topic, data: c.data(1), id: 1 }));
  results[c.name] = { plain: [], schema: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of round % 2 === 0 ? (["plain", "schema"] as const) : (["schema", "plain"] as const)) {
      const server = await node(variant);
      try {
        results[c.name]![variant].push(await pump(server, c.topic, frame, c.subscribers));
      } finally {
        await server.kill();
      }
    }
    console.error(`${c.name}: round ${round + 1}/${ROUNDS}`);
  }
}

console.log(`\n${new Date().toISOString().slice(0, 10)}, ${CORES} cores, bun ${Bun.version}, ${ROUNDS} rounds x ${SECONDS} s${quick ? " (quick)" : ""}\n`);
console.log("| case | no definitions: msgs/s, server us/publish | zod schema: msgs/s, server us/publish | CPU/publish ratio (min-max) | rate ratio |");
console.log("| --- | --- | --- | --- | --- |");
for (const c of CASES) {
  const { plain, schema } = results[c.name]!;
  const cpuRatios = plain.map((p, i) => schema[i]!.cpuUs / p.cpuUs);
  const rateRatios = plain.map((p, i) => schema[i]!.rate / p.rate);
  const cell = (runs: { rate: number; cpuUs: number }[]) => `${fmt(median(runs.map((r) => r.rate)))}, ${fmt(median(runs.map((r) => r.cpuUs)), 2)}`;
  console.log(
    `| ${c.name} | ${cell(plain)} | ${cell(schema)} | ${fmt(median(cpuRatios), 2)}x (${fmt(Math.min(...cpuRatios), 2)}-${fmt(Math.max(...cpuRatios), 2)}) | ${fmt(median(rateRatios), 2)}x |`,
  );
}
