// What history costs, each figure side by side with history off in the same run (interleaved rounds, medians
// with min-max):
//   1. memory broker, CPU per publish: HISTORY_SIZE=100 vs 0; 1,000 topics x 1 subscriber, one publisher
//      keeping 64 publishes with ids in flight round-robin over the topics (acks drive the window).
//   2. memory broker, bytes per stored message: RSS, JS heap (after a full GC) and the store's own
//      `switchboard_history_bytes` before and after 1,000,000 publishes of ~100 B over 10,000 topics, against
//      the same publishes with HISTORY_SIZE=0.
//   3. Redis, publishes/s and redis-server CPU per 1,000 publishes: the Lua append (HISTORY_SIZE=100) vs plain
//      pub/sub (HISTORY_SIZE=0); one node, one subscriber, 64 publishes in flight.
//   4. Redis, two nodes: publish (node A) -> receive (node B) latency at a fixed rate, history on vs off.
//   5. Recovery of 10,000 missed messages (memory broker and Redis): time from the subscribe with `since` to
//      the 10,000th message, checking `recovered: true` and offsets 1..10,000 in order.
// Run: bun run bench:history [--rounds=N] [--only=cpu,memory,redis,latency,recovery] [--smoke]
// (--smoke: tiny counts, one round, to check that the bench works; its figures mean nothing).
// Servers are bench/servers/switchboard.ts (the real server plus a heap report with a full GC on SIGUSR2).
// With 2+ cores this process runs on the last CPU and single servers (1, 2) on CPU 0; the Redis scenarios
// (two nodes + redis-server) float over all CPUs, so read their figures as relative.
import { clientFrame, cpuMicros, LoadConn, median, rssBytes, spawnServer, type ServerProcess } from "./lib.ts";
import { ENTRY_OVERHEAD_BYTES, TOPIC_OVERHEAD_BYTES } from "../src/history/memory.ts";

const argv = process.argv.slice(2);
const smoke = argv.includes("--smoke");
const ROUNDS = smoke ? 1 : Math.max(2, Number(argv.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 3));
const only = argv.find((a) => a.startsWith("--only="))?.slice(7).split(",");
const wants = (name: string) => only === undefined || only.includes(name);

// Sizes (smoke: small enough that the whole run takes well under 20 s).
const CPU_TOPICS = smoke ? 50 : 1000;
const CPU_WARM_PUBLISHES = smoke ? 2000 : 50_000;
const SECONDS = smoke ? 0.5 : 3;
const WINDOW = 64;
const MEM_TOPICS = smoke ? 500 : 10_000;
const MEM_PER_TOPIC = smoke ? 20 : 100; // <= HISTORY_SIZE (100): every message stays stored
const MEM_WINDOW = 256;
const MEM_MAX_BYTES = 1024 * 1024 * 1024;
const REDIS_WARM_MS = smoke ? 200 : 1000;
const LATENCY_RATE = 1000; // publishes per second
const LATENCY_WARM_S = smoke ? 0.2 : 1;
const RECOVER_MESSAGES = 10_000; // fast enough for --smoke too, which then checks the real budget arithmetic
const RECOVER_HISTORY_SIZE = 10_000;
const RECOVER_BACKPRESSURE = 8 * 1024 * 1024; // the recovery step may send half of it
const DATA = { v: "x".repeat(94) }; // {"v":"xxx..."}: 102 bytes of JSON data per message
const DATA_JSON = JSON.stringify(DATA);

const cores = Number((await Bun.$`nproc --all`.text()).trim());
const pinned = cores > 1;
const LOAD_CPU = cores - 1;
if (pinned) await Bun.$`taskset -a -p -c ${LOAD_CPU} ${process.pid}`.quiet();
/** Single servers under measurement (scenarios 1, 2) get CPU 0 to themselves. */
const SERVER_CPU = pinned ? 0 : null;
/** Anything else floats over every CPU (children would otherwise inherit this process's pinning). */
const floating = (cmd: string[]) => (pinned ? ["taskset", "-c", `0-${cores - 1}`, ...cmd] : cmd);
const progress = (line: string) => console.error(`[history] ${line}`);

// --- processes ------------------------------------------------------------------------------------------

/** Every process started here, so an error or Ctrl-C leaves none behind. */
const live = new Set<number>();
const killAll = () => {
  for (const pid of live) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
};
process.on("SIGINT", () => (killAll(), process.exit(130)));

