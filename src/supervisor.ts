// WORKERS=N: N server processes on one port (SO_REUSEPORT: the kernel spreads new connections), supervised.
// A worker that exits unexpectedly is restarted with backoff; SIGTERM/SIGINT drain every worker (each closes
// its sockets with 1001) and the supervisor exits 0 once all have exited. Workers reach each other's
// subscribers only through the broker, which is why WORKERS > 1 requires REDIS_URL (checked in config).
import type { Subprocess } from "bun";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";

interface Worker {
  index: number;
  proc: Subprocess<"ignore", "pipe", "inherit">;
  listening: Promise<void>;
}

export async function supervise(config: Config, log: Logger): Promise<void> {
  // With PORT=0 every worker would bind its own random port: pick one free port for all of them.
  const port = config.PORT === 0 ? freePort(config.HOST) : config.PORT;
  const entry = new URL("./index.ts", import.meta.url).pathname;
  const workers = new Map<number, Worker>();
  let stopping = false;
  const crashes: number[] = [];

  const start = (index: number): Worker => {
    const proc = Bun.spawn([process.execPath, entry], {
      env: { ...process.env, PORT: String(port), WORKERS: "1", REUSE_PORT: "true", SWITCHBOARD_WORKER: String(index) },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "inherit",
    });
    let ready!: () => void;
    const listening = new Promise<void>((resolve) => (ready = resolve));
    void forwardLines(proc.stdout, (line) => {
      if (line.startsWith("switchboard listening")) ready();
      else console.log(line);
    });
    const worker = { index, proc, listening };
    workers.set(index, worker);
    void proc.exited.then((code) => {
      if (workers.get(index) === worker) workers.delete(index);
      ready(); // never leave start-up waiting on a dead worker
      if (stopping) return;
      const now = Date.now();
      crashes.push(now);
      while (crashes.length > 0 && crashes[0]! < now - 60_000) crashes.shift();
      const delayMs = Math.min(5000, 100 * 2 ** Math.min(crashes.length - 1, 6));
      log.warn("worker_exited", { worker: index, pid: proc.pid, code, restartInMs: delayMs });
      setTimeout(() => stopping || start(index), delayMs);
    });
    return worker;
  };

  for (let i = 1; i <= config.WORKERS; i++) start(i);
  await Promise.all([...workers.values()].map((w) => w.listening));

  const drain = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutdown", { signal, workers: workers.size });
    const all = [...workers.values()];
    for (const w of all) w.proc.kill("SIGTERM");
    const exited = Promise.all(all.map((w) => w.proc.exited));
    const timedOut = await Promise.race([exited.then(() => false), Bun.sleep(config.SHUTDOWN_GRACE_MS + 1000).then(() => true)]);
    if (timedOut) for (const w of all) w.proc.kill("SIGKILL");
    process.exit(0);
  };
  process.on("SIGTERM", () => void drain("SIGTERM"));
  process.on("SIGINT", () => void drain("SIGINT"));

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
