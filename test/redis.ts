// A real, isolated redis-server for the tests: started on a free port, stopped (and restartable) on demand.
// Falls back to REDIS_URL (never a mock) where redis-server is not installed; tests that must kill Redis
// then skip, since they cannot do it to a shared server.
import { RedisClient } from "bun";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./helpers.ts";

export interface TestRedis {
  url: string;
  /** True when this process owns the server and may stop/start it. */
  owned: boolean;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** A raw command on a fresh connection (PUBSUB NUMSUB ...). */
  command(cmd: string, args: string[]): Promise<unknown>;
  /** Sends a signal to the server process (SIGSTOP freezes it, SIGCONT wakes it); owned servers only. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void;
}

export async function startRedis(): Promise<TestRedis> {
  const binary = Bun.which("redis-server");
  if (binary === null) {
    const url = process.env.REDIS_URL;
    if (!url) throw new Error("redis-server is not installed and REDIS_URL is not set");
    const signal = () => {
      throw new Error("cannot signal a shared Redis");
    };
    return { url, owned: false, stop: async () => {}, start: async () => {}, command: (c, a) => run(url, c, a), signal };
  }
  const port = freePort();
  const url = `redis://127.0.0.1:${port}`;
  // Its own directory: a SAVE (tests of restarts from a snapshot) writes dump.rdb there, never in the repo, and
  // a restart loads it back (a restart without a SAVE starts empty: no automatic snapshots).
  const dir = mkdtempSync(join(tmpdir(), "switchboard-redis-"));
  let proc: ReturnType<typeof Bun.spawn> | undefined;
  const start = async () => {
    proc = Bun.spawn([binary, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
      stdout: "ignore",
      stderr: "inherit",
    });
    const deadline = performance.now() + 5000;
    for (;;) {
      try {
        if ((await run(url, "PING", [])) === "PONG") return;
      } catch {
        // not up yet
      }
      if (performance.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
      await Bun.sleep(20);
    }
  };
  const stop = async () => {
    proc?.kill("SIGKILL");
    await proc?.exited;
    proc = undefined;
  };
  await start();
  const signal = (name: "SIGSTOP" | "SIGCONT") => proc?.kill(name);
  return { url, owned: true, stop, start, command: (c, a) => run(url, c, a), signal };
}

async function run(url: string, cmd: string, args: string[]): Promise<unknown> {
  const client = new RedisClient(url, { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: 1000 });
  try {
    await client.connect();
    return await client.send(cmd, args);
  } finally {
    client.close();
  }
}