const BASE_ENV = { PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn" };

interface Node extends ServerProcess {
  stop(): Promise<void>;
}

async function startNode(env: Record<string, string>, cpu: number | "float"): Promise<Node> {
  const cmd = ["bun", "bench/servers/switchboard.ts"];
  const server = cpu === "float" ? await spawnServer(floating(cmd), { ...BASE_ENV, ...env }, null) : await spawnServer(cmd, { ...BASE_ENV, ...env }, cpu);
  live.add(server.pid);
  // With Redis, wait for the broker (and its scripts): before that, publishes are refused and subscribes get
  // no position. /readyz is 200 once the Redis connection is up.
  if (env.REDIS_URL !== undefined) {
    const deadline = Date.now() + 10_000;
    while ((await fetch(`http://127.0.0.1:${server.port}/readyz`).then((r) => r.status, () => 0)) !== 200) {
      if (Date.now() > deadline) throw new Error("node not ready within 10 s (Redis)");
      await Bun.sleep(20);
    }
  }
  return Object.assign(server, { stop: async () => (await server.kill(), void live.delete(server.pid)) });
}

interface Redis {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** A test-owned redis-server on a free port, without persistence; resolves once it answers PING. */
async function startRedis(): Promise<Redis> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const proc = Bun.spawn(floating(["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]), {
    stdout: "ignore",
    stderr: "inherit",
  });
  live.add(proc.pid);
  const stop = async () => (proc.kill("SIGKILL"), await proc.exited, void live.delete(proc.pid));
  const deadline = Date.now() + 5000;
  while (!(await redisPong(port))) {
    if (Date.now() > deadline || proc.exitCode !== null) {
      await stop();
      throw new Error(`redis-server on port ${port} did not answer PING within 5 s`);
    }
    await Bun.sleep(20);
  }
  return { url: `redis://127.0.0.1:${port}`, pid: proc.pid, stop };
}

async function redisPong(port: number): Promise<boolean> {
  let answered!: (ok: boolean) => void;
  const result = new Promise<boolean>((r) => (answered = r));
  try {
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (s) => void s.write("PING\r\n"),
        data: (s, chunk) => {
          answered(Buffer.from(chunk).toString().startsWith("+PONG"));
          s.end();
        },
        close: () => answered(false),
        error: () => answered(false),
      },
    });
    const ok = await Promise.race([result, Bun.sleep(1000).then(() => false)]);
    socket.end();
    return ok;
  } catch {
    return false; // not listening yet
  }
}

// --- load pieces ------------------------------------------------------------------------------------------

/** Polls `done` every 5 ms; throws naming `what` after `ms`. */
async function until(done: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** Opens `n` /connect connections (in batches), each subscribed to `topicOf(i)`; resolves once all are. */
async function subscribers(port: number, n: number, topicOf: (i: number) => string): Promise<LoadConn[]> {
  const conns = Array.from({ length: n }, () => new LoadConn(port, "/connect"));
  for (let i = 0; i < n; i += 100) await Promise.all(conns.slice(i, i + 100).map((c) => c.open()));
  conns.forEach((c, i) => {
    c.answerPings = true;
    c.write(clientFrame(JSON.stringify({ type: "subscribe", topic: topicOf(i) })));
  });
  await until(() => conns.every((c) => c.frames >= 2), 20_000, `${n} subscribers' welcome + subscribed`);
  return conns;
}

const publishFrame = (topic: string, id?: number) => clientFrame(JSON.stringify({ type: "publish", topic, data: DATA, ...(id === undefined ? {} : { id }) }));

/**
 * One publisher connection keeping a window of publishes (with ids) in flight: every frame the server sends
 * it after the welcome is an ack (it subscribes to nothing), and each ack lets one more publish go. Frames are
 * taken round-robin from `frames`. Errors count as acks too: each scenario checks deliveries or stored
 * messages afterwards, and reads `switchboard_errors_total`.
 */
class Publisher {
  sent = 0;
  acked = 0;
  private window = 0;
  private limit = 0;
  private running = false;
  private started = false;
  private next = 0;
  readonly conn: LoadConn;

  constructor(port: number, private readonly frames: Uint8Array[]) {
    this.conn = new LoadConn(port, "/connect", (_c, n) => {
      if (!this.started) return;
      this.acked += n;
      this.fill();
    });
  }

  async open(): Promise<this> {
    await this.conn.open();
    this.conn.answerPings = true;
    await until(() => this.conn.frames >= 1, 5000, "the publisher's welcome");
    this.started = true;
    return this;
  }

  /** Keeps `window` in flight until `limit` publishes were sent in all. */
  run(window: number, limit = Number.POSITIVE_INFINITY): void {
    this.window = window;
    this.limit = limit;
    this.running = true;
    this.fill();
  }

  stop(): void {
    this.running = false;
  }

  drained(ms: number): Promise<void> {
    return until(() => this.acked >= this.sent || this.conn.closed, ms, `acks of ${this.sent} publishes (have ${this.acked})`);
  }

  private fill(): void {
    if (!this.running) return;
    const want = Math.min(this.limit, this.acked + this.window) - this.sent;
    if (want <= 0) return;
    const parts: Uint8Array[] = [];
    for (let i = 0; i < want; i++) {
      parts.push(this.frames[this.next]!);
      this.next = (this.next + 1) % this.frames.length;
    }
    this.conn.write(want === 1 ? parts[0]! : Buffer.concat(parts));
    this.sent += want;
  }
}

/** The server's own metrics (GET /metrics): every unlabeled and labeled sample, by full name. */
async function metrics(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

const errorFrames = (m: Map<string, number>) => [...m].filter(([k]) => k.startsWith("switchboard_errors_total")).reduce((s, [, v]) => s + v, 0);

/** Full GC in the server (its SIGUSR2 heap report runs Bun.gc(true)), a pause for the allocator, again. */
async function settle(server: ServerProcess): Promise<{ heapBytes: number; rssBytes: number }> {
  await server.heap();
  await Bun.sleep(smoke ? 100 : 1000);
  const heap = await server.heap();
  return { heapBytes: heap.heapSize, rssBytes: await rssBytes(server.pid) };
}

// --- statistics and output ----------------------------------------------------------------------------------

const fmt = (x: number, d = 0) => (Number.isFinite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "n/a");
/** `median [min-max]` */
const stat = (xs: number[], d = 0) => (xs.length === 1 ? fmt(xs[0]!, d) : `${fmt(median(xs), d)} [${fmt(Math.min(...xs), d)}-${fmt(Math.max(...xs), d)}]`);
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const ratios = (on: number[], off: number[]) => on.map((x, i) => x / off[i]!);

const summary: string[] = [];
const out = (line = "") => summary.push(line);
const failures: string[] = [];
const fail = (what: string) => {
  failures.push(what);
  if (summary.at(-1)?.startsWith("|")) out(); // end the table first: a text line right after one joins it
  out(`**FAILED: ${what}**`);
  progress(`FAILED: ${what}`);
};

/** Runs `runOnce(mode, round)` for every mode in every round, interleaved (A B, A B, ...). */
async function interleave<M extends string, R>(name: string, modes: readonly M[], runOnce: (mode: M) => Promise<R>): Promise<Record<M, R[]>> {
  const runs = Object.fromEntries(modes.map((m) => [m, [] as R[]])) as Record<M, R[]>;
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of modes) {
      const r = await runOnce(mode);
      runs[mode].push(r);
      progress(`${name} round ${round} ${mode}: ${JSON.stringify(r, (_, v) => (typeof v === "number" ? +v.toFixed(2) : v))}`);
    }
  }
  return runs;
}

