// Graceful shutdown of the real entry point: SIGTERM/SIGINT close every socket with 1001 and exit 0.
import { describe, expect, test } from "bun:test";
import { Client, spawnEntry, within } from "./helpers.ts";

describe("graceful shutdown", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal}: clients on both routes see 1001 "server shutting down", the process exits 0`, async () => {
      // A grace far beyond the waits below: a drain that sat out the grace instead of finishing would fail them.
      const server = await spawnEntry({ SHUTDOWN_GRACE_MS: "60000", LOG_LEVEL: "info" });
      const url = (route: string) => `ws://127.0.0.1:${server.port}${route}`;
      const a = await Client.open(url("/connect"));
      expect((await a.json()).type).toBe("welcome");
      const b = await Client.open(url("/echo"));
      const health = (await (await fetch(`http://127.0.0.1:${server.port}/healthz`)).json()) as { connections: number };
      expect(health.connections).toBe(2);

      server.kill(signal);
      expect(await within(a.closed, 5000, "a closed")).toEqual({ code: 1001, reason: "server shutting down" });
      expect(await within(b.closed, 5000, "b closed")).toEqual({ code: 1001, reason: "server shutting down" });
      const exit = await within(server.exited(), 10_000, "exit");
      expect(exit.code).toBe(0);
      const events = exit.stdout.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
      expect(events.find((l) => l.event === "shutdown")).toMatchObject({ signal, connections: 2 });
      // `stop` is logged once the drain has finished: with a 60 s grace, it finished by itself.
      expect(events.find((l) => l.event === "stop")).toMatchObject({ signal });
      // no longer listening
      await expect(fetch(`http://127.0.0.1:${server.port}/healthz`)).rejects.toThrow();
    }, 20_000);
  }

  test("a drain that hangs: the process still exits 0 once SHUTDOWN_GRACE_MS has passed", async () => {
    const GRACE = 300;
    const server = await spawnEntry({ SHUTDOWN_GRACE_MS: String(GRACE), LOG_LEVEL: "info" }, undefined, {
      preload: `${import.meta.dir}/fixtures/hang-drain.ts`, // the listener's stop() never settles
    });
    try {
      const a = await Client.open(`ws://127.0.0.1:${server.port}/connect`);
      expect((await a.json()).type).toBe("welcome");
      const signalled = performance.now();
      server.kill("SIGTERM");
      expect(await within(a.closed, 5000, "a closed")).toEqual({ code: 1001, reason: "server shutting down" });
      const exit = await within(server.exited(), 15_000, "the forced exit");
      expect(exit.code).toBe(0);
      expect(exit.stderr).toContain("fixture hang-drain: stop() called");
      // It did wait for the grace: the drain really hung, and only the grace ended it.
      expect(performance.now() - signalled).toBeGreaterThanOrEqual(GRACE);
    } finally {
      server.kill("SIGKILL"); // a process that failed to exit would otherwise hang on after the test run
    }
  }, 20_000);

  test("an idle server exits 0 at once on SIGTERM", async () => {
    const server = await spawnEntry({});
    server.kill("SIGTERM");
    expect((await within(server.exited(), 5000, "exit")).code).toBe(0);
  });
});
