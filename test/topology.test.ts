// The docker-compose topology with real processes instead of containers: a real redis-server, three
// switchboard replicas (the real entry point) and HAProxy with deploy/haproxy.cfg's balancing and health
// checks, pointed at local ports. Skipped where haproxy is not installed (`apt-get install haproxy`).
import { afterAll, describe, expect, test } from "bun:test";
import { Client, until, within } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const haproxy = Bun.which("haproxy");
const procs: ReturnType<typeof Bun.spawn>[] = [];
let redis: TestRedis | undefined;
afterAll(async () => {
  for (const p of procs) p.kill("SIGKILL");
  await redis?.stop();
});

async function freePort(): Promise<number> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

async function replica(port: number, redisUrl: string) {
  const proc = Bun.spawn(["bun", "run", "src/index.ts"], {
    env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", REDIS_URL: redisUrl, LOG_LEVEL: "warn" },
    stdout: "pipe",
    stderr: "inherit",
  });
  procs.push(proc);
  const reader = proc.stdout.getReader();
  let out = "";
  while (!out.includes("listening")) {
    const { value, done } = await within(reader.read(), 10_000, "replica start");
    if (done) throw new Error(out);
    out += new TextDecoder().decode(value);
  }
  return proc;
}

describe.skipIf(haproxy === null)("compose topology with real processes", () => {
  test("HAProxy spreads clients over three replicas; a publish reaches all; a drained replica's clients move", async () => {
    redis = await startRedis();
    const ports = await Promise.all([1, 2, 3].map(() => freePort()));
    const replicas = await Promise.all(ports.map((p) => replica(p, redis!.url)));
    const lbPort = await freePort();
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
    expect(await within(replicas[0]!.exited, 8000, "replica exit")).toBe(0);
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