// --- 1. memory broker: CPU per publish ----------------------------------------------------------------------

interface CpuRun {
  publishesPerSec: number;
  serverUsPerPublish: number;
  loadCpuShare: number;
  lost: number;
  errors: number;
}

async function cpuRun(historySize: number): Promise<CpuRun> {
  const server = await startNode({ HISTORY_SIZE: String(historySize) }, SERVER_CPU ?? "float");
  const conns: LoadConn[] = [];
  try {
    const topic = (i: number) => `h${i}`;
    conns.push(...(await subscribers(server.port, CPU_TOPICS, topic)));
    const pub = await new Publisher(
      server.port,
      Array.from({ length: CPU_TOPICS }, (_, i) => publishFrame(topic(i), 1)),
    ).open();
    conns.push(pub.conn);
    // JIT warm-up on the measured path itself: every publish here runs the server's JS.
    pub.run(WINDOW, CPU_WARM_PUBLISHES);
    await until(() => pub.acked >= CPU_WARM_PUBLISHES, 60_000, "warm-up publishes");
    pub.run(WINDOW);
    await Bun.sleep(smoke ? 50 : 200);
    const a0 = pub.acked;
    const cpu0 = await cpuMicros(server.pid);
    const self0 = process.cpuUsage();
    const t0 = performance.now();
    await Bun.sleep(SECONDS * 1000);
    const a1 = pub.acked;
    const cpu1 = await cpuMicros(server.pid);
    const elapsedUs = (performance.now() - t0) * 1000;
    const self = process.cpuUsage(self0);
    pub.stop();
    await pub.drained(10_000);
    const delivered = () => conns.slice(0, CPU_TOPICS).reduce((s, c) => s + c.frames - 2, 0);
    await until(() => delivered() >= pub.sent, 10_000, "every delivery").catch(() => {});
    const m = await metrics(server.port);
    return {
      publishesPerSec: ((a1 - a0) * 1e6) / elapsedUs,
      serverUsPerPublish: (cpu1 - cpu0) / (a1 - a0),
      loadCpuShare: (self.user + self.system) / elapsedUs,
      lost: pub.sent - delivered(),
      errors: errorFrames(m),
    };
  } finally {
    for (const c of conns) c.close();
    await server.stop();
  }
}

// --- 2. memory broker: bytes per stored message ------------------------------------------------------------

interface MemoryRun {
  publishesPerSec: number;
  rssDelta: number;
  heapDelta: number;
  /** switchboard_history_bytes after - before (undefined with history off: no store) */
  storeDelta?: number;
  stored?: number;
  evicted?: number;
  errors: number;
}

