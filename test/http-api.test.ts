// The HTTP API under its new names: API_KEY (PUBLISH_API_KEY still accepted), POST /api/publish (the very route
// of POST /publish) and POST /api/broadcast (one data to many topics), on real servers, real sockets and a real
// redis-server: the key before the body, exact answers and frames, and a broadcast reaching two nodes.
import { describe, expect, test } from "bun:test";
import { treaty } from "@elysiajs/eden";
import type { App } from "../src/app.ts";
import { Client, rawHttpConnection, redisPerFile, serve, spawnEntry, until, within, type TestServer } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const KEY = "http-api-test-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };
/** The same header as a raw request writes it. */
const AUTH_HEADER = { Authorization: `Bearer ${KEY}` };
const UNAVAILABLE = "history store unavailable: nothing was published; retry later";
const NOT_BROADCAST_JSON = 'body must be JSON: {"topics": [string, ...], "data": any JSON}';
const TOPIC_RULE = "must be 1-200 characters of letters, digits and . _ - : /";

let redis: TestRedis;
/** Clients opened by the current test, closed after it (servers too; Redis after the file). */
const { clients } = redisPerFile(async () => (redis = await startRedis()));

const post = (server: TestServer, path: string, body: string, headers: Record<string, string> = AUTH) =>
  fetch(`http://127.0.0.1:${server.port}${path}`, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });

/** POSTs and returns [status, parsed body], the form every assertion below compares. */
async function answer(server: TestServer, path: string, body: unknown, headers?: Record<string, string>): Promise<[number, unknown]> {
  const res = await post(server, path, typeof body === "string" ? body : JSON.stringify(body), headers);
  return [res.status, await res.json()];
}

/** A /connect client subscribed to `topics`, closed after the test. */
async function subscriber(server: TestServer, ...topics: string[]): Promise<Client> {
  const client = await Client.connect(server);
  clients.push(client);
  for (const topic of topics) expect((await client.request({ type: "subscribe", topic })).type).toBe("subscribed");
  return client;
}

/** Nothing more reached `client`: its next frame is the pong to a ping sent now (frames keep their order). */
async function nothingMore(client: Client): Promise<void> {
  expect(await client.request({ type: "ping", id: "after" })).toEqual({ type: "pong", id: "after" });
}

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/**
 * Sends only the head of a POST announcing `contentLength` body bytes, and never the body: an answer proves the
 * server decided without reading it (reading would wait for bytes that never come, past this bounded wait).
 */
async function headOnly(port: number, path: string, headers: Record<string, string>, contentLength = 1000): Promise<RawAnswer> {
  const { socket, reply } = await rawHttpConnection(port);
  const head = Object.entries({ Host: `127.0.0.1:${port}`, "Content-Type": "application/json", "Content-Length": String(contentLength), ...headers })
    .map(([k, v]) => `${k}: ${v}`)
    .join("\r\n");
  socket.write(`POST ${path} HTTP/1.1\r\n${head}\r\n\r\n`);
  await until(() => bodyComplete(reply.text) || reply.closed, 3000, `the answer to ${path} without its body`);
  socket.destroy();
  return parseRaw(reply.text);
}

/** A response is complete once its head and `Content-Length` bytes of body have arrived. */
function bodyComplete(response: string): boolean {
  const end = response.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(response.slice(0, end + 2));
  return length !== null && Buffer.byteLength(response.slice(end + 4)) >= Number(length[1]);
}

function parseRaw(response: string): RawAnswer {
  const [statusLine = "", ...lines] = response.slice(0, response.indexOf("\r\n\r\n")).split("\r\n");
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  const text = response.slice(response.indexOf("\r\n\r\n") + 4);
  return { status: Number(statusLine.split(" ")[1]), headers, body: text === "" ? undefined : JSON.parse(text) };
}

/** Runs the real entry point to its exit, for start-ups that must fail (killed after 10 s, which fails the test). */
function runToExit(env: Record<string, string>): { code: number | null; stdout: string; stderr: string } {
  const run = Bun.spawnSync(["bun", "run", "src/index.ts"], { env: { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env }, timeout: 10_000 });
  return { code: run.exitCode, stdout: run.stdout.toString(), stderr: run.stderr.toString() };
}

