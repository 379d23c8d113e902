// How the client connects: every URL form a user holds, refused upgrades (401/403/429) surfacing as
// HandshakeError with the server's status and reason and following the protocol's refusal policy, and fresh
// tokens from `token()` before every attempt (after a 401, after 4001 token expired, after token() throws).
import { afterAll, describe, expect, test } from "bun:test";
import { SignJWT } from "jose";
import {
  connect,
  ConnectionLostError,
  HandshakeError,
  parseServerUrl,
  SwitchboardError,
  type ClientEvents,
  type ClientOptions,
  type SwitchboardClient,
} from "../src/client.ts";
import { serve, stopAll, until, within, recordEvents } from "./helpers.ts";

const clients: SwitchboardClient[] = [];
const track = (c: SwitchboardClient) => (clients.push(c), c);
const open = (url: string, options?: ClientOptions) => track(connect(url, options));
afterAll(async () => {
  for (const c of clients) c.close();
  await stopAll();
});


const SECRET = "client-test-secret-of-at-least-32-chars";
const everything = { sub: "u1", topics: { subscribe: ["*"], publish: ["*"] } };
/** An HS256 token as the server expects it; `expiresIn` in seconds. */
const mint = (expiresIn = 60, secret = SECRET) =>
  new SignJWT(everything)
    .setProtectedHeader({ alg: "HS256" })
    .setExpirationTime(Math.floor(Date.now() / 1000) + expiresIn)
    .sign(new TextEncoder().encode(secret));
const fast = { reconnect: { baseMs: 10, capMs: 50 } } satisfies ClientOptions;
const MISSING_TOKEN = "missing token: pass ?token=<JWT> or Authorization: Bearer <JWT>";

describe("server URLs", () => {
  test("ws/wss/http/https, with or without /connect and a trailing slash, all name the same server", () => {
    for (const url of ["ws://h:3000", "ws://h:3000/", "ws://h:3000/connect", "ws://h:3000/connect/", "http://h:3000", "http://h:3000/connect"]) {
      expect(parseServerUrl(url)).toEqual({ base: "http://h:3000", query: {} });
    }
    expect(parseServerUrl("wss://example.com/realtime/connect?room=a%20b")).toEqual({ base: "https://example.com/realtime", query: { room: "a b" } });
    expect(parseServerUrl("https://[::1]:8443/")).toEqual({ base: "https://[::1]:8443", query: {} });
    expect(() => parseServerUrl("ftp://h/connect")).toThrow("switchboard: unsupported scheme ftp: in \"ftp://h/connect\" (use ws, wss, http or https)");
    expect(() => parseServerUrl("localhost:3000")).toThrow(TypeError);
  });

  test("the URL the server prints (ws://host:port/connect) connects, as do the base URL forms", async () => {
    const server = serve();
    for (const url of [server.ws("/connect"), `${server.ws("/connect")}/`, `ws://localhost:${server.port}/`, `http://127.0.0.1:${server.port}`]) {
      const client = open(url, fast);
      const events = recordEvents(client);
      await within(client.ready(), 3000, `open ${url}`);
      expect(await client.ping()).toBeGreaterThanOrEqual(0);
      expect(events.close).toEqual([]);
      client.close();
    }
  });

  test("query parameters in the URL are sent with the upgrade (a token there is accepted)", async () => {
    const server = serve({ AUTH_SECRET: SECRET });
    const client = open(`${server.ws("/connect")}?token=${await mint()}`, fast);
    await within(client.ready(), 3000, "open with the URL's token");
    client.close();
  });
});

describe("refused upgrades", () => {
  test("401 without a token function: HandshakeError with the server's reason, then stop (no retry loop)", async () => {
    const server = serve({ AUTH_SECRET: SECRET });
    const client = open(server.ws(), fast);
    const events = recordEvents(client);
    const ready = client.ready().catch((e) => e);
    await until(() => client.state === "closed", 3000, "the client to stop");
    expect(events.error.map((e) => e.error)).toEqual([new HandshakeError(401, MISSING_TOKEN)]);
    const refusal = events.error[0]!.error as HandshakeError;
    expect(refusal).toBeInstanceOf(HandshakeError);
    expect([refusal.status, refusal.reason]).toEqual([401, MISSING_TOKEN]);
    expect(events.close).toEqual([{ code: 1006, reason: "", willReconnect: false }]);
    expect(events.reconnecting).toEqual([]);
    expect(await ready).toBe(refusal);
    expect(await client.publish("t", 1).catch((e) => e)).toBe(refusal);
  });

  test("401 with a token function: the refusal is reported, then the next attempt gets a fresh token", async () => {
    const server = serve({ AUTH_SECRET: SECRET });
    let calls = 0;
    const client = open(server.ws(), { ...fast, token: () => (++calls === 1 ? mint(60, "a-forged-secret-that-is-32-chars-long!!") : mint()) });
    const events = recordEvents(client);
    await within(client.ready(), 5000, "open with the second token");
    expect(calls).toBe(2);
    expect(events.error.map((e) => e.error)).toEqual([new HandshakeError(401, "invalid token signature")]);
    expect(events.close).toEqual([{ code: 1006, reason: "", willReconnect: true }]);
    expect(events.reconnecting.map((e) => e.attempt)).toEqual([1]);
    expect(events.open.map((e) => e.reconnected)).toEqual([false]);
    client.close();
  });

  test("403 (origin not allowed): stop at once, even with a token function", async () => {
    const server = serve({ ALLOWED_ORIGINS: ["https://app.example.com"] });
    const client = open(server.ws(), { ...fast, token: () => "unused" });
    const events = recordEvents(client);
    await until(() => client.state === "closed", 3000, "the client to stop");
    expect(events.error.map((e) => e.error)).toEqual([new HandshakeError(403, "origin (none) is not allowed")]);
    expect(events.close).toEqual([{ code: 1006, reason: "", willReconnect: false }]);
    expect(events.reconnecting).toEqual([]);
    await expect(client.ready()).rejects.toBeInstanceOf(HandshakeError);
  });

  test("429 (per-IP cap): reported and retried with backoff until a slot frees", async () => {
    const server = serve({ MAX_CONNECTIONS_PER_IP: 1 });
    const first = open(server.ws(), fast);
    await within(first.ready(), 3000, "first client");
    const second = open(server.ws(), fast);
    const events = recordEvents(second);
    await until(() => events.reconnecting.length >= 2, 3000, "two refused attempts");
    expect(second.state).not.toBe("open");
    const refusal = new HandshakeError(429, "at most 1 connections per client address");
    expect(events.error.slice(0, 2).map((e) => e.error)).toEqual([refusal, refusal]);
    expect(events.close.slice(0, 2)).toEqual([
      { code: 1006, reason: "", willReconnect: true },
      { code: 1006, reason: "", willReconnect: true },
    ]);
    first.close();
    await within(second.ready(), 3000, "second client once the slot is free");
    second.close();
  });
});

