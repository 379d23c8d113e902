// Caps, reservations and per-connection state at the seams: hundreds of simultaneous upgrades racing the
// asynchronous token check, refused upgrades giving their slot back, closed connections leaving nothing
// behind (even with far token expiries and long ping intervals), and client-chosen close codes.
import { afterAll, describe, expect, test } from "bun:test";
import { SignJWT } from "jose";
import { ManualClock } from "../src/clock.ts";
import { Logger } from "../src/log.ts";
import { Client, serve, stopAll, until, within, type TestServer } from "./helpers.ts";

afterAll(stopAll);

const SECRET = "admission-seams-secret-at-least-32-chars";
const jwt = (claims: Record<string, unknown>) =>
  new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(SECRET));
const inAYear = () => Math.floor(Date.now() / 1000) + 365 * 86400;
const everything = { topics: { subscribe: ["*"], publish: ["*"] } };

/** Opens `count` WebSockets at once; resolves with the ones that opened (the rest were refused). */
async function stampede(url: string, count: number): Promise<{ open: WebSocket[]; refused: number }> {
  const results = await Promise.all(
    Array.from({ length: count }, () => {
      const ws = new WebSocket(url);
      return new Promise<WebSocket | undefined>((resolve) => {
        ws.onopen = () => resolve(ws);
        ws.onerror = () => resolve(undefined);
        ws.onclose = () => resolve(undefined);
      });
    }),
  );
  const open = results.filter((ws): ws is WebSocket => ws !== undefined);
  return { open, refused: count - open.length };
}

async function closeAll(server: TestServer, sockets: WebSocket[]): Promise<void> {
  for (const ws of sockets) ws.close();
  await until(() => server.gateway.connections.size === 0, 5000, "all closed");
}

describe("caps hold under 500 simultaneous upgrades with a valid token", () => {
  test("MAX_CONNECTIONS=50: exactly 50 open, 450 refused with 503; every slot comes back", async () => {
    const server = serve({ AUTH_SECRET: SECRET, MAX_CONNECTIONS: 50 });
    const token = await jwt({ sub: "many", ...everything, exp: inAYear() });
    const { open, refused } = await within(stampede(`${server.ws()}?token=${token}`, 500), 15_000, "stampede");
    expect(open).toHaveLength(50);
    expect(refused).toBe(450);
    expect(server.gateway.connections.size).toBe(50);
    expect(server.gateway.metrics.upgradesRejected.get("max_connections")).toBe(450);
    await closeAll(server, open);
    expect(server.gateway.registry.counted).toBe(0);
    const again = await within(stampede(`${server.ws()}?token=${token}`, 50), 10_000, "second round");
    expect(again.open).toHaveLength(50);
    await closeAll(server, again.open);
  });

  test("MAX_CONNECTIONS_PER_IP=20: exactly 20 open, 480 refused with 429", async () => {
    const server = serve({ AUTH_SECRET: SECRET, MAX_CONNECTIONS_PER_IP: 20 });
    const token = await jwt({ sub: "many", ...everything, exp: inAYear() });
    const { open, refused } = await within(stampede(`${server.ws()}?token=${token}`, 500), 15_000, "stampede");
    expect(open).toHaveLength(20);
    expect(refused).toBe(480);
    expect(server.gateway.metrics.upgradesRejected.get("max_connections_per_ip")).toBe(480);
    await closeAll(server, open);
    expect(server.gateway.perIp.size).toBe(0);
  });

  test("broken handshakes never hold a place under the caps", async () => {
    const server = serve({ MAX_CONNECTIONS: 5 });
    const broken = await Promise.all(
      Array.from({ length: 100 }, () =>
        fetch(`http://127.0.0.1:${server.port}/connect`, { headers: { upgrade: "websocket", connection: "upgrade" } }).then((r) => r.status),
      ),
    );
    expect(new Set(broken)).toEqual(new Set([400]));
    expect(server.gateway.registry.counted).toBe(0);
    const good = await within(stampede(server.ws(), 5), 10_000, "good upgrades");
    expect(good.open).toHaveLength(5);
    await closeAll(server, good.open);
  });

  test("upgrades refused by the token check give their reserved slot back", async () => {
    const server = serve({ AUTH_SECRET: SECRET, MAX_CONNECTIONS: 5, MAX_CONNECTIONS_PER_IP: 5 });
    const bad = await within(stampede(`${server.ws()}?token=not-a-jwt`, 100), 10_000, "bad tokens");
    expect(bad.refused).toBe(100);
    expect(server.gateway.metrics.upgradesRejected.get("unauthorized")).toBe(100);
    expect(server.gateway.registry.counted).toBe(0);
    const token = await jwt({ sub: "ok", ...everything, exp: inAYear() });
    const good = await within(stampede(`${server.ws()}?token=${token}`, 5), 10_000, "good tokens");
    expect(good.open).toHaveLength(5);
    await closeAll(server, good.open);
  });
});