describe("API_KEY, and PUBLISH_API_KEY its old name", () => {
  test("the real entry point takes either name, or both when they agree; both different stop it (exit 2) naming both, values hidden", async () => {
    const other = "another-key-of-the-api-0123";
    for (const env of [{ API_KEY: KEY, PUBLISH_API_KEY: "" }, { API_KEY: "", PUBLISH_API_KEY: KEY }, { API_KEY: KEY, PUBLISH_API_KEY: KEY }]) {
      const entry = await spawnEntry({ ...env, LOG_LEVEL: "silent" });
      const url = `http://127.0.0.1:${entry.port}`;
      for (const path of ["/publish", "/api/publish"]) {
        const res = await fetch(`${url}${path}`, { method: "POST", body: JSON.stringify({ topic: "t", data: path }), headers: AUTH });
        expect([JSON.stringify(env), path, res.status]).toEqual([JSON.stringify(env), path, 200]);
      }
      const wrong = await fetch(`${url}/api/publish`, { method: "POST", body: "{}", headers: { authorization: `Bearer ${other}` } });
      expect([wrong.status, await wrong.json()]).toEqual([401, { error: "invalid API key" }]);
      entry.kill();
      expect((await entry.exited()).code).toBe(0);
    }
    const { code, stdout, stderr } = runToExit({ API_KEY: KEY, PUBLISH_API_KEY: other });
    expect({ code, stdout, stderr }).toEqual({
      code: 2,
      stdout: "",
      stderr: `switchboard: invalid configuration: API_KEY=<hidden: ${KEY.length} characters>: differs from PUBLISH_API_KEY=<hidden: ${other.length} characters>, its old name: set one of them, or both to the same key\n`,
    });
    const short = runToExit({ API_KEY: "short-key", PUBLISH_API_KEY: "" });
    expect([short.code, short.stderr]).toEqual([2, "switchboard: invalid configuration: API_KEY=<hidden: 9 characters>: must be at least 16 characters\n"]);
  }, 60_000);

  test("in code: serve() with either name enables the API", async () => {
    for (const server of [serve({ API_KEY: KEY }), serve({ PUBLISH_API_KEY: KEY })]) {
      expect(await answer(server, "/api/publish", { topic: "t", data: 1 })).toEqual([200, { status: "published", topic: "t", offset: 1 }]);
    }
  });
});

describe("the key is checked before a byte of the body is read", () => {
  for (const path of ["/api/publish", "/api/broadcast"]) {
    test(`${path}: 401 without or with a wrong key, 403 when disabled, 413 over the limit: answered unread, connection closed`, async () => {
      const server = serve({ API_KEY: KEY, MAX_PAYLOAD_BYTES: 65536 });
      const missing = await headOnly(server.port, path, {});
      expect([missing.status, missing.body, missing.headers.connection]).toEqual([401, { error: "missing Authorization: Bearer <API_KEY>" }, "close"]);
      const wrong = await headOnly(server.port, path, { Authorization: "Bearer not-the-key-at-all" });
      expect([wrong.status, wrong.body, wrong.headers.connection]).toEqual([401, { error: "invalid API key" }, "close"]);
      // A body that would be refused anyway is not read either: the key comes first.
      const tooLarge = await headOnly(server.port, path, { Authorization: "Bearer not-the-key-at-all" }, 10_000_000);
      expect([tooLarge.status, tooLarge.body]).toEqual([401, { error: "invalid API key" }]);
      const over = await headOnly(server.port, path, AUTH_HEADER, 65537);
      expect([over.status, over.body, over.headers.connection]).toEqual([413, { error: "body is larger than 65536 bytes (MAX_PAYLOAD_BYTES)" }, "close"]);

      const disabled = serve();
      const refused = await headOnly(disabled.port, path, AUTH_HEADER);
      expect([refused.status, refused.body, refused.headers.connection]).toEqual([
        403,
        { error: "HTTP API is disabled: set API_KEY on the server to enable it" },
        "close",
      ]);
    });
  }

  test("a chunked broadcast without a length gets 413 once it passes the limit, and the rest is never sent", async () => {
    const server = serve({ API_KEY: KEY, MAX_PAYLOAD_BYTES: 65536 });
    const { socket, reply } = await rawHttpConnection(server.port);
    socket.write(`POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const chunk = Buffer.from(`{"topics":["a"],"data":"${"x".repeat(16_000)}`);
    const answered = () => bodyComplete(reply.text) || reply.closed;
    let sent = 0;
    while (!answered() && sent < 64 * 1024 * 1024) {
      const flushed = socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]));
      sent += chunk.length;
      // The kernel's buffers are full: wait for room or for the answer (the server stops reading at the limit).
      if (!flushed) {
        const room = new Promise<void>((resolve) => {
          const done = () => (clearInterval(poll), resolve());
          const poll = setInterval(() => answered() && done(), 5);
          socket.once("drain", done);
        });
        await within(room, 5000, "room to write or the answer");
      }
    }
    await until(() => bodyComplete(reply.text) || reply.closed, 3000, "the 413");
    socket.destroy();
    const refused = parseRaw(reply.text);
    expect([refused.status, refused.body]).toEqual([413, { error: "body is larger than 65536 bytes (MAX_PAYLOAD_BYTES)" }]);
    expect(sent).toBeLessThan(64 * 1024 * 1024);
  });
});

