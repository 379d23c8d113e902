// POST /publish under attack: the key is checked before any byte of the body is read, bodies are bounded by
// Content-Length and while streaming, nesting is refused before JSON.parse; and every ordinary answer stays.
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { Client, rawHttpConnection, serve, stopAll, until, within, type TestServer } from "./helpers.ts";

afterAll(stopAll);

const KEY = "test-publish-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };
const TOO_DEEP = { error: "JSON nests deeper than 128 levels" };

const post = (server: TestServer, body: string, headers: Record<string, string> = AUTH) =>
  fetch(`http://127.0.0.1:${server.port}/publish`, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
  /** Body bytes written to the socket before the server answered (or the whole body). */
  sent: number;
}

/**
 * POST /publish over raw TCP, so the test decides how the body is framed and when it stops: writes the head,
 * then `first`, `chunk`s up to `total` body bytes and `last` (chunked encoding unless `contentLength` is given),
 * and stops writing as soon as the server answers or closes. `total: 0` sends the head alone.
 */
async function rawPost(
  port: number,
  options: { headers: Record<string, string>; total: number; chunk?: Buffer; first?: string; last?: string; contentLength?: number },
): Promise<RawAnswer> {
  const { socket, reply } = await rawHttpConnection(port);
  const framing = options.contentLength === undefined ? { "Transfer-Encoding": "chunked" } : { "Content-Length": String(options.contentLength) };
  const head = Object.entries({ Host: `127.0.0.1:${port}`, "Content-Type": "application/json", ...framing, ...options.headers })
    .map(([k, v]) => `${k}: ${v}`)
    .join("\r\n");
  socket.write(`POST /publish HTTP/1.1\r\n${head}\r\n\r\n`);
  const chunked = options.contentLength === undefined;
  const frame = (data: Buffer | string) => (chunked ? [`${Buffer.byteLength(data).toString(16)}\r\n`, data, "\r\n"] : [data]);
  const answered = () => reply.text.includes("\r\n\r\n") || reply.closed;
  let sent = 0;
  const parts: (Buffer | string)[] = options.first === undefined ? [] : [options.first];
  while (sent < options.total && !answered()) {
    const data = parts.shift() ?? options.chunk!;
    let flushed = true;
    for (const piece of frame(data)) flushed = socket.write(piece) && flushed;
    sent += Buffer.byteLength(data);
    if (!flushed) {
      await within(
        new Promise<void>((resolve) => {
          const done = () => {
            clearInterval(poll);
            resolve();
          };
          const poll = setInterval(() => answered() && done(), 5);
          socket.once("drain", done);
        }),
        30_000,
        "socket drain or an answer",
      );
    }
  }
  if (sent >= options.total && options.total > 0 && !answered()) {
    if (options.last !== undefined) for (const piece of frame(options.last)) socket.write(piece);
    if (chunked) socket.write("0\r\n\r\n");
  }
  await until(() => complete(reply.text) || reply.closed, 30_000, "the HTTP answer");
  const response = reply.text;
  socket.destroy();
  const [statusLine = "", ...lines] = response.slice(0, response.indexOf("\r\n\r\n")).split("\r\n");
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  const text = response.slice(response.indexOf("\r\n\r\n") + 4);
  return { status: Number(statusLine.split(" ")[1]), headers, body: text === "" ? undefined : JSON.parse(text), sent };
}

/** A response is complete once its head and `Content-Length` bytes of body have arrived. */
function complete(response: string): boolean {
  const end = response.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(response.slice(0, end + 2));
  return length !== null && Buffer.byteLength(response.slice(end + 4)) >= Number(length[1]);
}

/** Linux: restarts the process's peak-RSS counter (VmHWM), so peakRss() covers only what follows. */
function resetPeakRss(): void {
  writeFileSync("/proc/self/clear_refs", "5");
}

/** Peak RSS of this process in bytes since resetPeakRss(). */
function peakRss(): number {
  const kib = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  if (kib === null) throw new Error("no VmHWM in /proc/self/status");
  return Number(kib[1]) * 1024;
}

/**
 * 64 KiB of JSON array items, each an object in an array: the most objects per byte, which is what costs
 * JSON.parse memory and time (100 MB of it took the old route to ~2.7 GB and a 7 s stall).
 */