describe("a closed connection is unreachable at once", () => {
  test("far token expiries and long ping intervals keep nothing of 300 closed connections", async () => {
    const server = serve({ AUTH_SECRET: SECRET, PING_INTERVAL_MS: 3_600_000, RATE_LIMIT_MSGS_PER_S: 10 });
    for (let round = 0; round < 3; round++) {
      const urls = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => `${server.ws()}?token=${await jwt({ sub: `user-${round}-${i}`, ...everything, exp: inAYear() })}`),
      );
      const all = (await within(Promise.all(urls.map((url) => stampede(url, 1))), 10_000, "open")).flatMap((r) => r.open);
      expect(all).toHaveLength(100);
      expect(server.gateway.heartbeat.held()).toEqual({ deadlines: 100, expiries: 100 });
      await closeAll(server, all);
      expect(server.gateway.heartbeat.held()).toEqual({ deadlines: 0, expiries: 0 });
      expect(server.gateway.registry.counted).toBe(0);
    }
    // Rate-limit buckets of identities that left are forgotten once full again (swept on the clock).
    server.gateway.registry.rate.sweep();
    expect(server.gateway.registry.rate.size).toBe(0);
  });
});

describe("token expiry runs on the injected clock", () => {
  test("closed with 4001 at exp (within one tick), not a tick before; nothing held afterwards", async () => {
    const clock = new ManualClock();
    // Read deadlines far away: only the token's expiry may close this connection.
    const server = serve({ AUTH_SECRET: SECRET, PING_INTERVAL_MS: 3_600_000, PING_WAIT_MS: 3_600_000 }, { clock });
    const exp = Math.floor(clock.wall() / 1000) + 60;
    const client = await Client.open(`${server.ws()}?token=${await jwt({ sub: "u", ...everything, exp })}`);
    const expired = () => server.gateway.metrics.tokenExpiries > 0;
    const tick = server.gateway.heartbeat.tickMs;
    while (!expired() && clock.wall() < exp * 1000 + 10_000) clock.advance(tick);
    expect(expired()).toBe(true);
    expect(clock.wall()).toBeGreaterThanOrEqual(exp * 1000);
    expect(clock.wall()).toBeLessThanOrEqual(exp * 1000 + 2 * tick);
    expect(await within(client.closed, 2000, "close")).toEqual({ code: 4001, reason: "token expired" });
    expect(server.gateway.heartbeat.held()).toEqual({ deadlines: 0, expiries: 0 });
  });
});

describe("client-chosen close codes", () => {
  test("become a fixed set of metric labels and are logged at debug only", async () => {
    const lines: string[] = [];
    const server = serve({ LOG_LEVEL: "info" }, { log: new Logger("info", (line) => lines.push(line)) });
    const codes = Array.from({ length: 200 }, (_, i) => 3000 + i * 9); // 3000..4791, none of them ours
    for (const code of codes) {
      const { open } = await stampede(server.ws(), 1);
      open[0]!.close(code, "r".repeat(100));
    }
    await until(() => server.gateway.connections.size === 0, 5000, "all closed");
    const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    const series = metrics.split("\n").filter((line) => line.startsWith("switchboard_closes_total{"));
    expect(series).toEqual(['switchboard_closes_total{code="other"} 200']);
    expect(lines.filter((line) => JSON.parse(line).event === "close")).toEqual([]);
  });
});
