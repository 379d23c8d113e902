// switchboard embedded in an existing Elysia app (src/plugin.ts), in-process on real sockets, in both ways an
// app can run the sockets: `listen({ websocket: sb.websocket })` (Bun calls the gateway's handlers directly)
// and a plain `listen()` (Elysia's own dispatcher calls them through the connection's Conn). The host's own
// routes (plain and `.ws()`), the HTTP API, frames, heartbeat, Bun options (payload limit, deflate), prefix,
// drain/stop (and publishes refused meanwhile), use() after listen, the plugin inside a sub-app or a group, the
// `env` option, the shipped examples/embed.ts as a child process, and the connection cap under a stampede.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import net from "node:net";
import { randomBytes } from "node:crypto";
import { Elysia, type AnyElysia } from "elysia";
import { z } from "zod";
import { connect, type SwitchboardClient } from "../src/client.ts";
import type { Config } from "../src/config.ts";
import { Logger } from "../src/log.ts";
import { NOT_ATTACHED } from "../src/auth/admission.ts";
import { switchboard } from "../src/plugin.ts";
import { defineTopics } from "../src/topics/define.ts";
import { Client, collectOutput, Opcode, RawPeer, until, within } from "./helpers.ts";

const KEY = "embed-test-api-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
const HELLO = '{"hello":"from the host app"}';
const NOT_FOUND = "NOT_FOUND"; // Elysia's own 404 body: the host app's, not switchboard's
const USE_AFTER_LISTEN = "switchboard: use() it before the app listens (it sets the app's WebSocket options)";
const UPGRADE_HEADERS = { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" };
const AT_LIMIT = "server is at its connection limit: retry later or elsewhere";

const topics = defineTopics({
  // Schema-checked: subscribers get the schema's output (unknown keys stripped).
  "chat.*": { schema: z.object({ user: z.string(), text: z.string() }) },
  // A schema whose transform throws (the pipeline refuses the publish with invalid_data).
  "boom.*": {
    schema: z.object({ n: z.number() }).transform((v) => {
      if (v.n === 13) throw new Error("unlucky");
      return v;
    }),
    history: false,
  },
});

type Mode = "native" | "dispatcher";

interface Embedded {
  app: Elysia;
  sb: ReturnType<typeof switchboard>;
  port: number;
  http: string;
  ws(path?: string): string;
  /** warn and error log lines of the plugin (LOG_LEVEL silent; the injected logger records them). */
  logs: string[];
  /** Stops switchboard then the app (once; the cleanup does it for tests that do not). */
  stop(): Promise<void>;
}

const running: Embedded[] = [];
const clients: Client[] = [];
const typedClients: SwitchboardClient<typeof topics>[] = [];

afterEach(async () => {
  for (const c of typedClients.splice(0)) c.close();
  for (const c of clients.splice(0)) c.close();
  for (const e of running.splice(0)) await within(e.stop(), 10_000, "sb.stop() then app.stop()");
});

/** A host app with its own route, switchboard mounted, listening on 127.0.0.1:0 in `mode`. */
function embed(mode: Mode, config: Partial<Config> = {}, mount: { prefix?: string } = {}): Embedded {
  const logs: string[] = [];
  const sb = switchboard({
    config: { LOG_LEVEL: "silent", API_KEY: KEY, ...config },
    topics,
    prefix: mount.prefix,
    log: new Logger("warn", (line) => logs.push(line)),
  });
  return host(mode, sb, logs);
}

/**
 * A host app with its own route and `sb` mounted by `mount` (by default `app.use(sb)`), listening on
 * 127.0.0.1:0 in `mode`; `logs` is where the plugin's logger writes.
 */
function host(mode: Mode, sb: ReturnType<typeof switchboard>, logs: string[], mount: (app: Elysia) => AnyElysia = (app) => app.use(sb)): Embedded {
  const app = mount(new Elysia().get("/hello", () => ({ hello: "from the host app" })) as unknown as Elysia);
  if (mode === "native") app.listen({ port: 0, hostname: "127.0.0.1", websocket: sb.websocket as never });
  else app.listen({ port: 0, hostname: "127.0.0.1" });
  const port = app.server!.port!;
  let stopped: Promise<void> | undefined;
  const embedded: Embedded = {
    app: app as unknown as Elysia,
    sb,
    port,
    http: `http://127.0.0.1:${port}`,
    ws: (path = "/connect") => `ws://127.0.0.1:${port}${path}`,
    logs,
    stop: () =>
      (stopped ??= (async () => {
        await sb.stop();
        if (app.server) await app.stop();
      })()),
  };
  running.push(embedded);
  return embedded;
}

async function open(url: string): Promise<Client> {
  const client = await Client.open(url);
  clients.push(client);
  return client;
}

/** Opens a /connect client and checks its welcome frame exactly. */
async function welcomed(url: string, heartbeat: { intervalMs: number; timeoutMs: number }): Promise<Client> {
  const client = await open(url);
  expect(await client.json()).toEqual({ type: "welcome", connectionId: expect.stringMatching(/^[0-9a-z]+-[0-9a-z]+$/), heartbeat });
  return client;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<[number, string]> {
  const res = await fetch(url, { headers });
  return [res.status, await res.text()];
}

async function post(url: string, body: unknown, headers: Record<string, string> = AUTH): Promise<[number, unknown]> {
  const res = await fetch(url, { method: "POST", body: JSON.stringify(body), headers });
  return [res.status, await res.json()];
}

async function health(e: Embedded, prefix = ""): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${e.http}${prefix}/healthz`);
  return { status: res.status, body: await res.json() };
}

const connectionsOf = async (e: Embedded, prefix = "") => ((await health(e, prefix)).body as { connections: number }).connections;

const ENV_KEY = "env-api-key-01234567"; // 20 characters
const API_DISABLED = "HTTP API is disabled: set API_KEY on the server to enable it";
const SHUTTING_DOWN = "server shutting down: nothing was published; publish through another node";
const BUN_OPTIONS_HINT = "app.use(switchboard(...)) on the app that listens, or listen({ websocket: sb.websocket })";

/** A plugin with the embed defaults (LOG_LEVEL silent, the topics, a recording logger) and `options` over them. */
function plugin(options: Parameters<typeof switchboard>[0] = {}) {
  const logs: string[] = [];
  const sb = switchboard({ config: { LOG_LEVEL: "silent" }, topics, log: new Logger("warn", (line) => logs.push(line)), ...options });
  return { sb, logs };
}

/** The plugin's log lines as objects (their time any string). */
const logged = (logs: string[]) => logs.map((line) => JSON.parse(line) as Record<string, unknown>);

/** Runs `build` with these variables set in process.env, then restores what was there (unset stays unset). */
function withProcessEnv<T>(vars: Record<string, string>, build: () => T): T {
  const saved = Object.keys(vars).map((name) => [name, process.env[name]] as const);
  Object.assign(process.env, vars);
  try {
    return build();
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

describe.each(["native", "dispatcher"] as const)("embedded, %s mode", (mode) => {
  // PING_INTERVAL_MS + PING_WAIT_MS = the welcome's timeoutMs; MAX_PAYLOAD_BYTES far below Bun's 16 MiB default.
  const BASE = { PING_INTERVAL_MS: 2000, PING_WAIT_MS: 3000, MAX_PAYLOAD_BYTES: 1024 } as const;
  const BEAT = { intervalMs: 2000, timeoutMs: 5000 };

  test("the host's own routes answer beside /connect; socket and HTTP publishes reach subscribers with exact frames", async () => {
    const e = embed(mode, BASE);
    expect(e.sb.url).toBe(e.http);
    expect(await get(`${e.http}/hello`)).toEqual([200, HELLO]);
    expect(await get(`${e.http}/nope`)).toEqual([404, NOT_FOUND]);
    expect(await health(e)).toEqual({ status: 200, body: { status: "ok", connections: 0, uptimeMs: expect.any(Number) } });

    const sub = await welcomed(e.ws(), BEAT);
    const pub = await welcomed(e.ws(), BEAT);
    const subscribed = await sub.request({ type: "subscribe", topic: "chat.lobby", id: "s1" });
    expect(subscribed).toEqual({ type: "subscribed", topic: "chat.lobby", epoch: expect.any(String), offset: 0, id: "s1" });

    // From a socket: the publisher gets its ack with the offset, the subscriber the schema's output.
    expect(await pub.request({ type: "publish", topic: "chat.lobby", data: { user: "ann", text: "hi", extra: true }, id: "p1" })).toEqual({
      type: "ack",
      id: "p1",
      offset: 1,
    });
    expect(await sub.text()).toBe('{"type":"message","topic":"chat.lobby","data":{"user":"ann","text":"hi"},"offset":1}');

    // From the HTTP API of the plugin, on the host's port.
    expect(await post(`${e.http}/api/publish`, { topic: "chat.lobby", data: { user: "backend", text: "hello" } })).toEqual([
      200,
      { status: "published", topic: "chat.lobby", offset: 2 },
    ]);
    expect(await sub.text()).toBe('{"type":"message","topic":"chat.lobby","data":{"user":"backend","text":"hello"},"offset":2}');
    expect(await post(`${e.http}/api/publish`, { topic: "chat.lobby", data: { user: "backend" } })).toEqual([
      400,
      { error: "does not match the schema of chat.*: data.text: Invalid input: expected string, received undefined" },
    ]);
    expect(await post(`${e.http}/api/publish`, { topic: "chat.lobby", data: { user: "x", text: "y" } }, { "content-type": "application/json" })).toEqual([
      401,
      { error: "missing Authorization: Bearer <API_KEY>" },
    ]);
    // Nothing else reached the subscriber (frames keep their order: the pong is next).
    expect(await sub.request({ type: "ping", id: 9 })).toEqual({ type: "pong", id: 9 });
    expect(await connectionsOf(e)).toBe(2);
    expect(e.logs).toEqual([]);
  });

  test("the host's own .ws() route gets its own events (open, message, ping, pong, close) beside /connect, and outlives sb.stop()", async () => {
    const { sb, logs } = plugin({ config: { LOG_LEVEL: "silent", API_KEY: KEY, ...BASE } });
    const events: string[] = [];
    // Declared after app.use(sb): Elysia's request context (params here) is what the route's handlers get.
    const e = host(mode, sb, logs, (app) =>
      app.use(sb).ws("/chat/:room", {
        open(ws) {
          events.push(`open ${ws.data.params.room}`);
          ws.send(`welcome to ${ws.data.params.room}`);
        },
        message(ws, message) {
          ws.send({ room: ws.data.params.room, echoed: message });
        },
        ping() {
          events.push("ping");
        },
        pong() {
          events.push("pong");
        },
        close(ws, code, reason) {
          events.push(`close ${ws.data.params.room} ${code} ${reason}`);
        },
      }),
    );
    const chat = await open(e.ws("/chat/lobby"));
    expect(await chat.text()).toBe("welcome to lobby");
    chat.send("hi");
    expect(await chat.text()).toBe('{"room":"lobby","echoed":"hi"}');
    chat.send('{"n":1}'); // Elysia's own parsing, as on any Elysia route
    expect(await chat.text()).toBe('{"room":"lobby","echoed":{"n":1}}');

    // /connect beside it: welcome, subscribe, a publish from a socket and one over HTTP.
    const sub = await welcomed(e.ws(), BEAT);
    const pub = await welcomed(e.ws(), BEAT);
    expect(await sub.request({ type: "subscribe", topic: "chat.lobby", id: 1 })).toEqual({ type: "subscribed", topic: "chat.lobby", epoch: expect.any(String), offset: 0, id: 1 });
    expect(await pub.request({ type: "publish", topic: "chat.lobby", data: { user: "ann", text: "hi" }, id: 2 })).toEqual({ type: "ack", id: 2, offset: 1 });
    expect(await sub.text()).toBe('{"type":"message","topic":"chat.lobby","data":{"user":"ann","text":"hi"},"offset":1}');
    expect(await post(`${e.http}/api/publish`, { topic: "chat.lobby", data: { user: "backend", text: "yo" } })).toEqual([200, { status: "published", topic: "chat.lobby", offset: 2 }]);
    expect(await sub.text()).toBe('{"type":"message","topic":"chat.lobby","data":{"user":"backend","text":"yo"},"offset":2}');
    // The host's socket got none of it, and is not one of switchboard's connections.
    chat.send("still here");
    expect(await chat.text()).toBe('{"room":"lobby","echoed":"still here"}');
    expect(chat.pending).toBe(0);
    expect(await connectionsOf(e)).toBe(2);

    // Pings and pongs of a raw peer reach the route's own handlers (Bun answers the ping itself).
    const peer = await RawPeer.connect(e.port, "/chat/raw");
    try {
      await until(() => peer.frames.length >= 1, 3000, "the route's greeting");
      expect(peer.frames[0]!.payload.toString()).toBe("welcome to raw");
      peer.send(Opcode.ping, "p1");
      await until(() => peer.count(Opcode.pong) === 1 && events.includes("ping"), 3000, "the pong and the route's ping event");
      expect(peer.frames.find((f) => f.opcode === Opcode.pong)!.payload.toString()).toBe("p1");
      peer.send(Opcode.pong, "unasked");
      await until(() => events.includes("pong"), 3000, "the route's pong event");
      peer.send(Opcode.close, Buffer.from([0x0f, 0xa2, ...Buffer.from("raw leaves")])); // 4002
      await until(() => peer.closeFrame() !== undefined, 3000, "the close echoed");
    } finally {
      peer.destroy();
    }
    chat.socket.close(4001, "bye");
    await until(() => events.length === 6, 3000, "both close events");
    expect(events).toEqual(["open lobby", "open raw", "ping", "pong", "close raw 4002 raw leaves", "close lobby 4001 bye"]);

    // sb.stop() drains switchboard's sockets only: the route's sockets go on.
    const other = await open(e.ws("/chat/after"));
    expect(await other.text()).toBe("welcome to after");
    await within(sb.stop(), 5000, "sb.stop()");
    expect(await within(sub.closed, 5000, "/connect closed")).toEqual({ code: 1001, reason: "server shutting down" });
    other.send("after stop");
    expect(await other.text()).toBe('{"room":"after","echoed":"after stop"}');
    expect(logs).toEqual([]);
  });

  test("binary frame -> unsupported_binary, invalid JSON -> invalid_json, a throwing schema -> invalid_data; the socket goes on", async () => {
    const e = embed(mode, BASE);
    const c = await welcomed(e.ws(), BEAT);
    c.socket.send(new TextEncoder().encode(JSON.stringify({ type: "ping", id: 7 })));
    expect(await c.text()).toBe('{"type":"error","code":"unsupported_binary","message":"binary frames are not supported on /connect: send JSON text","id":7}');
    c.send("{not json");
    expect(await c.text()).toBe('{"type":"error","code":"invalid_json","message":"frame is not valid JSON"}');
    expect(await c.request({ type: "ping", id: "still" })).toEqual({ type: "pong", id: "still" });

    // A schema that throws is the definition's bug: refused like bad data, the connection goes on (the one input
    // that made a frame handler throw, before src/topics/pipeline.ts caught it; no other is easy to provoke).
    c.send({ type: "publish", topic: "boom.x", data: { n: 13 }, id: 1 });
    expect(await c.text()).toBe('{"type":"error","code":"invalid_data","message":"the schema of boom.* failed: unlucky","id":1}');
    expect(await c.request({ type: "publish", topic: "boom.x", data: { n: 1 }, id: 2 })).toEqual({ type: "ack", id: 2 });
    expect(await c.request({ type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
    expect(await connectionsOf(e)).toBe(1);
    expect(e.logs).toEqual([]);
  });

  test("heartbeat options reach the sockets: a silent raw peer is closed with 4000, a client that answers pings stays", async () => {
    const e = embed(mode, { PING_INTERVAL_MS: 100, PING_WAIT_MS: 300 });
    const answering = await welcomed(e.ws(), { intervalMs: 100, timeoutMs: 400 });
    let answeringClosed = false;
    void answering.closed.then(() => (answeringClosed = true));
    const peer = await RawPeer.connect(e.port, "/connect");
    try {
      await until(() => peer.closeFrame() !== undefined, 5000, "the silent peer's close frame");
      expect(peer.closeFrame()).toEqual({ code: 4000, reason: "heartbeat timeout" });
      expect(peer.count(Opcode.ping)).toBeGreaterThanOrEqual(1);
      const first = peer.frames[0]!;
      expect(first.opcode).toBe(Opcode.text);
      expect(JSON.parse(first.payload.toString())).toEqual({
        type: "welcome",
        connectionId: expect.any(String),
        heartbeat: { intervalMs: 100, timeoutMs: 400 },
      });
      await until(() => peer.ended, 3000, "the silent peer's TCP end");
    } finally {
      peer.destroy();
    }
    // The browser-style client answers pings (its pongs reach the gateway in this mode too): still open after
    // several of its deadlines have passed without any frame of its own.
    await answering.silence(1500);
    expect(answeringClosed).toBe(false);
    expect(await answering.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
    expect(e.sb.gateway.metrics.heartbeatTimeouts).toBe(1);
    expect(await connectionsOf(e)).toBe(1);
  });

  test("a peer that never answers pings but sends its own stays: its pings reach the gateway in this mode too", async () => {
    const e = embed(mode, { PING_INTERVAL_MS: 100, PING_WAIT_MS: 300 });
    const peer = await RawPeer.connect(e.port, "/connect");
    try {
      // Pings every 50 ms for 1.5 s: several read deadlines (400 ms) long, never a pong.
      for (let i = 0; i < 30; i++) {
        peer.send(Opcode.ping, "p");
        await Bun.sleep(50);
      }
      expect(peer.closeFrame()).toBeUndefined();
      expect(peer.ended).toBe(false);
      expect(peer.count(Opcode.pong)).toBeGreaterThanOrEqual(1); // Bun answers them itself
      expect(e.sb.gateway.metrics.heartbeatTimeouts).toBe(0);
      expect(await connectionsOf(e)).toBe(1);
    } finally {
      peer.destroy();
    }
  });

  test("Bun options reach Bun: MAX_PAYLOAD_BYTES (a frame over it closes with 1009) and permessage-deflate", async () => {
    const e = embed(mode, BASE);
    const c = await welcomed(e.ws(), BEAT);
    c.send(JSON.stringify({ type: "ping", id: 1 }).padEnd(1024, " "));
    expect(await c.json()).toEqual({ type: "pong", id: 1 });
    c.send("a".repeat(1025));
    expect(await within(c.closed, 5000, "close")).toEqual({ code: 1009, reason: expect.any(String) });

    const offer = { "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits" };
    const deflating = await RawPeer.connect(e.port, "/connect", offer);
    deflating.destroy();
    expect(deflating.response.toLowerCase()).toContain("sec-websocket-extensions: permessage-deflate");
    const off = embed(mode, { ...BASE, PERMESSAGE_DEFLATE: false });
    const plain = await RawPeer.connect(off.port, "/connect", offer);
    plain.destroy();
    expect(plain.response.toLowerCase()).not.toContain("sec-websocket-extensions");
  });

  test("an upgrade with `Upgrade: WebSocket` (not Elysia's exact spelling) is served through the same handlers", async () => {
    const e = embed(mode, BASE);
    const peer = await RawPeer.connect(e.port, "/connect", { Upgrade: "WebSocket" });
    try {
      await until(() => peer.frames.length >= 1, 3000, "welcome");
      expect(JSON.parse(peer.frames[0]!.payload.toString())).toEqual({ type: "welcome", connectionId: expect.any(String), heartbeat: BEAT });
      peer.send(Opcode.text, JSON.stringify({ type: "ping", id: "caps" }));
      await until(() => peer.frames.length >= 2, 3000, "pong");
      expect(peer.frames[1]!.payload.toString()).toBe('{"type":"pong","id":"caps"}');
      expect(await connectionsOf(e)).toBe(1);
    } finally {
      peer.destroy();
    }
    await until(async () => (await connectionsOf(e)) === 0, 3000, "the peer counted out");
  });

  test('prefix "/rt": /rt/connect, /rt/api/publish, /rt/healthz; /connect is the host\'s 404; the typed client works', async () => {
    const e = embed(mode, BASE, { prefix: "/rt" });
    expect(await health(e, "/rt")).toEqual({ status: 200, body: { status: "ok", connections: 0, uptimeMs: expect.any(Number) } });
    expect(await get(`${e.http}/connect`, UPGRADE_HEADERS)).toEqual([404, NOT_FOUND]);
    expect(await get(`${e.http}/connect`)).toEqual([404, NOT_FOUND]);
    expect(await get(`${e.http}/healthz`)).toEqual([404, NOT_FOUND]);
    const unprefixed = await fetch(`${e.http}/api/publish`, { method: "POST", body: "{}", headers: AUTH });
    expect([unprefixed.status, await unprefixed.text()]).toEqual([404, NOT_FOUND]);
    expect(await get(`${e.http}/hello`)).toEqual([200, HELLO]);

    const raw = await welcomed(e.ws("/rt/connect"), BEAT);
    expect(await raw.request({ type: "subscribe", topic: "chat.rt", id: 1 })).toEqual({ type: "subscribed", topic: "chat.rt", epoch: expect.any(String), offset: 0, id: 1 });

    const client = connect<typeof topics>(`ws://127.0.0.1:${e.port}/rt`, { reconnect: false });
    typedClients.push(client);
    const got: { user: string; text: string }[] = [];
    const subscribed = new Promise<void>((resolve) => client.on("subscribed", () => resolve()));
    client.subscribe("chat.rt", (data) => void got.push(data));
    await within(client.ready(), 5000, "typed client ready");
    await within(subscribed, 5000, "typed client subscribed");
    expect(await post(`${e.http}/rt/api/publish`, { topic: "chat.rt", data: { user: "backend", text: "via /rt" } })).toEqual([
      200,
      { status: "published", topic: "chat.rt", offset: 1 },
    ]);
    expect(await within(client.publish("chat.rt", { user: "typed", text: "hi" }), 5000, "typed publish")).toEqual({ offset: 2 });
    await until(() => got.length === 2, 3000, "two messages for the typed client");
    expect(got).toEqual([
      { user: "backend", text: "via /rt" },
      { user: "typed", text: "hi" },
    ]);
    expect(await raw.text()).toBe('{"type":"message","topic":"chat.rt","data":{"user":"backend","text":"via /rt"},"offset":1}');
    expect(await raw.text()).toBe('{"type":"message","topic":"chat.rt","data":{"user":"typed","text":"hi"},"offset":2}');
    expect(await connectionsOf(e, "/rt")).toBe(2);
  });

  test("sb.stop() drains: clients see 1001, upgrades get 503, the host's routes answer until app.stop()", async () => {
    // A grace far beyond the bounded wait below: a stop that sat out the grace instead of finishing would fail it.
    const e = embed(mode, { ...BASE, SHUTDOWN_GRACE_MS: 60_000 });
    const a = await welcomed(e.ws(), BEAT);
    const b = await welcomed(e.ws(), BEAT);
    expect((await a.request({ type: "subscribe", topic: "chat.x" })).type).toBe("subscribed");
    expect(await connectionsOf(e)).toBe(2);

    await within(e.sb.stop(), 5000, "sb.stop()");
    expect(await within(a.closed, 5000, "a closed")).toEqual({ code: 1001, reason: "server shutting down" });
    expect(await within(b.closed, 5000, "b closed")).toEqual({ code: 1001, reason: "server shutting down" });
    expect(e.sb.gateway.connections.size).toBe(0);

    const refused = await fetch(`${e.http}/connect`, { headers: UPGRADE_HEADERS });
    expect([refused.status, await refused.json()]).toEqual([503, { error: "server shutting down" }]);
    expect(await health(e)).toEqual({ status: 503, body: { status: "draining", connections: 0, uptimeMs: expect.any(Number) } });
    expect(await get(`${e.http}/hello`)).toEqual([200, HELLO]);
    // A second stop() is the same stop.
    await within(e.sb.stop(), 1000, "second sb.stop()");

    await within(e.app.stop(), 5000, "app.stop()");
    await expect(fetch(`${e.http}/hello`)).rejects.toThrow();
    expect(e.logs).toEqual([]);
  });

  test('app.stop(true) without sb.stop(): Bun closes the sockets (1001 "Server closed"), then the plugin releases itself', async () => {
    const e = embed(mode, BASE);
    const c = await welcomed(e.ws(), BEAT);
    await within(e.app.stop(true), 5000, "app.stop(true)");
    expect(await within(c.closed, 5000, "closed")).toEqual({ code: 1001, reason: "Server closed" });
    // The app's onStop ran the plugin's stop(): drained (upgrades would be refused), nothing counted.
    expect(e.sb.gateway.draining).toBe(true);
    expect(e.sb.gateway.connections.size).toBe(0);
    expect(e.sb.gateway.registry.counted).toBe(0);
  });

  test("app.use(sb) after the app listens throws the documented error; the app keeps serving", async () => {
    const e = embed(mode, BASE);
    let thrown: unknown;
    try {
      e.app.use(e.sb);
    } catch (error) {
      thrown = error;
    }
    expect((thrown as Error | undefined)?.message).toBe(USE_AFTER_LISTEN);

    // A plugin never mounted, onto the listening app: the same refusal.
    const late = switchboard({ config: { LOG_LEVEL: "silent" }, topics });
    thrown = undefined;
    try {
      e.app.use(late);
    } catch (error) {
      thrown = error;
    }
    await late.stop();
    expect((thrown as Error | undefined)?.message).toBe(USE_AFTER_LISTEN);

    expect(await get(`${e.http}/hello`)).toEqual([200, HELLO]);
    const c = await welcomed(e.ws(), BEAT);
    expect(await c.request({ type: "ping", id: 1 })).toEqual({ type: "pong", id: 1 });
  });

  test("200 simultaneous upgrades with MAX_CONNECTIONS=150: exactly 150 open, 50 refused 503; nothing leaks", async () => {
    // A read deadline beyond the test: the raw peers never answer pings.
    const e = embed(mode, { MAX_CONNECTIONS: 150, PING_INTERVAL_MS: 3_600_000 });
    const upgrades = await within(Promise.all(Array.from({ length: 200 }, () => rawUpgrade(e.port, "/connect"))), 15_000, "200 upgrades");
    try {
      const opened = upgrades.filter((u) => u.status === 101);
      const refused = upgrades.filter((u) => u.status !== 101);
      expect(opened).toHaveLength(150);
      expect(refused.map((u) => [u.status, u.body])).toEqual(Array.from({ length: 50 }, () => [503, { error: AT_LIMIT }]));
      expect(await connectionsOf(e)).toBe(150);
      expect(e.sb.gateway.metrics.upgradesRejected.get("max_connections")).toBe(50);
      // Every opened socket was greeted (the welcome is the first frame after the 101).
      await until(() => opened.every((u) => u.welcomed()), 5000, "150 welcome frames");
    } finally {
      for (const u of upgrades) u.socket.destroy();
    }
    await until(async () => (await connectionsOf(e)) === 0, 5000, "/healthz connections back to 0");
    expect(e.sb.gateway.registry.counted).toBe(0);
    expect(e.sb.gateway.heartbeat.held()).toEqual({ deadlines: 0, expiries: 0 });

    // Every slot came back: a second full round opens, then leaves cleanly (close frames this time).
    const again = await within(Promise.all(Array.from({ length: 150 }, () => Client.open(e.ws()))), 15_000, "second round");
    clients.push(...again);
    expect(await connectionsOf(e)).toBe(150);
    for (const c of again) c.close();
    await within(Promise.all(again.map((c) => c.closed)), 5000, "second round closed");
    await until(async () => (await connectionsOf(e)) === 0, 5000, "/healthz connections back to 0 again");
    expect(e.sb.gateway.registry.counted).toBe(0);
  });
});

