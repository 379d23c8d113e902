// The docker-compose topology with real processes instead of containers: a real redis-server, three
// switchboard replicas (the real entry point) and HAProxy with deploy/haproxy.cfg's balancing and health
// checks and its per-source connection cap, pointed at local ports. Skipped where haproxy is not installed (`apt-get install haproxy`).
//
// Deterministic under load: the test waits for HAProxy's own view of its servers (its stats socket) instead
// of timing, and health checks get a long answer timeout, so a replica slow to answer on a busy machine is not
// marked down (with only `inter 200ms` as the timeout, two slow answers in a row flapped a replica out).
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, freePort, spawnEntry, until, within } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const haproxy = Bun.which("haproxy");
const procs: { kill(signal?: number | NodeJS.Signals): void }[] = [];
let redis: TestRedis | undefined;
let workDir: string | undefined;
afterAll(async () => {
  for (const p of procs) p.kill("SIGKILL");
  await redis?.stop();
  if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
});

async function replica(port: number, redisUrl: string) {
  const entry = await spawnEntry({ PORT: String(port), REDIS_URL: redisUrl, LOG_LEVEL: "warn" });
  procs.push(entry.proc);
  return entry;
}

/** deploy/haproxy.cfg with static local servers instead of Docker DNS discovery, and a stats socket. */
function localConfig(shipped: string, lbPort: number, ports: number[], statsSocket: string): string {
  let config = shipped;
  const edit = (pattern: RegExp, replacement: string) => {
    if (!pattern.test(config)) throw new Error(`deploy/haproxy.cfg no longer matches ${pattern}: update this test`);
    config = config.replace(pattern, replacement);
  };
  edit(/^resolvers docker\n(?:[ \t]+.*\n)*/m, "");
  edit(/^(\s*)bind \S*:3000.*$/m, `$1bind 127.0.0.1:${lbPort}`);
  edit(/^global\n/m, `global\n  stats socket ${statsSocket} mode 600 level admin\n`);
  config = config.replace(/^(\s*)maxconn \d+/m, "$1maxconn 4000"); // within this machine's file limit
  // Fast checks so a drained replica leaves quickly, but a long answer timeout so a slow answer is no failure.
  edit(
    /^(\s*)server-template .*$/m,
    `$1timeout check 10s\n` + ports.map((p, i) => `$1server sb${i + 1} 127.0.0.1:${p} check inter 100ms fall 2 rise 1`).join("\n"),
  );
  return config;
}

interface ServerView {
  status: string;
  check: string;
  sessions: number;
}

/** `show stat` on HAProxy's stats socket (CSV). */
function statsCsv(socket: string): Promise<string> {
  return within(
    new Promise<string>((resolve, reject) => {
      let out = "";
      const conn = net.createConnection(socket);
      conn.on("data", (chunk) => (out += chunk));
      conn.on("end", () => resolve(out));
      conn.on("error", reject);
      conn.write("show stat\n");
    }),
    3000,
    "haproxy show stat",
  );
}

