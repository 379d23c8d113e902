// Who may connect and what they may do: the token matrix, topic permissions, expiry while connected, Origin.
import { afterAll, describe, expect, test } from "bun:test";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import { loadConfig } from "../src/config.ts";
import { Client, serve, spawnEntry, stopAll, within, type TestServer } from "./helpers.ts";

afterAll(stopAll);

const SECRET = "test-secret-that-is-at-least-32-characters-long";
const key = new TextEncoder().encode(SECRET);
const now = () => Math.floor(Date.now() / 1000);

interface Claims {
  sub?: string;
  topics?: { subscribe?: string[]; publish?: string[] };
  exp?: number;
  nbf?: number;
}
const token = (claims: Claims, signWith: Uint8Array = key) => {
  const jwt = new SignJWT({ ...claims } as Record<string, unknown>).setProtectedHeader({ alg: "HS256" });
  return jwt.sign(signWith);
};

/** Upgrade result over plain fetch: status and JSON body, without opening a socket. */
async function upgrade(server: TestServer, query = "", headers: Record<string, string> = {}) {
  const res = await fetch(`http://127.0.0.1:${server.port}/connect${query}`, {
    headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13", ...headers },
  });
  return { status: res.status, body: res.status === 101 ? undefined : await res.json() };
}

const everything = { sub: "u1", topics: { subscribe: ["*"], publish: ["*"] } };

