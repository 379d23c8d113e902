// Graceful shutdown of the real entry point: SIGTERM/SIGINT close every socket with 1001 and exit 0.
import { describe, expect, test } from "bun:test";
import { Client, spawnEntry, within } from "./helpers.ts";

describe("graceful shutdown", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal}: clients on both routes see 1001 "server shutting down", the process exits 0`, async () => {
      const server = await spawnEntry({ SHUTDOWN_GRACE_MS: "3000", LOG_LEVEL: "info" });
      const url = (route: string) => `ws://127.0.0.1:${server.port}${route}`;
      const a = await Client.open(url("/connect"));
      expect((await a.json()).type).toBe("welcome");
      const b = await Client.open(url("/echo"));
      const health = (await (await fetch(`http://127.0.0.1:${server.port}/healthz`)).json()) as { connections: number };
      expect(health.connections).toBe(2);

      const sent = performance.now();
      server.kill(signal);
      expect(await within(a.closed, 5000, "a closed")).toEqual({ code: 1001, reason: "server shutting down" });
      expect(await within(b.closed, 5000, "b closed")).toEqual({ code: 1001, reason: "server shutting down" });
      const exit = await within(server.exited(), 5000, "exit");
      expect(exit.code).toBe(0);
      expect(performance.now() - sent).toBeLessThan(3000 + 1000);
      const lines = exit.stdout.trim().split("\n");
      const shutdown = lines.map((l) => (l.startsWith("{") ? JSON.parse(l) : {})).find((l) => l.event === "shutdown");
      expect(shutdown).toMatchObject({ signal, connections: 2 });
      // no longer listening
      await expect(fetch(`http://127.0.0.1:${server.port}/healthz`)).rejects.toThrow();
    });
  }

  test("an idle server exits 0 at once on SIGTERM", async () => {
    const server = await spawnEntry({});
    server.kill("SIGTERM");
    expect((await within(server.exited(), 5000, "exit")).code).toBe(0);
  });
});