/** HAProxy's view of the backend's servers, from `show stat` on its stats socket. */
async function haproxyView(socket: string): Promise<Map<string, ServerView>> {
  const csv = await statsCsv(socket);
  const [header, ...rows] = csv.trim().split("\n");
  const columns = header!.replace(/^# /, "").split(",");
  const at = (name: string) => columns.indexOf(name);
  const view = new Map<string, ServerView>();
  for (const row of rows) {
    const f = row.split(",");
    if (f[at("pxname")] !== "switchboard" || !/^sb\d$/.test(f[at("svname")]!)) continue;
    view.set(f[at("svname")]!, { status: f[at("status")]!, check: f[at("check_status")]!, sessions: Number(f[at("scur")]) });
  }
  return view;
}

async function untilView(socket: string, check: (view: Map<string, ServerView>) => boolean, what: string) {
  let last = new Map<string, ServerView>();
  const deadline = performance.now() + 10_000;
  for (;;) {
    last = await haproxyView(socket).catch(() => last);
    if (check(last)) return;
    if (performance.now() > deadline) throw new Error(`HAProxy never saw ${what}: ${JSON.stringify([...last])}`);
    await Bun.sleep(50);
  }
}

function openTcp(port: number): Promise<net.Socket> {
  return within(
    new Promise<net.Socket>((resolve, reject) => {
      const socket = net.createConnection({ host: "127.0.0.1", port }, () => resolve(socket));
      socket.on("error", reject);
    }),
    3000,
    "tcp connect",
  );
}

/** GET /healthz through the load balancer on a fresh connection: its status line, or "refused" when closed unanswered. */
async function healthzThrough(port: number): Promise<string> {
  return within(
    new Promise<string>((resolve) => {
      const socket = net.createConnection({ host: "127.0.0.1", port });
      let reply = "";
      socket.on("data", (chunk) => {
        reply += chunk;
        if (reply.includes("\r\n")) {
          resolve(reply.slice(0, reply.indexOf("\r\n")));
          socket.destroy();
        }
      });
      socket.on("close", () => resolve(reply === "" ? "refused" : reply));
      socket.on("error", () => resolve("refused")); // reset on accept
      socket.write("GET /healthz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    }),
    3000,
    "healthz through HAProxy",
  );
}

/** Connections HAProxy's frontend holds now (`scur` of ws_in). */
async function frontendSessions(socket: string): Promise<number> {
  const csv = await statsCsv(socket);
  const [header, ...rows] = csv.trim().split("\n");
  const columns = header!.replace(/^# /, "").split(",");
  const row = rows.map((r) => r.split(",")).find((f) => f[columns.indexOf("pxname")] === "ws_in" && f[columns.indexOf("svname")] === "FRONTEND");
  return Number(row?.[columns.indexOf("scur")] ?? -1);
}

const prefixOf = (frame: { type: string; connectionId?: string }) => frame.connectionId?.split("-")[0] ?? `(${frame.type})`;

describe.skipIf(haproxy === null)("compose topology with real processes", () => {
  test("HAProxy spreads clients over three replicas; a publish reaches all; a drained replica's clients move", async () => {
    redis = await startRedis();
    workDir = mkdtempSync(join(tmpdir(), "switchboard-haproxy-"));
    const ports = [1, 2, 3].map(() => freePort());
    const replicas = await Promise.all(ports.map((p) => replica(p, redis!.url)));
    // History is on (the default): a replica refuses publishes (unavailable) until its Redis link is up, which
    // /readyz reports; HAProxy's check is /healthz, so wait for each replica's readiness here.
    for (const port of ports) {
      await until(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 10_000, `replica on ${port} ready`);
    }
    // Each replica's connection-id prefix, straight from the replica: tells which one HAProxy picked.
    const prefixes: string[] = [];
    for (const port of ports) {
      const direct = await Client.open(`ws://127.0.0.1:${port}/connect`);
      prefixes.push(prefixOf(await direct.json()));
      direct.close();
      await within(direct.closed, 3000, "direct client closed");
    }

    const lbPort = freePort();
    const statsSocket = join(workDir, "stats.sock");
    const cfgPath = join(workDir, "haproxy.cfg");
    await Bun.write(cfgPath, localConfig(await Bun.file("deploy/haproxy.cfg").text(), lbPort, ports, statsSocket));
    const lb = Bun.spawn([haproxy!, "-db", "-f", cfgPath], { stdout: "ignore", stderr: "inherit" });
    procs.push(lb);
    // Up = every server has passed a real health check (servers start "UP" before their first check).
    await untilView(statsSocket, (v) => v.size === 3 && [...v.values()].every((s) => s.status === "UP" && s.check === "L7OK"), "three healthy servers");

    const url = `ws://127.0.0.1:${lbPort}/connect`;
    const clients: Client[] = [];
    const holder = new Map<Client, string>();
    for (let i = 0; i < 9; i++) {
      const c = await Client.open(url);
      holder.set(c, prefixOf(await c.json()));
      clients.push(c);
    }
    // leastconn with clients opened one after another: every replica is used and none holds more than one
    // client over another (9 clients: 3 each).
    const perReplica = prefixes.map((p) => clients.filter((c) => holder.get(c) === p).length);
    expect(perReplica.reduce((a, b) => a + b)).toBe(clients.length);
    expect(Math.max(...perReplica) - Math.min(...perReplica)).toBeLessThanOrEqual(1);
    expect(Math.min(...perReplica)).toBeGreaterThan(0);
    // ...and HAProxy counts the same sessions per server.
    const view = await haproxyView(statsSocket);
    expect(ports.map((_, i) => view.get(`sb${i + 1}`)?.sessions)).toEqual(perReplica);

    // The topic's history lives in Redis: every replica answers with the same epoch, and the same offsets.
    const first = await clients[0]!.request({ type: "subscribe", topic: "lb" });
    const epoch = (first as { epoch: string }).epoch;
    expect(first).toEqual({ type: "subscribed", topic: "lb", epoch: expect.stringMatching(/^[0-9a-z]{8}$/), offset: 0 });
    for (const c of clients.slice(1)) expect(await c.request({ type: "subscribe", topic: "lb" })).toEqual({ type: "subscribed", topic: "lb", epoch, offset: 0 });
    clients[0]!.send({ type: "publish", topic: "lb", data: "everyone" });
    for (const c of clients) expect(await c.json(5000)).toEqual({ type: "message", topic: "lb", data: "everyone", offset: 1 });

    // Drain replica 1: exactly its clients see 1001, it exits 0, HAProxy marks it down.
    const drained = clients.filter((c) => holder.get(c) === prefixes[0]);
    const survivors = clients.filter((c) => holder.get(c) !== prefixes[0]);
    replicas[0]!.kill("SIGTERM");
    for (const c of drained) expect(await within(c.closed, 5000, "drained client closed")).toEqual({ code: 1001, reason: "server shutting down" });
    expect((await within(replicas[0]!.exited(), 8000, "replica exit")).code).toBe(0);
    // A client reconnecting at once lands on a live replica, whether HAProxy has seen the exit yet (then its
    // refused connection is redispatched) or not.
    const again = await Client.open(url);
    const welcome = await again.json();
    expect(prefixes.slice(1)).toContain(prefixOf(welcome));
    expect(await again.request({ type: "subscribe", topic: "lb" })).toEqual({ type: "subscribed", topic: "lb", epoch, offset: 1 });
    await untilView(statsSocket, (v) => v.get("sb1")?.status === "DOWN" && v.get("sb2")?.status === "UP" && v.get("sb3")?.status === "UP", "sb1 down, sb2 and sb3 up");

    // The survivors were not touched: each still receives, across both remaining replicas.
    survivors[0]!.send({ type: "publish", topic: "lb", data: "after drain" });
    for (const c of [...survivors, again]) expect(await c.json(5000)).toEqual({ type: "message", topic: "lb", data: "after drain", offset: 2 });
    for (const c of [...survivors, again]) expect(c.socket.readyState).toBe(WebSocket.OPEN);
    for (const c of [...clients, again]) c.close();
    await until(() => [...clients, again].every((c) => c.socket.readyState === WebSocket.CLOSED), 5000, "clients closed");

    // Slowloris at the load balancer: 200 connections from one address that never send a request fill its
    // per-source cap; the next one is refused on accept (no answer), and a freed place is usable again.
    await until(async () => (await frontendSessions(statsSocket)) === 0, 5000, "HAProxy to see the clients go");
    const idle = await Promise.all(Array.from({ length: 200 }, () => openTcp(lbPort)));
    await until(async () => (await frontendSessions(statsSocket)) === 200, 5000, "200 idle connections at HAProxy");
    expect(await healthzThrough(lbPort)).toBe("refused");
    idle[0]!.destroy();
    await until(async () => (await healthzThrough(lbPort)) === "HTTP/1.1 200 OK", 4000, "a freed place");
    for (const socket of idle) socket.destroy();
  }, 60_000);
});
