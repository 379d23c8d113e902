// What the web console's polling costs the server (issue 13): one console open on each view, polling once a
// second as it does, against a node holding 10,000 topics (20 connections x 500) and a topic of 1,000 members.
// Reports server CPU per poll round (measured over many rounds, idle CPU subtracted) and, with Redis, the Redis
// commands one round sends. Run: bun bench/console.ts [--quick]. Figures are relative: 2 shared cores.
import { clientFrame, connectAll, cpuMicros, LoadConn, redisCommands, spawnServer, startRedis, type ServerProcess } from "./lib.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 30 : 200;
const KEY = "console-bench-key-0123";
const fmt = (x: number, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });

async function load(port: number): Promise<LoadConn[]> {
  const conns = await connectAll(port, 20);
  for (const [i, c] of conns.entries()) for (let k = 0; k < 500; k++) c.write(clientFrame(JSON.stringify({ type: "subscribe", topic: `room.${i}.${k}` })));
  // 1,000 members of one topic (one subscription each).
  const members = await connectAll(port, 1000);
  for (const [i, c] of members.entries()) c.write(clientFrame(JSON.stringify({ type: "subscribe", topic: "big", info: { name: `member-${i}` } })));
  while (conns.some((c) => c.frames < 501) || members.some((c) => c.frames < 2)) await Bun.sleep(20);
  return [...conns, ...members];
}

const get = (port: number, path: string) => fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${KEY}` } }).then((r) => r.arrayBuffer());
const VIEWS: Record<string, string[]> = {
  nodes: ["/api/nodes"],
  "topics (10,000 listed, 1,000 shown)": ["/api/nodes", "/api/topics"],
  "topic of 1,000 members": ["/api/nodes", "/api/presence?topic=big", "/api/history?topic=big&limit=20"],
};

async function measure(redis: string | undefined): Promise<Record<string, { cpuUs: number; redisCmds: number }>> {
  const env: Record<string, string> = { HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "warn", API_KEY: KEY, MAX_TOPICS_PER_CONNECTION: "500" };
  if (redis !== undefined) env.REDIS_URL = redis;
  const server: ServerProcess = await spawnServer(["bun", "src/index.ts"], env, navigator.hardwareConcurrency > 1 ? 0 : null);
  const out: Record<string, { cpuUs: number; redisCmds: number }> = {};
  try {
    const conns = await load(server.port);
    await Bun.sleep(1000);
    for (const [view, paths] of Object.entries(VIEWS)) {
      for (let i = 0; i < 5; i++) await Promise.all(paths.map((p) => get(server.port, p))); // warm-up
      const k0 = redis === undefined ? 0 : await redisCommands(redis);
      const c0 = await cpuMicros(server.pid);
      // Rounds back to back (CPU ticks are 10 ms: only the total over many rounds means anything).
      for (let i = 0; i < ROUNDS; i++) await Promise.all(paths.map((p) => get(server.port, p)));
      const c1 = await cpuMicros(server.pid);
      const k1 = redis === undefined ? 0 : await redisCommands(redis);
      out[view] = { cpuUs: (c1 - c0) / ROUNDS, redisCmds: redis === undefined ? 0 : (k1 - k0 - 2) / ROUNDS };
    }
    for (const c of conns) c.close();
  } finally {
    await server.kill();
  }
  return out;
}

const memory = await measure(undefined);
const redis = await startRedis();
let withRedis: Awaited<ReturnType<typeof measure>>;
try {
  withRedis = await measure(redis.url);
} finally {
  await redis.stop();
}
console.log(`\n${new Date().toISOString().slice(0, 10)}, ${navigator.hardwareConcurrency} cores, bun ${Bun.version}, ${ROUNDS} rounds per view${quick ? " (quick)" : ""}\n`);
console.log("| console view (one poll round a second) | memory: server CPU ms/round (share of a core at 1/s) | Redis: server CPU ms/round | Redis commands/round |");
console.log("| --- | --- | --- | --- |");
for (const view of Object.keys(VIEWS)) {
  const m = memory[view]!;
  const r = withRedis[view]!;
  console.log(`| ${view} | ${fmt(m.cpuUs / 1000, 2)} (${fmt(m.cpuUs / 10_000, 2)}%) | ${fmt(r.cpuUs / 1000, 2)} (${fmt(r.cpuUs / 10_000, 2)}%) | ${fmt(r.redisCmds)} |`);
}
