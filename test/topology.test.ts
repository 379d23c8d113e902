// The docker-compose topology with real processes instead of containers: a real redis-server, three
// switchboard replicas (the real entry point) and HAProxy with deploy/haproxy.cfg's balancing and health
// checks, pointed at local ports. Skipped where haproxy is not installed (`apt-get install haproxy`).
import { afterAll, describe, expect, test } from "bun:test";
import { Client, freePort, spawnEntry, until, within } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const haproxy = Bun.which("haproxy");
const procs: { kill(signal?: number | NodeJS.Signals): void }[] = [];
let redis: TestRedis | undefined;
afterAll(async () => {
  for (const p of procs) p.kill("SIGKILL");
  await redis?.stop();
});

async function replica(port: number, redisUrl: string) {
  const entry = await spawnEntry({ PORT: String(port), REDIS_URL: redisUrl, LOG_LEVEL: "warn" });
  procs.push(entry.proc);
  return entry;
}

describe.skipIf(haproxy === null)("compose topology with real processes", () => {
  test("HAProxy spreads clients over three replicas; a publish reaches all; a drained replica's clients move", async () => {
    redis = await startRedis();
    const ports = [1, 2, 3].map(() => freePort());
    const replicas = await Promise.all(ports.map((p) => replica(p, redis!.url)));
    const lbPort = freePort();
    const shipped = await Bun.file("deploy/haproxy.cfg").text();
    // Same config, but static local servers instead of Docker DNS discovery.
    const config = shipped
      .replace(/resolvers docker[\s\S]*?\n\n/, "")
      .replace("bind :3000", `bind 127.0.0.1:${lbPort}`)
      .replace(/maxconn \d+/, "maxconn 4000") // within this machine's file limit
      .replace(/  server-template .*\n/, ports.map((p, i) => `  server sb${i + 1} 127.0.0.1:${p} check inter 200ms fall 2 rise 1\n`).join(""));
    const cfgPath = `${process.env.TMPDIR ?? "/tmp"}/switchboard-haproxy-${lbPort}.cfg`;
    await Bun.write(cfgPath, config);
    const lb = Bun.spawn([haproxy!, "-db", "-f", cfgPath], { stdout: "ignore", stderr: "inherit" });
    procs.push(lb);
    // HAProxy is up once it answers health through the frontend.
    const deadline = performance.now() + 5000;
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${lbPort}/healthz`).then((r) => r.ok, () => false);
      if (ok) break;
      if (performance.now() > deadline) throw new Error("HAProxy did not come up");
      await Bun.sleep(50);
    }

    const url = `ws://127.0.0.1:${lbPort}/connect`;
    const clients: Client[] = [];
    const workers = new Set<string>();
    for (let i = 0; i < 9; i++) {
      const c = await Client.open(url);
      const welcome = await c.json();
      if (welcome.type === "welcome") workers.add(welcome.connectionId.split("-")[0]!);
      clients.push(c);
    }
    expect(workers.size).toBe(3); // leastconn: three replicas, three clients each
    for (const c of clients) await c.request({ type: "subscribe", topic: "lb" });
    clients[0]!.send({ type: "publish", topic: "lb", data: "everyone" });
    for (const c of clients) expect(await c.json(5000)).toEqual({ type: "message", topic: "lb", data: "everyone" });

    // Drain one replica: its clients see 1001 and new connections go to the other two.
    replicas[0]!.kill("SIGTERM");
    expect((await within(replicas[0]!.exited(), 8000, "replica exit")).code).toBe(0);
    const again = await Client.open(url);
    expect((await again.json()).type).toBe("welcome");
    await again.request({ type: "subscribe", topic: "lb" });
    const survivors = clients.filter((c) => c.socket.readyState === WebSocket.OPEN);
    expect(survivors.length).toBe(6);
    survivors[0]!.send({ type: "publish", topic: "lb", data: "after drain" });
    expect(await again.json(5000)).toEqual({ type: "message", topic: "lb", data: "after drain" });
    for (const c of [...clients, again]) c.close();
  }, 60_000);
});