describe("token matrix", () => {
  const server = serve({ AUTH_SECRET: SECRET });

  test("no token: 401 with a reason, no socket (whatever the case of the Upgrade header)", async () => {
    expect(await upgrade(server)).toEqual({ status: 401, body: { error: "missing token: pass ?token=<JWT> or Authorization: Bearer <JWT>" } });
    expect(await upgrade(server, "", { upgrade: "WebSocket" })).toEqual({
      status: 401,
      body: { error: "missing token: pass ?token=<JWT> or Authorization: Bearer <JWT>" },
    });
    expect(server.gateway.connections.size).toBe(0);
  });

  test("bad signature: 401", async () => {
    const forged = await token({ ...everything, exp: now() + 60 }, new TextEncoder().encode("another-secret-of-at-least-32-chars!!"));
    expect(await upgrade(server, `?token=${forged}`)).toEqual({ status: 401, body: { error: "invalid token signature" } });
  });

  test("expired: 401", async () => {
    expect(await upgrade(server, `?token=${await token({ ...everything, exp: now() - 10 })}`)).toEqual({
      status: 401,
      body: { error: "token expired" },
    });
  });

  test("not yet valid (nbf): 401", async () => {
    expect(await upgrade(server, `?token=${await token({ ...everything, nbf: now() + 60 })}`)).toEqual({
      status: 401,
      body: { error: "token not yet valid" },
    });
  });

  test("garbage and alg=none: 401", async () => {
    expect((await upgrade(server, "?token=not.a.jwt")).status).toBe(401);
    const none = `${btoa(JSON.stringify({ alg: "none" }))}.${btoa(JSON.stringify(everything))}.`;
    expect(await upgrade(server, `?token=${none}`)).toEqual({ status: 401, body: { error: "token algorithm none is not accepted here" } });
  });

  test("claims without topics: 401 naming the claim", async () => {
    expect(await upgrade(server, `?token=${await token({ sub: "u1" })}`)).toEqual({
      status: 401,
      body: { error: "invalid token claims: topics: Invalid input: expected object, received undefined" },
    });
  });

  test("a valid token by query or by Authorization: Bearer opens the socket", async () => {
    const jwt = await token({ ...everything, exp: now() + 60 });
    expect((await upgrade(server, `?token=${jwt}`)).status).toBe(101);
    expect((await upgrade(server, "", { authorization: `Bearer ${jwt}` })).status).toBe(101);
    const c = await Client.open(server.ws(`/connect?token=${jwt}` as "/connect"));
    expect((await c.json()).type).toBe("welcome");
    c.close();
  });

  test("/echo stays open (benchmark route), the token applies to /connect", async () => {
    const c = await Client.open(server.ws("/echo"));
    c.socket.send("x");
    expect(await c.raw()).toBe("x");
    c.close();
  });

  test("a token without exp: 401 (AUTH_REQUIRE_EXP defaults to true)", async () => {
    expect(await upgrade(server, `?token=${await token(everything)}`)).toEqual({ status: 401, body: { error: "token has no exp" } });
  });

  test("AUTH_REQUIRE_EXP=false accepts a token without exp; exp, when present, still applies", async () => {
    const lenient = serve({ AUTH_SECRET: SECRET, AUTH_REQUIRE_EXP: loadConfig({ AUTH_REQUIRE_EXP: "false" }).AUTH_REQUIRE_EXP });
    expect((await upgrade(lenient, `?token=${await token(everything)}`)).status).toBe(101);
    expect(await upgrade(lenient, `?token=${await token({ ...everything, exp: now() - 10 })}`)).toEqual({ status: 401, body: { error: "token expired" } });
  });

  test("RS256 tokens verify against AUTH_PUBLIC_KEY", async () => {
    const { publicKey, privateKey } = await generateKeyPair("RS256", { extractable: true });
    const rsa = serve({ AUTH_PUBLIC_KEY: await exportSPKI(publicKey) });
    const jwt = await new SignJWT(everything).setProtectedHeader({ alg: "RS256" }).setExpirationTime("1m").sign(privateKey);
    expect((await upgrade(rsa, `?token=${jwt}`)).status).toBe(101);
    // an HS256 token is refused where only a public key is configured
    expect(await upgrade(rsa, `?token=${await token(everything)}`)).toEqual({
      status: 401,
      body: { error: "token algorithm HS256 is not accepted here" },
    });
  });

  test("ES256 tokens verify against an EC P-256 AUTH_PUBLIC_KEY; RS256 ones are then refused", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
    const ec = serve({ AUTH_PUBLIC_KEY: loadConfig({ AUTH_PUBLIC_KEY: await exportSPKI(publicKey) }).AUTH_PUBLIC_KEY });
    const jwt = await new SignJWT(everything).setProtectedHeader({ alg: "ES256" }).setExpirationTime("1m").sign(privateKey);
    expect((await upgrade(ec, `?token=${jwt}`)).status).toBe(101);
    const rsaKey = (await generateKeyPair("RS256")).privateKey;
    const rs256 = await new SignJWT(everything).setProtectedHeader({ alg: "RS256" }).setExpirationTime("1m").sign(rsaKey);
    expect(await upgrade(ec, `?token=${rs256}`)).toEqual({ status: 401, body: { error: "token algorithm RS256 is not accepted here" } });
  });
});