describe("POST /api/publish is POST /publish", () => {
  test("one offset sequence, the same frames, the same answers and refusals; 405 names the route", async () => {
    const server = serve({ API_KEY: KEY, MAX_PAYLOAD_BYTES: 1000 });
    const sub = await subscriber(server, "shared");
    expect(await answer(server, "/publish", { topic: "shared", data: { via: "publish" } })).toEqual([200, { status: "published", topic: "shared", offset: 1 }]);
    expect(await answer(server, "/api/publish", { topic: "shared", data: "123" })).toEqual([200, { status: "published", topic: "shared", offset: 2 }]);
    // Any Content-Type: the body is JSON anyway.
    const form = await post(server, "/api/publish", JSON.stringify({ topic: "shared", data: null }), { ...AUTH, "content-type": "application/x-www-form-urlencoded" });
    expect([form.status, await form.json()]).toEqual([200, { status: "published", topic: "shared", offset: 3 }]);
    expect(await sub.text()).toBe('{"type":"message","topic":"shared","data":{"via":"publish"},"offset":1}');
    expect(await sub.text()).toBe('{"type":"message","topic":"shared","data":"123","offset":2}');
    expect(await sub.text()).toBe('{"type":"message","topic":"shared","data":null,"offset":3}');

    // The refusals, each the same text on both routes.
    const refusals: [string, number, string][] = [
      ["{not json", 400, 'body must be JSON: {"topic": string, "data": any JSON}'],
      ["", 400, 'body must be JSON: {"topic": string, "data": any JSON}'],
      [JSON.stringify({ topic: "bad topic" }), 400, `topic: ${TOPIC_RULE}; data: required (null is a value)`],
      [`{"topic":"t","data":${"[".repeat(200)}${"]".repeat(200)}}`, 400, "JSON nests deeper than 128 levels"],
      [JSON.stringify({ topic: "shared", data: "x".repeat(1000) }), 413, "body is larger than 1000 bytes (MAX_PAYLOAD_BYTES)"],
    ];
    for (const [body, code, reason] of refusals) {
      for (const path of ["/publish", "/api/publish"]) {
        expect([path, body.slice(0, 30), ...(await answer(server, path, body))]).toEqual([path, body.slice(0, 30), code, { error: reason }]);
      }
    }
    // The same limit: a body of MAX_PAYLOAD_BYTES exactly is published.
    const filler = "x".repeat(1000 - JSON.stringify({ topic: "shared", data: "" }).length);
    expect(await answer(server, "/api/publish", JSON.stringify({ topic: "shared", data: filler }))).toEqual([200, { status: "published", topic: "shared", offset: 4 }]);
    expect(await sub.text()).toBe(`{"type":"message","topic":"shared","data":"${filler}","offset":4}`);
    await nothingMore(sub);

    for (const [path, shape] of [
      ["/publish", '{"topic": string, "data": any JSON}'],
      ["/api/publish", '{"topic": string, "data": any JSON}'],
      ["/api/broadcast", '{"topics": [string, ...], "data": any JSON}'],
    ] as const) {
      for (const method of ["GET", "PUT", "PATCH", "DELETE"]) {
        const res = await fetch(`http://127.0.0.1:${server.port}${path}`, { method });
        expect([path, method, res.status, res.headers.get("allow"), await res.json()]).toEqual([path, method, 405, "POST", { error: `use POST ${path} with ${shape}` }]);
      }
    }
  });

  test("Host: ws reaches both new routes (the framework's path slicing assumed a longer host)", async () => {
    const server = serve({ API_KEY: KEY });
    for (const [path, body, expected] of [
      ["/api/publish", { topic: "t", data: 1 }, '{"status":"published","topic":"t","offset":1}'],
      ["/api/broadcast", { topics: ["t", "u"], data: 2 }, '{"status":"published","results":[{"topic":"t","offset":2},{"topic":"u","offset":1}]}'],
    ] as const) {
      const { socket, reply, closed } = await rawHttpConnection(server.port);
      const text = JSON.stringify(body);
      socket.write(`POST ${path} HTTP/1.1\r\nHost: ws\r\nAuthorization: Bearer ${KEY}\r\nConnection: close\r\nContent-Length: ${text.length}\r\n\r\n${text}`);
      await within(closed, 3000, "the answer and the close");
      expect([path, reply.text.split(" ")[1], reply.text.slice(reply.text.indexOf("\r\n\r\n") + 4)]).toEqual([path, "200", expected]);
    }
  });
});