function objectItems(): Buffer {
  const item = "[{}],";
  return Buffer.from(item.repeat(Math.floor(65536 / item.length)));
}
/** A flood body is BODY_START, objectItems() repeated, BODY_END: valid JSON for a server that reads it all. */
const BODY_START = '{"topic":"flood","data":[';
const BODY_END = "{}]}";

describe("POST /publish refuses before it reads", () => {
  test("a 100 MB streamed body without a key gets 401 unread; RSS stays bounded and a healthy client keeps its pongs", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY, PING_INTERVAL_MS: 1000, PING_WAIT_MS: 1000 });
    const healthy = await Client.open(server.ws("/connect"));
    const welcome = (await healthy.json()) as { heartbeat: { timeoutMs: number } };
    let lastFrameAt = performance.now();
    let longestSilence = 0;
    let pongs = 0;
    healthy.socket.addEventListener("message", () => {
      pongs++;
      const now = performance.now();
      longestSilence = Math.max(longestSilence, now - lastFrameAt);
      lastFrameAt = now;
    });
    let id = 0;
    const pinger = setInterval(() => healthy.send({ type: "ping", id: ++id }), 100);

    Bun.gc(true);
    const rssBefore = process.memoryUsage().rss;
    resetPeakRss();
    const answer = await rawPost(server.port, { headers: {}, first: BODY_START, chunk: objectItems(), last: BODY_END, total: 100 * 1024 * 1024 });
    const rssPeak = peakRss();

    expect([answer.status, answer.body]).toEqual([401, { error: "missing Authorization: Bearer <API_KEY>" }]);
    expect(answer.headers.connection).toBe("close");
    expect(answer.sent).toBeLessThan(100 * 1024 * 1024);
    // The server runs in this process: its peak RSS while the body was offered, not after a GC gave it back.
    expect(rssPeak - rssBefore).toBeLessThan(100 * 1024 * 1024);

    // A few more pongs after the attack, so a stall at its very end would show as well.
    const pongsSoFar = pongs;
    await until(() => pongs >= pongsSoFar + 3 || healthy.socket.readyState !== WebSocket.OPEN, 5000, "three more pongs");
    clearInterval(pinger);
    longestSilence = Math.max(longestSilence, performance.now() - lastFrameAt);
    expect(healthy.socket.readyState).toBe(WebSocket.OPEN);
    // The client's own dead-server deadline (the protocol's timeoutMs) was never reached.
    expect(longestSilence).toBeLessThan(welcome.heartbeat.timeoutMs);
    healthy.close();
  }, 60_000);

  test("a wrong key is refused the same way, before the body", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const answer = await rawPost(server.port, { headers: { Authorization: "Bearer not-the-key-at-all" }, total: 0, contentLength: 1000 });
    expect([answer.status, answer.body]).toEqual([401, { error: "invalid API key" }]);
    expect(answer.headers.connection).toBe("close");
  });

  test("with the route disabled (no PUBLISH_API_KEY), 403 before the body", async () => {
    const server = serve();
    const answer = await rawPost(server.port, { headers: AUTH, total: 0, contentLength: 1000 });
    expect(answer.status).toBe(403);
  });

  test("a Content-Length over the limit gets 413 at once, with the key, before any byte of the body", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY, MAX_PAYLOAD_BYTES: 65536 });
    const answer = await rawPost(server.port, { headers: AUTH, total: 0, contentLength: 65537 });
    expect([answer.status, answer.body]).toEqual([413, { error: "body is larger than 65536 bytes (MAX_PAYLOAD_BYTES)" }]);
    expect(answer.headers.connection).toBe("close");
  });

  test("a chunked body without a length gets 413 once it passes the limit, and the rest is never read", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY, MAX_PAYLOAD_BYTES: 65536 });
    const answer = await rawPost(server.port, { headers: AUTH, first: BODY_START, chunk: objectItems(), last: BODY_END, total: 100 * 1024 * 1024 });
    expect([answer.status, answer.body]).toEqual([413, { error: "body is larger than 65536 bytes (MAX_PAYLOAD_BYTES)" }]);
    expect(answer.sent).toBeLessThan(100 * 1024 * 1024);
  }, 60_000);

  test("a body at the limit exactly is read and published", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY, MAX_PAYLOAD_BYTES: 1000 });
    const frame = JSON.stringify({ topic: "t", data: "" });
    const body = JSON.stringify({ topic: "t", data: "x".repeat(1000 - frame.length) });
    expect(body.length).toBe(1000);
    const res = await post(server, body);
    expect([res.status, await res.json()]).toEqual([200, { status: "published", topic: "t", offset: 1 }]);
    const over = await post(server, JSON.stringify({ topic: "t", data: "x".repeat(1001 - frame.length) }));
    expect(over.status).toBe(413);
  });

  test("deep nesting anywhere gets 400 with the nesting message, never 422 'Maximum call stack size exceeded'", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const arrays = (depth: number) => `${"[".repeat(depth)}${"]".repeat(depth)}`;
    const objects = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
    const bodies = {
      "200 levels of data": `{"topic":"t","data":${arrays(200)}}`,
      "deep data": `{"topic":"t","data":${arrays(100_000)}}`,
      "deep objects as data": `{"topic":"t","data":${objects(100_000)}}`,
      // Before: the validation error's formatting recursed into the value (422), or the extra key was ignored (200).
      "deep data and a bad topic": `{"topic":"t t","data":${arrays(100_000)}}`,
      "deep data and no topic": `{"data":${arrays(100_000)}}`,
      "a deep body": objects(100_000),
      "a deep unknown key": `{"topic":"t","data":1,"x":${arrays(100_000)}}`,
    };
    for (const [what, body] of Object.entries(bodies)) {
      const res = await post(server, body);
      expect([what, res.status, await res.json()]).toEqual([what, 400, TOO_DEEP]);
    }
  });
});