describe("topic permissions", () => {
  const server = serve({ AUTH_SECRET: SECRET });
  const connectAs = async (claims: Claims) => {
    const c = await Client.open(server.ws(`/connect?token=${await token({ exp: now() + 60, ...claims })}` as "/connect"));
    await c.json();
    return c;
  };

  test("exact and prefix patterns allow; anything else is forbidden, and the connection stays open", async () => {
    const c = await connectAs({ sub: "alice", topics: { subscribe: ["news", "chat.room.*"], publish: ["chat.room.*"] } });
    // History is on (the default): a first subscribe carries the topic's random epoch and its last offset.
    const at = (topic: string, offset: number) => ({ type: "subscribed" as const, topic, epoch: expect.stringMatching(/^[0-9a-z]{8}$/), offset });
    expect(await c.request({ type: "subscribe", topic: "news" })).toEqual(at("news", 0));
    const room = await c.request({ type: "subscribe", topic: "chat.room.42" });
    expect(room).toEqual(at("chat.room.42", 0));
    expect(await c.request({ type: "subscribe", topic: "chat.room." })).toEqual(at("chat.room.", 0));
    expect(await c.request({ type: "subscribe", topic: "newsroom", id: 1 })).toEqual({
      type: "error",
      code: "forbidden",
      message: "not allowed to subscribe to newsroom",
      id: 1,
    });
    expect(await c.request({ type: "subscribe", topic: "chat.roomx" })).toMatchObject({ code: "forbidden" });
    expect(await c.request({ type: "publish", topic: "news", data: 1, id: 2 })).toEqual({
      type: "error",
      code: "forbidden",
      message: "not allowed to publish to news",
      id: 2,
    });
    c.send({ type: "publish", topic: "chat.room.42", data: "hi", id: 3 });
    const frames = [await c.json(), await c.json()];
    expect(frames).toContainEqual({ type: "ack", id: 3, offset: 1 });
    expect(frames).toContainEqual({ type: "message", topic: "chat.room.42", data: "hi", offset: 1 });
    // A history request needs subscribe permission, like a subscribe.
    expect(await c.request({ type: "history", topic: "newsroom", id: 4 })).toEqual({
      type: "error",
      code: "forbidden",
      message: "not allowed to read the history of newsroom",
      id: 4,
    });
    expect(await c.request({ type: "history", topic: "chat.room.42", id: 5 })).toEqual({
      type: "history",
      topic: "chat.room.42",
      epoch: (room as { epoch: string }).epoch,
      offset: 1,
      messages: [{ offset: 1, data: "hi" }],
      id: 5,
    });
    c.close();
  });

  test("a token with empty permissions can connect but do nothing", async () => {
    const c = await connectAs({ sub: "nobody", topics: {} });
    expect(await c.request({ type: "subscribe", topic: "a" })).toMatchObject({ type: "error", code: "forbidden" });
    expect(await c.request({ type: "publish", topic: "a", data: 1 })).toMatchObject({ type: "error", code: "forbidden" });
    expect(await c.request({ type: "ping" })).toEqual({ type: "pong" });
    c.close();
  });
});

// Expiry while connected (4001 at exp, not before) runs on an injected clock: test/admission-seams.test.ts.

describe("ALLOWED_ORIGINS", () => {
  test("other or missing Origin gets 403; a listed one is accepted, on both routes", async () => {
    const server = serve({ ALLOWED_ORIGINS: ["https://app.example.com", "http://localhost:5173"] });
    expect(await upgrade(server, "", { origin: "https://evil.example" })).toEqual({
      status: 403,
      body: { error: "origin https://evil.example is not allowed" },
    });
    expect(await upgrade(server, "")).toEqual({ status: 403, body: { error: "origin (none) is not allowed" } });
    expect((await upgrade(server, "", { origin: "http://localhost:5173" })).status).toBe(101);
    const echo = await fetch(`http://127.0.0.1:${server.port}/echo`, {
      headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13", origin: "https://evil.example" },
    });
    expect(echo.status).toBe(403);
  });

  test("entries written with a trailing slash, upper case or the default port admit the browser's Origin", async () => {
    const { ALLOWED_ORIGINS } = loadConfig({ ALLOWED_ORIGINS: "https://good.example/,https://Other.Example,https://third.example:443,http://dev.example:8080/" });
    const server = serve({ ALLOWED_ORIGINS });
    for (const origin of ["https://good.example", "https://other.example", "https://third.example", "http://dev.example:8080"]) {
      expect({ origin, status: (await upgrade(server, "", { origin })).status }).toEqual({ origin, status: 101 });
    }
    expect(await upgrade(server, "", { origin: "http://good.example" })).toEqual({ status: 403, body: { error: "origin http://good.example is not allowed" } });
    expect((await upgrade(server, "", { origin: "http://dev.example" })).status).toBe(403);
  });
});

describe("open mode", () => {
  test("the entry point says so loudly on start", async () => {
    const entry = await spawnEntry({ LOG_LEVEL: "info" });
    entry.kill("SIGTERM");
    const { stdout: out, stderr } = await within(entry.exited(), 8000, "exit");
    expect(stderr).toContain("WARNING: open mode");
    expect(out).toContain("[OPEN MODE]");
    expect(out).toContain('"auth":"open"');
  });
});