describe("options.env: the plugin reads variables only when given them", () => {
  const message = { topic: "chat.env", data: { user: "backend", text: "hi" } };
  const bearer = (key: string) => ({ authorization: `Bearer ${key}`, "content-type": "application/json" });

  test("API_KEY and PING_INTERVAL_MS in process.env are ignored without `env`: the API is off (403), the heartbeat the default", async () => {
    const { sb, logs } = withProcessEnv({ API_KEY: ENV_KEY, PING_INTERVAL_MS: "1000" }, () => plugin());
    const e = host("native", sb, logs);
    expect(await post(`${e.http}/api/publish`, message, bearer(ENV_KEY))).toEqual([403, { error: API_DISABLED }]);
    await welcomed(e.ws(), { intervalMs: 5000, timeoutMs: 15_000 });
    expect(logs).toEqual([]);
  });

  test("`env: {API_KEY, PING_INTERVAL_MS}`: the API answers with that key (200; another key 401), the welcome has that interval", async () => {
    const { sb, logs } = plugin({ env: { API_KEY: ENV_KEY, PING_INTERVAL_MS: "1000" } });
    const e = host("native", sb, logs);
    expect(await post(`${e.http}/api/publish`, message, bearer(ENV_KEY))).toEqual([200, { status: "published", topic: "chat.env", offset: 1 }]);
    expect(await post(`${e.http}/api/publish`, message, bearer(KEY))).toEqual([401, { error: "invalid API key" }]);
    await welcomed(e.ws(), { intervalMs: 1000, timeoutMs: 11_000 }); // + PING_WAIT_MS's default 10 s
    expect(logs).toEqual([]);
  });

  test("`env: process.env` reads it as the standalone server does; `config` still wins over it", async () => {
    const { sb, logs } = withProcessEnv({ API_KEY: ENV_KEY }, () => plugin({ env: process.env }));
    const e = host("native", sb, logs);
    expect(await post(`${e.http}/api/publish`, message, bearer(ENV_KEY))).toEqual([200, { status: "published", topic: "chat.env", offset: 1 }]);

    const over = withProcessEnv({ API_KEY: ENV_KEY }, () => plugin({ env: process.env, config: { LOG_LEVEL: "silent", API_KEY: KEY } }));
    const o = host("native", over.sb, over.logs);
    expect(await post(`${o.http}/api/publish`, message, bearer(ENV_KEY))).toEqual([401, { error: "invalid API key" }]);
    expect(await post(`${o.http}/api/publish`, message, bearer(KEY))).toEqual([200, { status: "published", topic: "chat.env", offset: 1 }]);
    expect([...logs, ...over.logs]).toEqual([]);
  });
});

