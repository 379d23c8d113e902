// WORKERS=N: N server processes on one port (SO_REUSEPORT: the kernel spreads new connections), supervised.
// Start-up: "listening" is printed only once every worker printed its own start-up line; a worker that exits
// before that (port taken, bad HOST, Redis URL refused...) would only fail again, so the supervisor stops the
// others and exits 1 with one line saying which worker died and how (the worker's own line above says why).
// After start-up, a worker that exits unexpectedly is restarted with backoff; SIGTERM/SIGINT drain every worker
// (each closes its sockets with 1001) and the supervisor exits 0 once all have exited. Workers reach each
// other's subscribers only through the broker, which is why WORKERS > 1 requires REDIS_URL (checked in config).
import type { Subprocess } from "bun";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";

interface Worker {
  index: number;
  proc: Subprocess<"ignore", "pipe", "inherit">;
  /** Resolves at the worker's start-up line; rejects (with the reason to give up) if it exits first. */
  listening: Promise<void>;
}

export async function supervise(config: Config, log: Logger): Promise<void> {
  // With PORT=0 every worker would bind its own random port: pick one free port for all of them.
  const port = config.PORT === 0 ? freePort(config.HOST) : config.PORT;
  const entry = new URL("./index.ts", import.meta.url).pathname;
  const workers = new Map<number, Worker>();
  let started = false;
  let stopping = false;
  const crashes: number[] = [];

  const start = (index: number): Worker => {
    const proc = Bun.spawn([process.execPath, entry], {
      env: { ...process.env, PORT: String(port), WORKERS: "1", REUSE_PORT: "true", SWITCHBOARD_WORKER: String(index) },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "inherit",
    });
    const { promise: listening, resolve, reject } = Promise.withResolvers<void>();
    listening.catch(() => {}); // only the first generation's rejections matter, and start-up awaits those
    void forwardLines(proc.stdout, (line) => {
      if (line.startsWith("switchboard listening")) resolve();
      else console.log(line);
    });
    const worker = { index, proc, listening };
    workers.set(index, worker);
    void proc.exited.then((code) => {
      if (workers.get(index) === worker) workers.delete(index);
      const how = proc.signalCode === null ? `code ${code}` : proc.signalCode;
      reject(new Error(`worker ${index} exited with ${how} at start-up, before all ${config.WORKERS} workers listened: giving up`));
      if (stopping || !started) return;
      const now = Date.now();
      crashes.push(now);
      while (crashes.length > 0 && crashes[0]! < now - 60_000) crashes.shift();
      const delayMs = Math.min(5000, 100 * 2 ** Math.min(crashes.length - 1, 6));
      log.warn("worker_exited", { worker: index, pid: proc.pid, code, restartInMs: delayMs });
      setTimeout(() => stopping || start(index), delayMs);
    });
    return worker;
  };

  /** SIGTERM to every worker, SIGKILL to those still there after the grace period; resolves once all exited. */
  const stopWorkers = async () => {
    const all = [...workers.values()];
    for (const w of all) w.proc.kill("SIGTERM");
    const exited = Promise.all(all.map((w) => w.proc.exited));
    const timedOut = await Promise.race([exited.then(() => false), Bun.sleep(config.SHUTDOWN_GRACE_MS + 1000).then(() => true)]);
    if (timedOut) for (const w of all) w.proc.kill("SIGKILL");
    await exited;
  };

  // Installed before any worker starts: a signal during start-up drains too, instead of orphaning workers.
  const drain = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutdown", { signal, workers: workers.size });
    await stopWorkers();
    process.exit(0);
  };
  process.on("SIGTERM", () => void drain("SIGTERM"));
  process.on("SIGINT", () => void drain("SIGINT"));

  for (let i = 1; i <= config.WORKERS; i++) start(i);
  try {
    await Promise.all([...workers.values()].map((w) => w.listening));
  } catch (error) {
    if (stopping) return; // a signal's drain is under way and exits the process
    stopping = true;
    await stopWorkers();
    console.error(`switchboard: ${(error as Error).message}`);
    process.exit(1);
  }
  started = true;

  const host = config.HOST.includes(":") ? `[${config.HOST}]` : config.HOST;
  const url = `http://${host}:${port}`;
  const ws = url.replace(/^http/, "ws");
  console.log(`switchboard listening on ${url} (${ws}/connect, ${ws}/echo) with ${config.WORKERS} workers`);
}

function freePort(hostname: string): number {
  const probe = Bun.listen({ hostname, port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

async function forwardLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      onLine(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
    }
  }
  if (buffered) onLine(buffered);
}