describe("token()", () => {
  test("after 4001 (token expired) the client reconnects with a fresh token and restores its subscriptions", async () => {
    const server = serve({ AUTH_SECRET: SECRET, PING_INTERVAL_MS: 50, PING_WAIT_MS: 5000 });
    let calls = 0;
    const client = open(server.ws(), { ...fast, token: () => mint(++calls === 1 ? 1 : 60) });
    const events = recordEvents(client);
    await within(client.ready(), 3000, "first open");
    const got: unknown[] = [];
    client.subscribe("news", (data) => got.push(data));
    await client.ping(); // the subscribe went first, so it is held now

    await until(() => events.open.length === 2, 5000, "expiry and reconnect");
    expect(events.close).toEqual([{ code: 4001, reason: "token expired", willReconnect: true }]);
    expect(events.open.map((e) => e.reconnected)).toEqual([false, true]);
    expect(calls).toBe(2);
    expect(events.error).toEqual([]);

    const other = open(server.ws(), { token: () => mint() });
    await within(other.ready(), 3000, "publisher");
    await other.publish("news", "after the new token");
    await until(() => got.length === 1, 3000, "message through the restored subscription");
    expect(got).toEqual(["after the new token"]);
    other.close();
    client.close();
  });

  test("after 4001 without a token function the client stops instead of retrying a dead token", async () => {
    const server = serve({ AUTH_SECRET: SECRET, PING_INTERVAL_MS: 50, PING_WAIT_MS: 5000 });
    const client = open(server.ws(), { ...fast, query: { token: await mint(1) } });
    const events = recordEvents(client);
    await within(client.ready(), 3000, "open");
    await until(() => client.state === "closed", 5000, "expiry");
    expect(events.close).toEqual([{ code: 4001, reason: "token expired", willReconnect: false }]);
    expect(events.reconnecting).toEqual([]);
    const stopped = await client.ready().catch((e) => e);
    expect(stopped).toBeInstanceOf(ConnectionLostError);
    expect(stopped.message).toBe("connection closed (4001 token expired) and not reconnecting: the token expired and there is no token function");
  });

  test("a token() that throws is an error event and a failed attempt with backoff, not a crash", async () => {
    const server = serve({ AUTH_SECRET: SECRET });
    let calls = 0;
    const client = open(server.ws(), {
      ...fast,
      token: () => {
        if (++calls === 1) throw new Error("auth service down");
        return mint();
      },
    });
    const events = recordEvents(client);
    await within(client.ready(), 3000, "open with the second token");
    expect(events.error.map((e) => e.error.message)).toEqual(["token() failed: auth service down"]);
    expect((events.error[0]!.error.cause as Error).message).toBe("auth service down");
    expect(events.close).toEqual([{ code: 1006, reason: "token() failed", willReconnect: true }]);
    expect(events.reconnecting.map((e) => e.attempt)).toEqual([1]);
    client.close();
  });

  test("the token goes in the `token` query parameter, next to the `query` option", async () => {
    const seen: URL[] = [];
    const raw = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: (req) => (seen.push(new URL(req.url)), new Response(JSON.stringify({ error: "no" }), { status: 403 })),
    });
    try {
      const client = open(`ws://127.0.0.1:${raw.port}/connect`, { ...fast, query: { room: "a b&c", token: "overridden" }, token: async () => "t.o.k" });
      const events = recordEvents(client);
      await until(() => client.state === "closed", 3000, "refusal");
      const url = seen[0]!;
      expect(url.pathname).toBe("/connect");
      expect(Object.fromEntries(url.searchParams)).toEqual({ batch: "1", room: "a b&c", token: "t.o.k" }); // batch: asked by default
      expect(events.error.map((e) => e.error)).toEqual([new HandshakeError(403, "no")]);
    } finally {
      raw.stop(true);
    }
  });
});

test("SwitchboardError keeps its code (and topic for a refused subscribe)", () => {
  const error = new SwitchboardError("forbidden", "not allowed to subscribe to x", "x");
  expect([error.name, error.code, error.topic, error.message]).toEqual(["SwitchboardError", "forbidden", "x", "forbidden: not allowed to subscribe to x"]);
});