describe("the plugin where the listening app's start or options do not reach it", () => {
  test("inside a sub-app (`app.use(new Elysia().use(sb))`), native mode: /connect, the API and the host's routes all work", async () => {
    const { sb, logs } = plugin({ config: { LOG_LEVEL: "silent", API_KEY: KEY } });
    const e = host("native", sb, logs, (app) => app.use(new Elysia().use(sb)));
    expect(sb.url).toBe(e.http);
    expect(await get(`${e.http}/hello`)).toEqual([200, HELLO]);
    const sub = await welcomed(e.ws(), { intervalMs: 5000, timeoutMs: 15_000 });
    expect(await sub.request({ type: "subscribe", topic: "chat.sub", id: 1 })).toEqual({ type: "subscribed", topic: "chat.sub", epoch: expect.any(String), offset: 0, id: 1 });
    expect(await post(`${e.http}/api/publish`, { topic: "chat.sub", data: { user: "backend", text: "nested" } })).toEqual([200, { status: "published", topic: "chat.sub", offset: 1 }]);
    expect(await sub.text()).toBe('{"type":"message","topic":"chat.sub","data":{"user":"backend","text":"nested"},"offset":1}');
    expect(await sub.request({ type: "ping", id: 2 })).toEqual({ type: "pong", id: 2 });
    expect(await connectionsOf(e)).toBe(1);
    expect(logs).toEqual([]);
  });

  test("inside a sub-app, dispatcher mode: /connect sockets are closed 1011 right after opening, bun_options_missing logged", async () => {
    const { sb, logs } = plugin({ config: { LOG_LEVEL: "silent", API_KEY: KEY } });
    const e = host("dispatcher", sb, logs, (app) => app.use(new Elysia().use(sb)));
    const peer = await RawPeer.connect(e.port, "/connect");
    try {
      await until(() => peer.closeFrame() !== undefined, 3000, "the close frame");
      // No welcome: the close is the only frame.
      expect(peer.frames.map((f) => f.opcode)).toEqual([Opcode.close]);
      expect(peer.closeFrame()).toEqual({ code: 1011, reason: "internal error" });
    } finally {
      peer.destroy();
    }
    // A browser-style client sees the same.
    const c = await open(e.ws());
    expect(await within(c.closed, 3000, "close")).toEqual({ code: 1011, reason: "internal error" });
    expect(c.pending).toBe(0);
    expect(logged(logs)).toEqual(
      Array.from({ length: 2 }, () => ({ time: expect.any(String), level: "error", event: "bun_options_missing", hint: BUN_OPTIONS_HINT })),
    );
    // Their slots were given back; the host's routes and the HTTP API (no socket involved) still answer.
    expect(await connectionsOf(e)).toBe(0);
    expect(sb.gateway.registry.counted).toBe(0);
    expect(await get(`${e.http}/hello`)).toEqual([200, HELLO]);
    expect(await post(`${e.http}/api/publish`, { topic: "chat.sub", data: { user: "backend", text: "x" } })).toEqual([200, { status: "published", topic: "chat.sub", offset: 1 }]);
  });

  test.each(["native", "dispatcher"] as const)('inside app.group("/g", ...), %s mode: upgrades are refused 503 NOT_ATTACHED, logged not_attached', async (mode) => {
    const { sb, logs } = plugin({ config: { LOG_LEVEL: "silent", API_KEY: KEY } });
    const e = host(mode, sb, logs, (app) => app.group("/g", (g) => g.use(sb)));
    expect(sb.url).toBeUndefined(); // the plugin's onStart never ran
    const refused = await fetch(`${e.http}/g/connect`, { headers: UPGRADE_HEADERS });
    expect([refused.status, await refused.json()]).toEqual([503, { error: NOT_ATTACHED }]);
    // The capitalised Upgrade (the GET route) goes through the same admission.
    // Not ready either: a load balancer must not send clients here.
    const ready = await fetch(`${e.http}/g/readyz`);
    expect([ready.status, ((await ready.json()) as { status: string }).status]).toEqual([503, "degraded"]);
    const caps = await fetch(`${e.http}/g/connect`, { headers: { ...UPGRADE_HEADERS, upgrade: "WebSocket" } });
    expect([caps.status, await caps.json()]).toEqual([503, { error: NOT_ATTACHED }]);
    const c = new Client(e.ws("/g/connect"));
    await expect(within(c.opened, 3000, "the refused open")).rejects.toThrow(`could not connect to ${e.ws("/g/connect")}`);
    expect(logged(logs)).toEqual(Array.from({ length: 3 }, () => ({ time: expect.any(String), level: "error", event: "not_attached", hint: NOT_ATTACHED })));
    expect(sb.gateway.metrics.upgradesRejected.get("not_attached")).toBe(3);
    expect(sb.gateway.registry.counted).toBe(0);
    expect(await get(`${e.http}/hello`)).toEqual([200, HELLO]);
    expect(await get(`${e.http}/connect`, UPGRADE_HEADERS)).toEqual([404, NOT_FOUND]);
  });
});