async function memoryRun(historySize: number): Promise<MemoryRun> {
  const server = await startNode({ HISTORY_SIZE: String(historySize), HISTORY_MAX_BYTES: String(MEM_MAX_BYTES) }, SERVER_CPU ?? "float");
  let pub: Publisher | undefined;
  try {
    pub = await new Publisher(
      server.port,
      Array.from({ length: MEM_TOPICS }, (_, i) => publishFrame(`m${i}`, 1)),
    ).open();
    const before = await settle(server);
    const m0 = await metrics(server.port);
    const total = MEM_TOPICS * MEM_PER_TOPIC;
    const t0 = performance.now();
    pub.run(MEM_WINDOW, total);
    await until(() => pub!.acked >= total || pub!.conn.closed, smoke ? 20_000 : 180_000, `${total} acked publishes`);
    const publishesPerSec = (total * 1000) / (performance.now() - t0);
    const after = await settle(server);
    const m1 = await metrics(server.port);
    const bytes = (m: Map<string, number>) => m.get("switchboard_history_bytes");
    const run: MemoryRun = { publishesPerSec, rssDelta: after.rssBytes - before.rssBytes, heapDelta: after.heapBytes - before.heapBytes, errors: errorFrames(m1) };
    if (bytes(m1) !== undefined) {
      run.storeDelta = bytes(m1)! - (bytes(m0) ?? 0);
      run.stored = m1.get("switchboard_history_messages")!;
      run.evicted = m1.get("switchboard_history_evicted_total") ?? 0;
    }
    return run;
  } finally {
    pub?.conn.close();
    await server.stop();
  }
}

// --- 3. Redis: Lua append vs plain pub/sub --------------------------------------------------------------------

interface RedisRun {
  publishesPerSec: number;
  redisUsPer1000: number;
  nodeUsPerPublish: number;
  redisCpuShare: number;
  lost: number;
  errors: number;
}

async function redisRun(historySize: number): Promise<RedisRun> {
  const redis = await startRedis();
  let node: Node | undefined;
  const conns: LoadConn[] = [];
  try {
    node = await startNode({ REDIS_URL: redis.url, HISTORY_SIZE: String(historySize) }, "float");
    const [sub] = await subscribers(node.port, 1, () => "bench");
    conns.push(sub!);
    const pub = await new Publisher(node.port, [publishFrame("bench", 1)]).open();
    conns.push(pub.conn);
    pub.run(WINDOW);
    await Bun.sleep(REDIS_WARM_MS);
    const a0 = pub.acked;
    const [r0, n0] = [await cpuMicros(redis.pid), await cpuMicros(node.pid)];
    const t0 = performance.now();
    await Bun.sleep(SECONDS * 1000);
    const a1 = pub.acked;
    const [r1, n1] = [await cpuMicros(redis.pid), await cpuMicros(node.pid)];
    const elapsedUs = (performance.now() - t0) * 1000;
    pub.stop();
    await pub.drained(10_000);
    await until(() => sub!.frames - 2 >= pub.sent, 10_000, "every delivery").catch(() => {});
    const m = await metrics(node.port);
    const n = a1 - a0;
    return {
      publishesPerSec: (n * 1e6) / elapsedUs,
      redisUsPer1000: ((r1 - r0) * 1000) / n,
      nodeUsPerPublish: (n1 - n0) / n,
      redisCpuShare: (r1 - r0) / elapsedUs,
      lost: pub.sent - (sub!.frames - 2),
      errors: errorFrames(m),
    };
  } finally {
    for (const c of conns) c.close();
    await node?.stop();
    await redis.stop();
  }
}

// --- 4. Redis, two nodes: publish -> receive latency ----------------------------------------------------------

interface LatencyRun {
  p50: number;
  p99: number;
  max: number;
  samples: number;
  lost: number;
}