describe("POST /api/broadcast", () => {
  test("one data to many topics: each subscriber gets its topic's frame with its own offset; results in the order given", async () => {
    const server = serve({ API_KEY: KEY });
    const onA = await subscriber(server, "a");
    const onB = await subscriber(server, "b");
    const onAll = await subscriber(server, "a", "b", "c");
    expect(await answer(server, "/api/publish", { topic: "a", data: 0 })).toEqual([200, { status: "published", topic: "a", offset: 1 }]);
    expect(await onA.text()).toBe('{"type":"message","topic":"a","data":0,"offset":1}');
    expect(await onAll.text()).toBe('{"type":"message","topic":"a","data":0,"offset":1}');

    // Delivered as parsed and serialized once again: a string of digits stays a string, `__proto__` is plain data.
    const body = '{"topics":["c","a","b"],"data":{"text":"h\\u00e9llo","n":"123","nested":[{"__proto__":1}]}}';
    expect(await answer(server, "/api/broadcast", body)).toEqual([
      200,
      { status: "published", results: [{ topic: "c", offset: 1 }, { topic: "a", offset: 2 }, { topic: "b", offset: 1 }] },
    ]);
    const dataText = '{"text":"héllo","n":"123","nested":[{"__proto__":1}]}';
    expect(await onA.text()).toBe(`{"type":"message","topic":"a","data":${dataText},"offset":2}`);
    expect(await onB.text()).toBe(`{"type":"message","topic":"b","data":${dataText},"offset":1}`);
    // One process, memory broker: published in the order given.
    expect(await onAll.text()).toBe(`{"type":"message","topic":"c","data":${dataText},"offset":1}`);
    expect(await onAll.text()).toBe(`{"type":"message","topic":"a","data":${dataText},"offset":2}`);
    expect(await onAll.text()).toBe(`{"type":"message","topic":"b","data":${dataText},"offset":1}`);

    // null is a value; a topic nobody holds is stored all the same; GET /api/history shows both.
    expect(await answer(server, "/api/broadcast", { topics: ["nobody", "a"], data: null })).toEqual([
      200,
      { status: "published", results: [{ topic: "nobody", offset: 1 }, { topic: "a", offset: 3 }] },
    ]);
    expect(await onA.text()).toBe('{"type":"message","topic":"a","data":null,"offset":3}');
    expect(await onAll.text()).toBe('{"type":"message","topic":"a","data":null,"offset":3}');
    const history = await fetch(`${server.url}/api/history?topic=nobody`, { headers: AUTH });
    expect(((await history.json()) as { messages: unknown }).messages).toEqual([{ offset: 1, data: null }]);
    for (const c of [onA, onB, onAll]) await nothingMore(c);
  });

  test("400 with the reason for a bad body, and nothing is published", async () => {
    const server = serve({ API_KEY: KEY });
    const onAll = await subscriber(server, "a", "b");
    const many = Array.from({ length: 101 }, (_, i) => `t${i}`);
    const refusals: [string, string][] = [
      ['{"topics":[],"data":1}', "topics: must list 1-100 topics"],
      [JSON.stringify({ topics: many, data: 1 }), "topics: must list 1-100 topics"],
      ['{"topics":["a","b","a"],"data":1}', "topics: must not repeat a topic (a is listed twice)"],
      ['{"topics":["a","b c"],"data":1}', `topics.1: ${TOPIC_RULE}`],
      ['{"topics":[1,"b"],"data":1}', "topics.0: Invalid input: expected string, received number"],
      ['{"topics":["a","b"]}', "data: required (null is a value)"],
      ['{"topics":"a","data":1}', "topics: Invalid input: expected array, received string"],
      ['{"topic":"a","data":1}', "topics: Invalid input: expected array, received undefined"],
      ["[1]", "body: Invalid input: expected object, received array"],
      ["{not json", NOT_BROADCAST_JSON],
      ["", NOT_BROADCAST_JSON],
      [`{"topics":["a"],"data":${"[".repeat(200)}${"]".repeat(200)}}`, "JSON nests deeper than 128 levels"],
      [`{"topics":["a b"],"data":${"{\"k\":".repeat(100_000)}1${"}".repeat(100_000)}}`, "JSON nests deeper than 128 levels"],
    ];
    for (const [body, reason] of refusals) {
      expect([body.slice(0, 40), ...(await answer(server, "/api/broadcast", body))]).toEqual([body.slice(0, 40), 400, { error: reason }]);
    }
    // 100 distinct topics is the most, and fine.
    const res = await answer(server, "/api/broadcast", { topics: many.slice(0, 100), data: 1 });
    expect(res[0]).toBe(200);
    expect((res[1] as { results: unknown[] }).results).toEqual(many.slice(0, 100).map((topic) => ({ topic, offset: 1 })));
    await nothingMore(onAll);
  });

  test("history off: no offsets in the results or the frames", async () => {
    const server = serve({ API_KEY: KEY, HISTORY_SIZE: 0 });
    const onA = await subscriber(server, "a");
    expect(await answer(server, "/api/broadcast", { topics: ["a", "b"], data: [1] })).toEqual([
      200,
      { status: "published", results: [{ topic: "a" }, { topic: "b" }] },
    ]);
    expect(await onA.text()).toBe('{"type":"message","topic":"a","data":[1]}');
    await nothingMore(onA);
  });

  test("typed for Eden: the body's shape and the answer's", async () => {
    const server = serve({ API_KEY: KEY });
    const api = treaty<App>(server.url, { headers: AUTH });
    const published = await api.api.publish.post({ topic: "e", data: { any: ["json"] } });
    expect([published.status, published.data]).toEqual([200, { status: "published", topic: "e", offset: 1 }]);
    const broadcast = await api.api.broadcast.post({ topics: ["e", "f"], data: "x" });
    expect([broadcast.status, broadcast.data]).toEqual([200, { status: "published", results: [{ topic: "e", offset: 2 }, { topic: "f", offset: 1 }] }]);
    if (broadcast.data !== null && "results" in broadcast.data) {
      const topics: string[] = broadcast.data.results.map((r) => r.topic);
      expect(topics).toEqual(["e", "f"]);
    }
    // Compile-time only (tsc), never called:
    const typeErrors = async () => {
      // @ts-expect-error topics is a list
      await api.api.broadcast.post({ topics: "e", data: 1 });
      // @ts-expect-error data is required
      await api.api.broadcast.post({ topics: ["e"] });
    };
    void typeErrors;
  });
});