describe("POST /publish keeps its answers", () => {
  test("200 and delivery; the same for any Content-Type; null is a value", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const sub = await Client.connect(server);
    await sub.request({ type: "subscribe", topic: "http" });
    // History is on (the default): the answer carries the stored message's offset, as its frame does.
    let res = await post(server, JSON.stringify({ topic: "http", data: { price: "101.50" } }));
    expect([res.status, await res.json()]).toEqual([200, { status: "published", topic: "http", offset: 1 }]);
    expect(await sub.text()).toBe('{"type":"message","topic":"http","data":{"price":"101.50"},"offset":1}');
    res = await post(server, JSON.stringify({ topic: "http", data: null }), { ...AUTH, "content-type": "application/x-www-form-urlencoded" });
    expect([res.status, await res.json()]).toEqual([200, { status: "published", topic: "http", offset: 2 }]);
    expect(await sub.text()).toBe('{"type":"message","topic":"http","data":null,"offset":2}');
    sub.close();
  });

  test("401 without or with a wrong key, 403 when disabled, 400 with the reason, 405 for other methods", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const good = JSON.stringify({ topic: "t", data: 1 });
    let res = await post(server, good, {});
    expect([res.status, await res.json()]).toEqual([401, { error: "missing Authorization: Bearer <API_KEY>" }]);
    res = await post(server, good, { authorization: "Bearer not-the-key-at-all" });
    expect([res.status, await res.json()]).toEqual([401, { error: "invalid API key" }]);
    for (const body of ["{not json", ""]) {
      res = await post(server, body);
      expect([res.status, await res.json()]).toEqual([400, { error: 'body must be JSON: {"topic": string, "data": any JSON}' }]);
    }
    res = await post(server, JSON.stringify({ topic: "bad topic" }));
    expect([res.status, await res.json()]).toEqual([
      400,
      { error: "topic: must be 1-200 characters of letters, digits and . _ - : /; data: required (null is a value)" },
    ]);
    for (const method of ["GET", "PUT", "PATCH", "DELETE"]) {
      res = await fetch(`http://127.0.0.1:${server.port}/publish`, { method });
      expect([method, res.status, res.headers.get("allow"), await res.json()]).toEqual([
        method,
        405,
        "POST",
        { error: 'use POST /publish with {"topic": string, "data": any JSON}' },
      ]);
    }
    const disabled = serve();
    res = await post(disabled, good);
    expect([res.status, await res.json()]).toEqual([403, { error: "HTTP API is disabled: set API_KEY on the server to enable it" }]);
  });

  test("a refusal after the whole body was read keeps the connection (keep-alive)", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const res = await post(server, "{not json");
    expect(res.status).toBe(400);
    expect(res.headers.get("connection")).not.toBe("close");
  });
});
