// Graceful shutdown of the real entry point: SIGTERM/SIGINT close every socket with 1001 and exit 0.
import { describe, expect, test } from "bun:test";
import { Client, within } from "./helpers.ts";

async function spawnServer(env: Record<string, string> = {}) {
  const proc = Bun.spawn(["bun", "run", "src/index.ts"], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const killer = setTimeout(() => proc.kill("SIGKILL"), 15_000); // never leave a server behind
  const reader = proc.stdout.getReader();
  let out = "";
  const port = await within(
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`server exited before listening: ${out}`);
        out += new TextDecoder().decode(value);
        const match = out.match(/^switchboard listening on http:\/\/127\.0\.0\.1:(\d+) /m);
        if (match) return Number(match[1]);
      }
    })(),
    10_000,
    "the start-up line",
  );
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return out;
      out += new TextDecoder().decode(value);
    }
  })();
  return { proc, port, output: () => rest, done: () => clearTimeout(killer) };
}

describe("graceful shutdown", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal}: clients on both routes see 1001 "server shutting down", the process exits 0`, async () => {
      const server = await spawnServer({ SHUTDOWN_GRACE_MS: "3000" });
      const url = (route: string) => `ws://127.0.0.1:${server.port}${route}`;
      const a = await Client.open(url("/connect"));
      expect((await a.json()).type).toBe("welcome");
      const b = await Client.open(url("/echo"));
      const health = (await (await fetch(`http://127.0.0.1:${server.port}/healthz`)).json()) as { connections: number };
      expect(health.connections).toBe(2);

      const sent = performance.now();
      server.proc.kill(signal);
      expect(await within(a.closed, 5000, "a closed")).toEqual({ code: 1001, reason: "server shutting down" });
      expect(await within(b.closed, 5000, "b closed")).toEqual({ code: 1001, reason: "server shutting down" });
      expect(await within(server.proc.exited, 5000, "exit")).toBe(0);
      expect(performance.now() - sent).toBeLessThan(3000 + 1000);
      server.done();
      const lines = (await server.output()).trim().split("\n");
      const shutdown = lines.map((l) => (l.startsWith("{") ? JSON.parse(l) : {})).find((l) => l.event === "shutdown");
      expect(shutdown).toMatchObject({ signal, connections: 2 });
      // no longer listening
      await expect(fetch(`http://127.0.0.1:${server.port}/healthz`)).rejects.toThrow();
    });
  }

  test("an idle server exits 0 at once on SIGTERM", async () => {
    const server = await spawnServer();
    server.proc.kill("SIGTERM");
    expect(await within(server.proc.exited, 5000, "exit")).toBe(0);
    server.done();
  });
});