async function latencyRun(historySize: number): Promise<LatencyRun> {
  const redis = await startRedis();
  const nodes: Node[] = [];
  const conns: LoadConn[] = [];
  try {
    for (let i = 0; i < 2; i++) nodes.push(await startNode({ REDIS_URL: redis.url, HISTORY_SIZE: String(historySize) }, "float"));
    const [a, b] = nodes as [Node, Node];
    // The sampler on node B parses `"m":<0|1>,"t":<us>` out of each message (m: measured, not warm-up).
    const origin = performance.now();
    const nowUs = () => (performance.now() - origin) * 1000;
    const samples: number[] = [];
    let received = 0;
    const decoder = new TextDecoder();
    const [sampler] = await subscribers(b.port, 1, () => "lat");
    conns.push(sampler!);
    sampler!.capture = (payload) => {
      const at = nowUs();
      const text = decoder.decode(payload);
      const t = text.indexOf('"t":');
      if (t < 0) return;
      received++;
      if (text.includes('"m":1')) samples.push(Math.max(1, at - Number.parseFloat(text.slice(t + 4))));
    };
    const pub = new LoadConn(a.port, "/connect");
    await pub.open();
    pub.answerPings = true;
    conns.push(pub);
    // Open loop: message i is due at start + i / rate and carries that scheduled time (no coordinated
    // omission); every 1 ms tick sends the messages that fell due.
    const warm = Math.round(LATENCY_RATE * LATENCY_WARM_S);
    const total = warm + Math.round(LATENCY_RATE * SECONDS);
    const interval = 1000 / LATENCY_RATE;
    const start = performance.now();
    for (let i = 0; i < total; ) {
      const now = performance.now();
      const parts: Uint8Array[] = [];
      for (; i < total && start + i * interval <= now; i++) {
        const due = Math.round((start + i * interval - origin) * 1000);
        parts.push(clientFrame(`{"type":"publish","topic":"lat","data":{"m":${i >= warm ? 1 : 0},"t":${due}}}`));
      }
      if (parts.length > 0) pub.write(Buffer.concat(parts));
      await Bun.sleep(1);
    }
    await until(() => received >= total, 5000, "every latency sample").catch(() => {});
    return { p50: pct(samples, 50), p99: pct(samples, 99), max: Math.max(...samples), samples: samples.length, lost: total - received };
  } finally {
    for (const c of conns) c.close();
    for (const n of nodes) await n.stop();
    await redis.stop();
  }
}

// --- 5. recovery of 10,000 missed messages -------------------------------------------------------------------

interface RecoveryRun {
  /** from sending the subscribe with since to its `subscribed` reply, and to the last missed message */
  subscribedMs: number;
  caughtUpMs: number;
  /** server CPU (node, plus redis-server) over the recovery */
  nodeCpuMs: number;
  redisCpuMs: number;
  ok: boolean;
  problem?: string;
}

const RECOVER_TOPIC = "recover";
/** The stored frame of message n, as the server builds it (src/protocol.ts messageHead + withOffset). */
const storedFrameLength = (n: number) => `{"type":"message","topic":"${RECOVER_TOPIC}","data":${DATA_JSON},"offset":${n}}`.length;

async function recoveryRun(mode: "memory" | "redis"): Promise<RecoveryRun> {
  const redis = mode === "redis" ? await startRedis() : undefined;
  let node: Node | undefined;
  const conns: LoadConn[] = [];
  try {
    node = await startNode(
      {
        HISTORY_SIZE: String(RECOVER_HISTORY_SIZE),
        BACKPRESSURE_LIMIT_BYTES: String(RECOVER_BACKPRESSURE),
        ...(redis === undefined ? {} : { REDIS_URL: redis.url }),
      },
      "float",
    );
    // A plain subscribe gives the topic's epoch (offset 0). This subscriber stays until every publish is
    // acked: with the memory broker a topic with neither messages nor subscribers is forgotten by the next
    // sweep (within 1 s), and its first publish would then start a new epoch.
    const first = new LoadConn(node.port, "/connect");
    conns.push(first);
    await first.open();
    first.answerPings = true;
    let position: { epoch: string; offset: number } | undefined;
    first.capture = (payload) => {
      const frame = JSON.parse(new TextDecoder().decode(payload)) as { type: string; epoch: string; offset: number };
      if (frame.type !== "subscribed") return;
      position = { epoch: frame.epoch, offset: frame.offset };
      first.capture = undefined; // the 10,000 messages that follow are only counted
    };
    first.write(clientFrame(JSON.stringify({ type: "subscribe", topic: RECOVER_TOPIC })));
    await until(() => position !== undefined, 5000, "the plain subscribe's reply");
    if (typeof position!.epoch !== "string" || position!.offset !== 0) throw new Error(`plain subscribe answered ${JSON.stringify(position)}, want an epoch and offset 0`);

    const pub = await new Publisher(node.port, [publishFrame(RECOVER_TOPIC, 1)]).open();
    conns.push(pub.conn);
    pub.run(WINDOW, RECOVER_MESSAGES);
    await until(() => pub.acked >= RECOVER_MESSAGES, 60_000, `${RECOVER_MESSAGES} acked publishes`);
    await until(() => first.frames >= 2 + RECOVER_MESSAGES, 10_000, "the plain subscriber's messages");
    first.close();
    pub.conn.close();

    const payloads: Uint8Array[] = [];
    let subscribedAt = 0;
    let caughtUpAt = 0;
    const want = 2 + RECOVER_MESSAGES; // welcome, subscribed, the messages
    const recovering = new LoadConn(node.port, "/connect", (c) => {
      if (subscribedAt === 0 && c.frames >= 2) subscribedAt = performance.now();
      if (caughtUpAt === 0 && c.frames >= want) caughtUpAt = performance.now();
    });
    conns.push(recovering);
    await recovering.open();
    recovering.answerPings = true;
    await until(() => recovering.frames >= 1, 5000, "the welcome");
    recovering.capture = (payload) => void payloads.push(payload);
    const since = clientFrame(JSON.stringify({ type: "subscribe", topic: RECOVER_TOPIC, since: position }));
    const [n0, r0] = [await cpuMicros(node.pid), redis === undefined ? 0 : await cpuMicros(redis.pid)];
    const t0 = performance.now();
    recovering.write(since);
    const notRecovered = () => payloads.length >= 1 && !new TextDecoder().decode(payloads[0]).includes('"recovered":true');
    await until(() => caughtUpAt > 0 || notRecovered() || recovering.closed, 30_000, `${RECOVER_MESSAGES} recovered messages`).catch(() => {});
    await Bun.sleep(smoke ? 20 : 100); // anything beyond the last message would show here
    const [n1, r1] = [await cpuMicros(node.pid), redis === undefined ? 0 : await cpuMicros(redis.pid)];

    // Check: subscribed with recovered:true at the expected position, then offsets 1..N in order, nothing more.
    const problems: string[] = [];
    const frames = payloads.map((p) => JSON.parse(new TextDecoder().decode(p)) as Record<string, unknown>);
    const reply = frames[0];
    if (reply?.type !== "subscribed" || reply.recovered !== true || reply.epoch !== position!.epoch || reply.offset !== RECOVER_MESSAGES) {
      problems.push(`reply ${JSON.stringify(reply)}, want subscribed with recovered:true, epoch ${position!.epoch}, offset ${RECOVER_MESSAGES}`);
    }
    const messages = frames.slice(1);
    if (messages.length !== RECOVER_MESSAGES) problems.push(`${messages.length} messages, want ${RECOVER_MESSAGES}`);
    const bad = messages.findIndex((f, i) => f.type !== "message" || f.topic !== RECOVER_TOPIC || f.offset !== i + 1);
    if (bad >= 0) problems.push(`message #${bad + 1} is ${JSON.stringify(messages[bad]).slice(0, 200)}, want offset ${bad + 1}`);
    if (recovering.closed) problems.push("the server closed the recovering connection");
    return {
      subscribedMs: subscribedAt > 0 ? subscribedAt - t0 : Number.NaN,
      caughtUpMs: caughtUpAt > 0 ? caughtUpAt - t0 : Number.NaN,
      nodeCpuMs: (n1 - n0) / 1000,
      redisCpuMs: (r1 - r0) / 1000,
      ok: problems.length === 0,
      ...(problems.length > 0 ? { problem: problems.join("; ") } : {}),
    };
  } finally {
    for (const c of conns) c.close();
    await node?.stop();
    await redis?.stop();
  }
}