describe("two plugins on one app", () => {
  // Bun's pub/sub topics and WebSocket handlers are per server: two plugins would deliver each other's messages
  // and serve each other's sockets (the first version did: /b's subscriber got /a's publish, and /b's closed
  // sockets were never counted out). A second use() on the same app is refused.
  test("a second switchboard on the same app is refused with the reason", async () => {
    const a = plugin({ prefix: "/a" });
    const b = plugin({ prefix: "/b" });
    const app = new Elysia().use(a.sb);
    expect(() => app.use(b.sb)).toThrow("switchboard: one per app (Bun's topics and WebSocket handlers are per server): use one plugin, or several topic patterns");
    await a.sb.stop();
    await b.sb.stop();
  });
});

describe("while the plugin drains or after sb.stop(): publishes without a socket are refused", () => {
  test.each(["drain", "stop"] as const)("after sb.%s(): POST /api/publish, /publish and /api/broadcast 503, sb.topics.publish unavailable", async (how) => {
    const e = embed("native", { SHUTDOWN_GRACE_MS: 60_000 });
    const sub = await welcomed(e.ws(), { intervalMs: 5000, timeoutMs: 15_000 });
    const subscribed = await sub.request({ type: "subscribe", topic: "chat.d", id: 1 });
    expect(subscribed).toEqual({ type: "subscribed", topic: "chat.d", epoch: expect.any(String), offset: 0, id: 1 });
    const epoch = (subscribed as { epoch: string }).epoch;
    // Before: the pipeline publishes for the host (its offset), the subscriber gets it.
    expect(await e.sb.topics.publish("chat.d", { user: "host", text: "before" })).toBe(1);
    expect(await sub.text()).toBe('{"type":"message","topic":"chat.d","data":{"user":"host","text":"before"},"offset":1}');

    if (how === "drain") e.sb.drain();
    else await within(e.sb.stop(), 5000, "sb.stop()");
    expect(await within(sub.closed, 5000, "closed")).toEqual({ code: 1001, reason: "server shutting down" });

    const data = { user: "backend", text: "late" };
    expect(await post(`${e.http}/api/publish`, { topic: "chat.d", data })).toEqual([503, { error: SHUTTING_DOWN }]);
    expect(await post(`${e.http}/publish`, { topic: "chat.d", data })).toEqual([503, { error: SHUTTING_DOWN }]);
    expect(await post(`${e.http}/api/broadcast`, { topics: ["chat.d", "chat.e"], data })).toEqual([503, { error: SHUTTING_DOWN }]);
    // Refused before the schema is looked at, and the key is still checked first.
    expect(await post(`${e.http}/api/publish`, { topic: "chat.d", data: { user: 1 } })).toEqual([503, { error: SHUTTING_DOWN }]);
    expect(await post(`${e.http}/api/publish`, { topic: "chat.d", data }, { "content-type": "application/json" })).toEqual([
      401,
      { error: "missing Authorization: Bearer <API_KEY>" },
    ]);
    expect(e.sb.topics.publish("chat.d", data)).toEqual({ code: "unavailable", message: SHUTTING_DOWN });
    expect(e.sb.topics.publish("chat.other", data)).toEqual({ code: "unavailable", message: SHUTTING_DOWN });
    if (how === "drain") {
      // Nothing was stored: the history (still held while draining; stop() releases the store) ends at offset 1.
      const history = await fetch(`${e.http}/api/history?topic=chat.d&since=0&epoch=${epoch}`, { headers: AUTH });
      expect([history.status, await history.json()]).toEqual([
        200,
        { topic: "chat.d", epoch, offset: 1, messages: [{ offset: 1, data: { user: "host", text: "before" } }] },
      ]);
    }
    expect(e.logs).toEqual([]);
  });
});