describe("POST /api/broadcast with Redis", () => {
  async function node(overrides: Parameters<typeof serve>[0] = {}): Promise<TestServer> {
    const server = serve({ REDIS_URL: redis.url, API_KEY: KEY, ...overrides });
    await until(async () => (await fetch(`${server.url}/readyz`)).status === 200, 5000, "/readyz 200");
    return server;
  }

  test("a broadcast on one node reaches subscribers on both; the offsets are the cluster's", async () => {
    const [one, two] = [await node(), await node()];
    const onOne = await subscriber(one, "x", "y");
    const onTwo = await subscriber(two, "y", "z");
    expect(await answer(two, "/api/publish", { topic: "y", data: "first" })).toEqual([200, { status: "published", topic: "y", offset: 1 }]);
    expect(await onOne.text(5000)).toBe('{"type":"message","topic":"y","data":"first","offset":1}');
    expect(await onTwo.text(5000)).toBe('{"type":"message","topic":"y","data":"first","offset":1}');

    expect(await answer(one, "/api/broadcast", { topics: ["z", "y", "x"], data: { k: 1 } })).toEqual([
      200,
      { status: "published", results: [{ topic: "z", offset: 1 }, { topic: "y", offset: 2 }, { topic: "x", offset: 1 }] },
    ]);
    const received = async (client: Client, count: number) => {
      const frames: string[] = [];
      for (let i = 0; i < count; i++) frames.push(await client.text(5000));
      return frames.sort();
    };
    expect(await received(onOne, 2)).toEqual([
      '{"type":"message","topic":"x","data":{"k":1},"offset":1}',
      '{"type":"message","topic":"y","data":{"k":1},"offset":2}',
    ]);
    expect(await received(onTwo, 2)).toEqual([
      '{"type":"message","topic":"y","data":{"k":1},"offset":2}',
      '{"type":"message","topic":"z","data":{"k":1},"offset":1}',
    ]);
    // And from the other node, the same sequences go on.
    expect(await answer(two, "/api/broadcast", { topics: ["x", "z"], data: 2 })).toEqual([
      200,
      { status: "published", results: [{ topic: "x", offset: 2 }, { topic: "z", offset: 2 }] },
    ]);
    expect(await onOne.text(5000)).toBe('{"type":"message","topic":"x","data":2,"offset":2}');
    expect(await onTwo.text(5000)).toBe('{"type":"message","topic":"z","data":2,"offset":2}');
    await nothingMore(onOne);
    await nothingMore(onTwo);
  });

  test("past REDIS_MAX_PENDING_BYTES, some topics are refused: 200 with each topic's outcome, only the stored one delivered", async () => {
    // Every publish of a broadcast is handed to Redis before any is answered: 2 x 40 KB pass the 64 KiB bound.
    const server = await node({ MAX_PAYLOAD_BYTES: 65536, REDIS_MAX_PENDING_BYTES: 65536 });
    const sub = await subscriber(server, "p", "q", "r");
    const data = "d".repeat(40_000);
    expect(await answer(server, "/api/broadcast", { topics: ["p", "q", "r"], data })).toEqual([
      200,
      {
        status: "published",
        results: [
          { topic: "p", offset: 1 },
          { topic: "q", error: "unavailable", message: UNAVAILABLE },
          { topic: "r", error: "unavailable", message: UNAVAILABLE },
        ],
      },
    ]);
    expect(await sub.text(5000)).toBe(`{"type":"message","topic":"p","data":"${data}","offset":1}`);
    await nothingMore(sub);
  });

  test("Redis unreachable: every topic unavailable is 503, and nothing is delivered", async () => {
    const server = serve({ REDIS_URL: "redis://127.0.0.1:1", API_KEY: KEY });
    const sub = await subscriber(server, "s", "t");
    expect(await answer(server, "/api/broadcast", { topics: ["s", "t"], data: 1 })).toEqual([503, { error: UNAVAILABLE }]);
    expect(await answer(server, "/api/publish", { topic: "s", data: 1 })).toEqual([503, { error: UNAVAILABLE }]);
    await nothingMore(sub);
  });
});