// --- main -----------------------------------------------------------------------------------------------------

const command = `bun bench/history.ts${argv.length > 0 ? ` ${argv.join(" ")}` : ""}`;
out(`# switchboard history bench${smoke ? " (SMOKE: tiny counts, figures mean nothing)" : ""}`);
out();
out(`- command: \`${command}\``);
out(`- machine: ${cores} cores (nproc), bun ${Bun.version}, ${new Date().toISOString().slice(0, 10)}`);
out(
  pinned
    ? `- pinning: this process (load) on CPU ${LOAD_CPU}; single servers (1, 2) on CPU 0; Redis scenarios (3-5) float over all CPUs`
    : "- pinning: none (1 core): only relative figures mean anything",
);
out(`- ${ROUNDS} interleaved round(s) per scenario; figures are \`median [min-max]\` over rounds, ratios over per-round pairs`);
out(`- message data: ${DATA_JSON.length} B of JSON`);
const started = performance.now();

async function phase(name: string, body: () => Promise<void>): Promise<void> {
  if (!wants(name)) return;
  const t0 = performance.now();
  try {
    await body();
  } catch (error) {
    fail(`${name}: ${(error as Error).message}`);
  }
  progress(`${name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

try {
  await phase("cpu", async () => {
    const runs = await interleave("cpu", ["on", "off"] as const, (m) => cpuRun(m === "on" ? 100 : 0));
    const { on, off } = runs;
    out();
    out(`## 1. Memory broker: history cost per publish`);
    out(`${fmt(CPU_TOPICS)} topics x 1 subscriber, 1 publisher with ${WINDOW} publishes (with ids) in flight round-robin over the topics, ${SECONDS} s window after ${fmt(CPU_WARM_PUBLISHES)} warm-up publishes`);
    out();
    out(`| HISTORY_SIZE | publishes/s | server CPU us/publish | load generator CPU | lost | error frames |`);
    out(`| --- | --- | --- | --- | --- | --- |`);
    for (const [label, rs] of [["100", on], ["0", off]] as const) {
      out(`| ${label} | ${stat(rs.map((r) => r.publishesPerSec))} | ${stat(rs.map((r) => r.serverUsPerPublish), 2)} | ${stat(rs.map((r) => r.loadCpuShare * 100))}% | ${rs.reduce((s, r) => s + r.lost, 0)} | ${rs.reduce((s, r) => s + r.errors, 0)} |`);
    }
    out(`| ratio on/off | ${stat(ratios(on.map((r) => r.publishesPerSec), off.map((r) => r.publishesPerSec)), 3)} | ${stat(ratios(on.map((r) => r.serverUsPerPublish), off.map((r) => r.serverUsPerPublish)), 3)} | | | |`);
    const lost = [...on, ...off].reduce((s, r) => s + r.lost + r.errors, 0);
    if (lost > 0) fail(`cpu: ${lost} publishes lost or refused`);
  });

  await phase("memory", async () => {
    const runs = await interleave("memory", ["on", "off"] as const, (m) => memoryRun(m === "on" ? 100 : 0));
    const { on, off } = runs;
    const total = MEM_TOPICS * MEM_PER_TOPIC;
    const topicName = `m${MEM_TOPICS - 1}`;
    const frame = `{"type":"message","topic":"${topicName}","data":${DATA_JSON},"offset":${MEM_PER_TOPIC}}`.length;
    const estimate = (frame + ENTRY_OVERHEAD_BYTES) * total + (TOPIC_OVERHEAD_BYTES + topicName.length) * MEM_TOPICS;
    out();
    out(`## 2. Memory broker: bytes per stored message`);
    out(`${fmt(MEM_TOPICS)} topics x ${MEM_PER_TOPIC} messages = ${fmt(total)} publishes (no subscribers, ${MEM_WINDOW} in flight), HISTORY_MAX_BYTES=${fmt(MEM_MAX_BYTES)}; before and after: full GC (SIGUSR2), ${smoke ? "0.1" : "1"} s, full GC, then VmRSS and JS heap; per message = delta / ${fmt(total)}`);
    out(`The store's estimate: frame (~${frame} B here) + ${ENTRY_OVERHEAD_BYTES} B per message, + ${TOPIC_OVERHEAD_BYTES} B + name per topic = ${fmt(estimate / total, 1)} B per message`);
    out();
    out(`| HISTORY_SIZE | RSS delta per message | JS heap delta per message | switchboard_history_bytes delta per message | stored (gauge) | evicted | publishes/s |`);
    out(`| --- | --- | --- | --- | --- | --- | --- |`);
    for (const [label, rs] of [["100", on], ["0", off]] as const) {
      const store = rs.every((r) => r.storeDelta !== undefined) ? stat(rs.map((r) => r.storeDelta! / total), 1) : "(no store)";
      const stored = rs.every((r) => r.stored !== undefined) ? stat(rs.map((r) => r.stored!)) : "-";
      const evicted = rs.every((r) => r.evicted !== undefined) ? String(rs.reduce((s, r) => s + r.evicted!, 0)) : "-";
      out(`| ${label} | ${stat(rs.map((r) => r.rssDelta / total), 1)} B | ${stat(rs.map((r) => r.heapDelta / total), 1)} B | ${store} | ${stored} | ${evicted} | ${stat(rs.map((r) => r.publishesPerSec))} |`);
    }
    const net = on.map((r, i) => (r.rssDelta - off[i]!.rssDelta) / total);
    const netHeap = on.map((r, i) => (r.heapDelta - off[i]!.heapDelta) / total);
    const measured = on.map((r) => r.storeDelta ?? Number.NaN);
    out(`| on - off | ${stat(net, 1)} B | ${stat(netHeap, 1)} B | | | | |`);
    out();
    out(`RSS cost per stored message (on - off) / store's own count: ${stat(on.map((r, i) => (r.rssDelta - off[i]!.rssDelta) / measured[i]!), 2)}x; JS heap: ${stat(on.map((r, i) => (r.heapDelta - off[i]!.heapDelta) / measured[i]!), 2)}x (above 1: the estimate is low)`);
    for (const r of on) if (r.stored !== total || (r.evicted ?? 0) > 0) fail(`memory: stored ${r.stored} messages, evicted ${r.evicted}, want ${total} and 0`);
    const errors = [...on, ...off].reduce((s, r) => s + r.errors, 0);
    if (errors > 0) fail(`memory: ${errors} error frames`);
  });

  await phase("redis", async () => {
    const runs = await interleave("redis", ["on", "off"] as const, (m) => redisRun(m === "on" ? 100 : 0));
    const { on, off } = runs;
    out();
    out(`## 3. Redis: Lua append (history on) vs plain pub/sub (off)`);
    out(`1 node + its own redis-server, 1 subscriber, 1 publisher with ${WINDOW} publishes (with ids) in flight on one topic, ${SECONDS} s window after ${REDIS_WARM_MS} ms`);
    out();
    out(`| HISTORY_SIZE | publishes/s | redis-server CPU us per 1,000 publishes | redis-server CPU | node CPU us/publish | lost | error frames |`);
    out(`| --- | --- | --- | --- | --- | --- | --- |`);
    for (const [label, rs] of [["100", on], ["0", off]] as const) {
      out(`| ${label} | ${stat(rs.map((r) => r.publishesPerSec))} | ${stat(rs.map((r) => r.redisUsPer1000))} | ${stat(rs.map((r) => r.redisCpuShare * 100))}% | ${stat(rs.map((r) => r.nodeUsPerPublish), 2)} | ${rs.reduce((s, r) => s + r.lost, 0)} | ${rs.reduce((s, r) => s + r.errors, 0)} |`);
    }
    out(`| ratio on/off | ${stat(ratios(on.map((r) => r.publishesPerSec), off.map((r) => r.publishesPerSec)), 3)} | ${stat(ratios(on.map((r) => r.redisUsPer1000), off.map((r) => r.redisUsPer1000)), 3)} | | ${stat(ratios(on.map((r) => r.nodeUsPerPublish), off.map((r) => r.nodeUsPerPublish)), 3)} | | |`);
    const lost = [...on, ...off].reduce((s, r) => s + r.lost + r.errors, 0);
    if (lost > 0) fail(`redis: ${lost} publishes lost or refused`);
  });

  await phase("latency", async () => {
    const runs = await interleave("latency", ["on", "off"] as const, (m) => latencyRun(m === "on" ? 100 : 0));
    out();
    out(`## 4. Redis, two nodes: publish (node A) -> receive (node B) latency`);
    out(`${fmt(LATENCY_RATE)} publishes/s open loop for ${SECONDS} s after ${LATENCY_WARM_S} s of warm-up, from each message's scheduled send time (1 ms ticks), one parsing subscriber on node B`);
    out();
    out(`| HISTORY_SIZE | p50 us | p99 us | max us | samples | lost |`);
    out(`| --- | --- | --- | --- | --- | --- |`);
    for (const [label, rs] of [["100", runs.on], ["0", runs.off]] as const) {
      out(`| ${label} | ${stat(rs.map((r) => r.p50))} | ${stat(rs.map((r) => r.p99))} | ${stat(rs.map((r) => r.max))} | ${stat(rs.map((r) => r.samples))} | ${rs.reduce((s, r) => s + r.lost, 0)} |`);
    }
    const lost = [...runs.on, ...runs.off].reduce((s, r) => s + r.lost, 0);
    if (lost > 0) fail(`latency: ${lost} messages not received on node B`);
  });

  await phase("recovery", async () => {
    const budget = RECOVER_BACKPRESSURE / 2;
    let replay = 0;
    for (let n = 1; n <= RECOVER_MESSAGES; n++) replay += storedFrameLength(n);
    out();
    out(`## 5. Recovery of ${fmt(RECOVER_MESSAGES)} missed messages`);
    out(
      `HISTORY_SIZE=${RECOVER_HISTORY_SIZE}, BACKPRESSURE_LIMIT_BYTES=${RECOVER_BACKPRESSURE}: a recovery is sent in one step that must fit half the ` +
        `backpressure limit (${fmt(budget)} B; more answers recovered:false); these ${fmt(RECOVER_MESSAGES)} frames are ${fmt(replay)} B, ` +
        `${replay <= budget ? "so they fit" : "which DOES NOT FIT: expect recovered:false"}`,
    );
    out(`${fmt(RECOVER_MESSAGES)} acked publishes to one topic, then a new connection subscribes with since {epoch, 0}; timed from sending that subscribe`);
    const runs = await interleave("recovery", ["memory", "redis"] as const, recoveryRun);
    out();
    out(`| broker | to subscribed (ms) | to caught up (ms) | node CPU (ms, 10 ms ticks) | redis-server CPU (ms, 10 ms ticks) | recovered:true, offsets 1..${RECOVER_MESSAGES} in order |`);
    out(`| --- | --- | --- | --- | --- | --- |`);
    for (const mode of ["memory", "redis"] as const) {
      const rs = runs[mode];
      const verdict = rs.every((r) => r.ok) ? `yes (${rs.length}/${rs.length})` : `**NO** (${rs.filter((r) => r.ok).length}/${rs.length})`;
      out(`| ${mode} | ${stat(rs.map((r) => r.subscribedMs), 1)} | ${stat(rs.map((r) => r.caughtUpMs), 1)} | ${stat(rs.map((r) => r.nodeCpuMs), 1)} | ${mode === "redis" ? stat(rs.map((r) => r.redisCpuMs), 1) : "-"} | ${verdict} |`);
    }
    for (const mode of ["memory", "redis"] as const) for (const r of runs[mode]) if (!r.ok) fail(`recovery (${mode}): ${r.problem}`);
  });
} finally {
  killAll();
}

out();
out(`Total ${((performance.now() - started) / 1000).toFixed(1)} s. ${failures.length === 0 ? "No failures." : `**${failures.length} FAILURE(S)**: see above.`}`);
console.log(summary.join("\n"));
process.exit(failures.length === 0 ? 0 : 1);