interface RawUpgrade {
  socket: net.Socket;
  status: number;
  /** The JSON body of a refusal. */
  body: unknown;
  /** Whether a text frame followed the 101 (the welcome). */
  welcomed(): boolean;
}

/** One upgrade over raw TCP: its status and (refused) JSON body; the socket stays open until destroyed. */
async function rawUpgrade(port: number, path: string): Promise<RawUpgrade> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  let buffer = Buffer.alloc(0);
  const head = new Promise<{ status: number; headerEnd: number; length: number }>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      const text = buffer.subarray(0, end).toString();
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(text)?.[1] ?? 0);
      if (status === 101 || buffer.length >= end + 4 + length) resolve({ status, headerEnd: end + 4, length });
    });
    socket.once("close", () => reject(new Error(`connection closed before an answer: ${buffer.toString()}`)));
  });
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const { status, headerEnd, length } = await within(head, 10_000, "upgrade answer");
  const body = status === 101 ? undefined : (JSON.parse(buffer.subarray(headerEnd, headerEnd + length).toString()) as unknown);
  // A server frame: FIN + text opcode first.
  return { socket, status, body, welcomed: () => buffer.length > headerEnd && buffer[headerEnd] === 0x81 };
}

describe("examples/embed.ts as a process", () => {
  const procs: Bun.Subprocess[] = [];
  afterAll(() => {
    for (const p of procs) p.kill("SIGKILL");
  });

  test("GET /hello, /rooms/lobby/ping reaches a subscriber of chat.room.lobby; SIGTERM -> 1001 and exit 0", async () => {
    const proc = Bun.spawn(["bun", "examples/embed.ts"], {
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info" },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    procs.push(proc);
    const output = collectOutput(proc);
    const READY = /^embedded switchboard listening on http:\/\/127\.0\.0\.1:(\d+) \(\/hello, \/connect, \/api\/\*\)$/m;
    await until(() => READY.test(output.stdout()) || proc.exitCode !== null, 15_000, "the start-up line");
    const match = READY.exec(output.stdout());
    if (match === null) throw new Error(`did not start: ${output.stdout()}${output.stderr()}`);
    const base = `127.0.0.1:${match[1]}`;

    expect(await get(`http://${base}/hello`)).toEqual([200, HELLO]);
    const c = await welcomed(`ws://${base}/connect`, { intervalMs: 5000, timeoutMs: 15_000 });
    expect(await c.request({ type: "subscribe", topic: "chat.room.lobby", id: 1 })).toEqual({
      type: "subscribed",
      topic: "chat.room.lobby",
      epoch: expect.any(String),
      offset: 0,
      id: 1,
    });
    expect(await get(`http://${base}/rooms/lobby/ping`)).toEqual([200, '{"published":true,"offset":1}']);
    expect(await c.text()).toBe('{"type":"message","topic":"chat.room.lobby","data":{"user":"server","text":"ping"},"offset":1}');

    proc.kill("SIGTERM");
    expect(await within(c.closed, 5000, "the client's close")).toEqual({ code: 1001, reason: "server shutting down" });
    expect(await within(proc.exited, 10_000, "exit")).toBe(0);
    const { stdout, stderr } = await within(output.ended, 5000, "output");
    expect(stdout).toBe(`embedded switchboard listening on http://${base} (/hello, /connect, /api/*)\nstopped (SIGTERM)\n`);
    expect(stderr).toBe("");
  }, 30_000);
});
