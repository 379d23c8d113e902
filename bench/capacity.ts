// Inputs of the capacity model (docs/capacity.md), each measured here rather than assumed:
//   1. memory per subscription on one node: 2,000 idle connections, then 10 subscriptions each, to distinct topics
//      (a topic per subscription: topic bookkeeping included) and to 10 shared topics (subscriptions alone);
//   2. Redis per operation, on a node with REDIS_URL: commands and Redis CPU per publish (history on and off),
//      per subscribe + unsubscribe, and per presence refresh of one topic.
//      Publishes one at a time and in bursts of 10 per tick (one Redis command per topic per tick), and a plain
//      publish with K more nodes subscribed to the topic (what each extra node costs Redis).
// CPU per message and per delivery come from `bun run bench` (bench/RESULTS.md).
// Run: bun bench/capacity.ts [--only=redis].
import { RedisClient } from "bun";
import { clientFrame, connectAll, cpuMicros, LoadConn, redisCommands, rssBytes, spawnServer, startRedis, waitReady, type ServerProcess } from "./lib.ts";

const CONNS = 2000;
const PER_CONN = 10;
const fmt = (x: number, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
const pinned = navigator.hardwareConcurrency > 1 ? 0 : null;

async function open(port: number, count: number): Promise<LoadConn[]> {
  const conns = await connectAll(port, count);
  while (conns.some((c) => c.frames < 1)) await Bun.sleep(10); // welcome
  return conns;
}

const subscribe = (topic: string) => clientFrame(JSON.stringify({ type: "subscribe", topic }));

// 1. Memory per subscription.
async function memoryPerSubscription(shared: boolean): Promise<{ rss: number; heap: number }> {
  const server = await spawnServer(["bun", "bench/servers/switchboard.ts"], { HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "warn", MAX_TOPICS_PER_CONNECTION: "100" }, pinned);
  try {
    const conns = await open(server.port, CONNS);
    await Bun.sleep(1000);
    const heap0 = await server.heap();
    const rss0 = await rssBytes(server.pid);
    for (const [i, c] of conns.entries()) for (let k = 0; k < PER_CONN; k++) c.write(subscribe(shared ? `shared.${k}` : `t.${i}.${k}`));
    while (conns.some((c) => c.frames < 1 + PER_CONN)) await Bun.sleep(10);
    await Bun.sleep(1000);
    const heap1 = await server.heap();
    const rss1 = await rssBytes(server.pid);
    for (const c of conns) c.close();
    const n = CONNS * PER_CONN;
    return { rss: (rss1 - rss0) / n, heap: (heap1.heapSize - heap0.heapSize) / n };
  } finally {
    await server.kill();
  }
}

// 2. Redis per operation.
interface RedisCost {
  commands: number;
  redisCpuUs: number;
}
async function redisCosts(): Promise<Record<string, RedisCost>> {
  const out: Record<string, RedisCost> = {};
  for (const history of [true, false]) {
    const redis = await startRedis();
    const server: ServerProcess = await spawnServer(
      ["bun", "src/index.ts"],
      { HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "warn", REDIS_URL: redis.url, HISTORY_SIZE: history ? "100" : "0", PRESENCE_TTL_MS: "3000", NODE_ANNOUNCE_MS: "600000" },
      pinned,
    );
    try {
      await waitReady(server.port);
      const measure = async (what: string, count: number, run: () => Promise<void>) => {
        const [k0, c0] = [await redisCommands(redis.url), await cpuMicros(redis.pid)];
        await run();
        const [k1, c1] = [await redisCommands(redis.url), await cpuMicros(redis.pid)];
        out[what] = { commands: (k1 - k0 - 1) / count, redisCpuUs: (c1 - c0) / count }; // less one INFO
      };
      // Publishes: one connection keeping `window` in flight (written `burst` at a time, so a burst is read in one
      // tick: the node sends it to Redis as one command), 20,000 of them, acks counted.
      const N = 20_000;
      const [pub] = await open(server.port, 1);
      const frame = clientFrame(JSON.stringify({ type: "publish", topic: "cap.p", data: { text: "hello, everyone in this room" }, id: 1 }));
      const publishes = (burst: number, window: number) => async () => {
        const chunk = Buffer.concat(Array.from({ length: burst }, () => frame));
        let sent = 0;
        const start = pub!.frames;
        const pump = () => {
          while (sent < N && sent - (pub!.frames - start) + burst <= window) {
            pub!.write(chunk);
            sent += burst;
          }
        };
        pump();
        while (pub!.frames - start < N) {
          await Bun.sleep(1);
          pump();
        }
      };
      const mode = `history ${history ? "on" : "off"}`;
      await measure(`publish (${mode}), one at a time, 16 in flight`, N, publishes(1, 16));
      await measure(`publish (${mode}), bursts of 10 per tick`, N, publishes(10, 20));
      if (!history) {
        // The same topic subscribed by K more nodes (a subscriber connection each, as a node holds): Redis writes
        // each PUBLISH to every one of them.
        for (const k of [4, 16]) {
          const nodes = await Promise.all(Array.from({ length: k }, () => subscriberConnection(redis.url, "sb:cap.p")));
          await measure(`publish (${mode}), one at a time, ${k} more nodes subscribed`, N, publishes(1, 16));
          for (const node of nodes) node.close();
        }
        continue;
      }
      // Subscribe (answered: Redis SUBSCRIBE, the topic's position, the presence entry) then unsubscribe of a
      // fresh topic each, 2,000 times, 100 at a time. An unsubscribe sent before `subscribed` would cancel the
      // subscribe before Redis hears of it, so each waits for the answers of the step before.
      const S = 2000;
      await measure("subscribe + unsubscribe", S, async () => {
        for (let i = 0; i < S; i += 100) {
          let before = pub!.frames;
          for (let k = i; k < i + 100; k++) pub!.write(subscribe(`cap.s.${k}`));
          while (pub!.frames - before < 100) await Bun.sleep(1);
          before = pub!.frames;
          for (let k = i; k < i + 100; k++) pub!.write(clientFrame(JSON.stringify({ type: "unsubscribe", topic: `cap.s.${k}` })));
          while (pub!.frames - before < 100) await Bun.sleep(1);
        }
        await Bun.sleep(200); // the presence removals and UNSUBSCRIBEs they started
      });
      // Presence refresh: 1,000 topics with an entry each, refreshed every PRESENCE_TTL_MS / 3 = 1 s, over 5 s.
      const holders = await open(server.port, 10);
      for (const [i, c] of holders.entries()) for (let k = 0; k < 100; k++) c.write(subscribe(`cap.r.${i}.${k}`));
      while (holders.some((c) => c.frames < 101)) await Bun.sleep(10);
      await Bun.sleep(1500);
      await measure("presence refresh, per topic and round", 5 * 1000, () => Bun.sleep(5000));
      for (const c of [...holders, pub!]) c.close();
    } finally {
      await server.kill();
      await redis.stop();
    }
  }
  return out;
}

/** A Redis connection subscribed to `channel`, standing for one more node holding the topic. */
async function subscriberConnection(url: string, channel: string): Promise<RedisClient> {
  const client = new RedisClient(url);
  await client.connect();
  await client.subscribe(channel, () => {});
  return client;
}

console.log(`\n${new Date().toISOString().slice(0, 10)}, ${navigator.hardwareConcurrency} cores, bun ${Bun.version}, ${fmt(CONNS)} connections x ${PER_CONN} subscriptions\n`);
if (!process.argv.includes("--only=redis")) {
  const distinct = await memoryPerSubscription(false);
  const shared = await memoryPerSubscription(true);
  console.log("| memory | server RSS bytes/subscription | JS heap bytes/subscription |");
  console.log("| --- | --- | --- |");
  console.log(`| a topic per subscription (topic bookkeeping included) | ${fmt(distinct.rss)} | ${fmt(distinct.heap)} |`);
  console.log(`| 10 shared topics (the subscription alone) | ${fmt(shared.rss)} | ${fmt(shared.heap)} |`);
}
const redis = await redisCosts();
console.log("\n| Redis, per operation | commands | Redis CPU us |");
console.log("| --- | --- | --- |");
for (const [what, cost] of Object.entries(redis)) console.log(`| ${what} | ${fmt(cost.commands, 1)} | ${fmt(cost.redisCpuUs, 1)} |`);
