// Logs of the real entry point: one JSON object per line, debug/info on stdout and warn/error on stderr,
// filtered by LOG_LEVEL; and an unhandled promise rejection is logged (`unhandled_rejection`) while the process
// keeps serving. One event of each level is caused for real and its effect awaited before the logs are read,
// so a missing line means the level filtered it, not that it had not happened yet.
import { describe, expect, test } from "bun:test";
import { Client, spawnEntry, until, within, type Entry } from "./helpers.ts";
import { REJECTION } from "./fixtures/reject-on-request.ts";

const LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
type Level = (typeof LEVELS)[number];
const rank = (level: string) => LEVELS.indexOf(level as Level);

/** The event each level is checked with, and how the test causes it. */
const EVENTS = { debug: "close", info: "start", warn: "auth_failed", error: "unhandled_rejection" } as const;

interface Line {
  time: string;
  level: string;
  event: string;
  [field: string]: unknown;
}

/** Every JSON line of a stream (the plain start-up line on stdout is not a log line). */
function logLines(text: string, stream: "stdout" | "stderr"): Line[] {
  const lines = text.split("\n").filter((l) => l !== "");
  const plain = lines.filter((l) => !l.startsWith("{"));
  expect(plain).toEqual(stream === "stdout" ? [expect.stringMatching(/^switchboard listening on /)] : []);
  return lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line);
}

async function runAt(level: Level): Promise<{ stdout: Line[]; stderr: Line[] }> {
  const entry: Entry = await spawnEntry(
    // AUTH_SECRET: an upgrade without a token is refused, and logged (warn).
    { LOG_LEVEL: level, AUTH_SECRET: "logging-test-secret-0123456789abcdef" },
    undefined,
    { preload: `${import.meta.dir}/fixtures/reject-on-request.ts` },
  );
  try {
    const base = `http://127.0.0.1:${entry.port}`;
    const connections = async () => ((await (await fetch(`${base}/healthz`)).json()) as { connections: number }).connections;
    const bystander = await Client.open(`ws://127.0.0.1:${entry.port}/echo`);

    // debug: a client closing with a code of its own (logged by the server's close handler, which has run
    // once /healthz no longer counts the socket).
    const leaving = await Client.open(`ws://127.0.0.1:${entry.port}/echo`);
    leaving.socket.close(4321, "bye");
    await within(leaving.closed, 5000, "close handshake");
    await until(async () => (await connections()) === 1, 5000, "the server's close handler");
    // warn: an upgrade without a token (logged before the 401 is sent).
    const refused = await fetch(`${base}/connect`, {
      headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" },
    });
    expect(refused.status).toBe(401);
    // error: a promise rejection nobody handles (the fixture answers once it exists).
    expect((await fetch(`${base}/__fixture/reject`)).status).toBe(202);
    if (rank(level) <= rank("error")) {
      await until(() => entry.stderr().includes('"unhandled_rejection"'), 5000, "the unhandled_rejection line");
    }

    // ...and the process keeps serving: the open socket, a new one, HTTP.
    bystander.socket.send("still here");
    expect(await bystander.raw()).toBe("still here");
    const fresh = await Client.open(`ws://127.0.0.1:${entry.port}/echo`);
    fresh.socket.send("new");
    expect(await fresh.raw()).toBe("new");
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    bystander.close();
    fresh.close();

    entry.kill("SIGTERM");
    const exit = await within(entry.exited(), 10_000, "exit");
    expect(exit.code).toBe(0);
    return { stdout: logLines(exit.stdout, "stdout"), stderr: logLines(exit.stderr, "stderr") };
  } finally {
    entry.kill("SIGKILL");
  }
}

describe("LOG_LEVEL", () => {
  for (const level of LEVELS) {
    const what = level === "silent" ? "nothing is logged" : `events at ${level} and above are logged, debug/info on stdout, warn/error on stderr; none below`;
    test(`${level}: ${what}; an unhandled rejection does not stop the process`, async () => {
      const { stdout, stderr } = await runAt(level);
      for (const line of stdout) expect(["debug", "info"]).toContain(line.level);
      for (const line of stderr) expect(["warn", "error"]).toContain(line.level);
      const lines = [...stdout, ...stderr];
      for (const line of lines) {
        expect(rank(line.level)).toBeGreaterThanOrEqual(rank(level));
        expect(Number.isNaN(Date.parse(line.time))).toBe(false);
      }
      for (const [eventLevel, event] of Object.entries(EVENTS)) {
        const found = lines.filter((l) => l.event === event);
        if (rank(eventLevel) >= rank(level)) expect(found.map((l) => l.level)).toContain(eventLevel);
        else expect(found).toEqual([]);
      }
      if (level === "silent") expect(lines).toEqual([]);
      const rejection = lines.find((l) => l.event === "unhandled_rejection");
      if (rejection !== undefined) {
        expect(rejection).toMatchObject({ level: "error", error: REJECTION });
        expect(rejection.stack).toContain(REJECTION);
      }
      const refusal = lines.find((l) => l.event === "auth_failed");
      if (refusal !== undefined) expect(refusal).toMatchObject({ level: "warn", reason: expect.stringContaining("missing token"), ip: expect.any(String) });
    }, 20_000);
  }
});
