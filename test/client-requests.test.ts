// The client's requests: publish() and ping() wait for a connection alike, both bounded by requestTimeoutMs
// from the call (TimeoutError; Infinity allowed); ready(timeoutMs); TimeoutError and ConnectionLostError
// against a server that swallows frames or drops the link; refused subscribes are dropped for good; a
// rate-limited publish fails at once.
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import type { ServerWebSocket } from "bun";
import {
  connect,
  ConnectionLostError,
  SwitchboardError,
  TimeoutError,
  type ClientEvents,
  type ClientOptions,
  type SwitchboardClient,
} from "../src/client.ts";
import { ManualClock } from "../src/clock.ts";
import { encode } from "../src/protocol.ts";
import { freePort, serve, stopAll, until, within, recordEvents } from "./helpers.ts";

const clients: SwitchboardClient[] = [];
const open = (url: string, options?: ClientOptions) => {
  const client = connect(url, options);
  clients.push(client);
  return client;
};
const stoppers: (() => void)[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  for (const stop of stoppers) stop();
  await stopAll();
});


const fast = { reconnect: { baseMs: 10, capMs: 50 } } satisfies ClientOptions;

/**
 * A bare WebSocket server on /connect that sends a welcome (with a long heartbeat, so the client's liveness
 * probe stays out of the way) and hands every frame to `onFrame`, which may answer, swallow or close.
 */
function rawServer(onFrame: (ws: ServerWebSocket<unknown>, frame: { type: string; id?: number }) => void) {
  const frames: { type: string; id?: number }[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (req, srv) => (srv.upgrade(req) ? undefined : new Response("upgrade only", { status: 400 })),
    websocket: {
      open: (ws) => void ws.send(encode.welcome("raw-1", 60_000, 120_000)),
      message: (ws, text) => {
        const frame = JSON.parse(String(text)) as { type: string; id?: number };
        frames.push(frame);
        onFrame(ws, frame);
      },
    },
  });
  stoppers.push(() => server.stop(true));
  return { url: `ws://127.0.0.1:${server.port}/connect`, frames };
}

/** A TCP proxy whose live connections can all be cut at once (the client sees 1006 and reconnects). */
async function cuttableProxy(upstreamPort: number) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  stoppers.push(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, cutAll: () => sockets.forEach((s) => s.destroy()) };
}

describe("waiting for a connection", () => {
  test("ping() right after connect() waits for the connection, as publish() does", async () => {
    const server = serve();
    const client = open(server.ws(), fast);
    const [rtt] = await within(Promise.all([client.ping(), client.publish("t", "queued")]), 3000, "ping and publish");
    expect(rtt).toBeGreaterThanOrEqual(0);
    expect(client.state).toBe("open");
  });

  test("while the server is unreachable, publish(), ping() and ready() reject with TimeoutError; nothing is sent later", async () => {
    const port = freePort(); // nothing listens there yet
    const client = open(`ws://127.0.0.1:${port}/connect`, { ...fast, requestTimeoutMs: 100 });
    const [published, pinged, ready] = await within(
      Promise.all([client.publish("late", "never sent").catch((e) => e), client.ping().catch((e) => e), client.ready(50).catch((e) => e)]),
      3000,
      "timeouts",
    );
    expect(published).toBeInstanceOf(TimeoutError);
    expect([published.message, published.sent]).toEqual(["publish not sent: no connection within 100 ms", false]);
    expect(pinged).toBeInstanceOf(TimeoutError);
    expect([pinged.message, pinged.sent]).toEqual(["ping not sent: no connection within 100 ms", false]);
    expect(ready).toBeInstanceOf(TimeoutError);
    expect(ready.message).toStartWith("not connected within 50 ms");

    // The server comes up: the timed-out publish must not go out after the caller was told it failed.
    const server = serve({ PORT: port });
    const watcher = open(server.ws(), fast);
    const got: unknown[] = [];
    watcher.subscribe("late", (data) => got.push(data));
    await within(watcher.ping(), 3000, "watcher subscribed");
    await within(client.ready(3000), 3500, "client reconnects");
    await client.publish("late", "sent after the outage");
    await until(() => got.length === 1, 3000, "the fresh publish");
    expect(got).toEqual(["sent after the outage"]);
  });

  test("requestTimeoutMs: Infinity waits as long as it takes (no timer firing at once)", async () => {
    const port = freePort();
    const client = open(`ws://127.0.0.1:${port}`, { ...fast, requestTimeoutMs: Infinity });
    const events = recordEvents(client);
    let settled: unknown = "pending";
    const published = client.publish("t", 1).then(() => (settled = "acked"), (e) => (settled = e));
    await until(() => events.reconnecting.length >= 3, 3000, "a few failed attempts");
    expect(settled).toBe("pending");
    serve({ PORT: port });
    await within(published, 5000, "publish after the server came up");
    expect(settled).toBe("acked");
  });
});

describe("replies that never come", () => {
  test("a server that swallows frames: publish() and ping() reject with TimeoutError (sent: true)", async () => {
    const raw = rawServer(() => {});
    const client = open(raw.url, { ...fast, requestTimeoutMs: 150 });
    await within(client.ready(), 3000, "welcome from the raw server");
    const [published, pinged] = await within(Promise.all([client.publish("t", 1).catch((e) => e), client.ping().catch((e) => e)]), 3000, "timeouts");
    expect(published).toBeInstanceOf(TimeoutError);
    expect([published.message, published.sent]).toEqual(["no reply to publish within 150 ms", true]);
    expect(pinged).toBeInstanceOf(TimeoutError);
    expect([pinged.message, pinged.sent]).toEqual(["no reply to ping within 150 ms", true]);
    expect(raw.frames.map((f) => f.type)).toEqual(["publish", "ping"]);
  });

  test("the link drops with a publish in flight: it rejects with ConnectionLostError, and the client reconnects", async () => {
    const raw = rawServer((ws, frame) => {
      if (frame.type === "publish") ws.close(1011, "internal error");
    });
    const client = open(raw.url, fast);
    const events = recordEvents(client);
    await within(client.ready(), 3000, "welcome");
    const lost = await within(client.publish("t", "in flight").catch((e) => e), 3000, "the drop");
    expect(lost).toBeInstanceOf(ConnectionLostError);
    expect(lost.message).toBe("connection lost (1011) before the reply");
    expect(events.close[0]).toEqual({ code: 1011, reason: "internal error", willReconnect: true });
    await until(() => events.open.length === 2, 3000, "reconnect");
  });
});

describe("close policies", () => {
  test("4003 (disconnected by server) is not retried: the client stops and says why", async () => {
    const raw = rawServer((ws, frame) => {
      if (frame.type === "ping") ws.close(4003, "disconnected by server");
    });
    const client = open(raw.url, fast);
    const events = recordEvents(client);
    const lost = await within(client.ping().catch((e) => e), 3000, "the kick");
    expect(lost).toBeInstanceOf(ConnectionLostError);
    expect(events.close).toEqual([{ code: 4003, reason: "disconnected by server", willReconnect: false }]);
    expect(events.reconnecting).toEqual([]);
    expect(client.state).toBe("closed");
    expect((await client.ready().catch((e) => e)).message).toBe("connection closed (4003 disconnected by server) and not reconnecting");
  });

  test("a listener that throws is reported as an error event and does not stop the reconnect", async () => {
    const raw = rawServer((ws, frame) => {
      if (frame.type === "ping") ws.close(1011, "internal error");
    });
    const client = open(raw.url, fast);
    const events = recordEvents(client);
    client.on("close", () => {
      throw new Error("listener bug");
    });
    await within(client.ping().catch((e) => e), 3000, "the drop");
    await until(() => events.open.length === 2, 3000, "reconnect despite the throwing listener");
    expect(events.error.map((e) => e.error.message)).toEqual(["listener bug"]);
  });
});

describe("server refusals", () => {
  test("a refused subscribe is dropped with its handlers: reported once, never re-sent on reconnect", async () => {
    const server = serve({ MAX_TOPICS_PER_CONNECTION: 1 });
    const proxy = await cuttableProxy(server.port);
    const client = open(`ws://127.0.0.1:${proxy.port}/connect`, fast);
    const events = recordEvents(client);
    await within(client.ready(), 3000, "open");
    client.subscribe("one", () => {});
    const unsubscribeTwo = client.subscribe("two", () => {});
    await until(() => events.error.length === 1, 3000, "the refusal");
    const refused = events.error[0]!.error as SwitchboardError;
    expect(refused).toBeInstanceOf(SwitchboardError);
    expect([refused.code, refused.topic]).toEqual(["too_many_topics", "two"]);

    proxy.cutAll();
    await until(() => events.open.length === 2, 3000, "reconnect");
    await client.ping(); // after the resubscribe burst: any refusal of it has arrived by now
    expect(events.error).toHaveLength(1);
    unsubscribeTwo(); // the topic is gone already: no frame, no error

    // Dropped, not merely muted: subscribing again asks the server again.
    client.subscribe("two", () => {});
    await until(() => events.error.length === 2, 3000, "the second refusal");
    expect((events.error[1]!.error as SwitchboardError).topic).toBe("two");
    await client.ping();
    expect(events.error).toHaveLength(2);
  });

  test("unsubscribing before the refusal arrives adds no error of its own", async () => {
    const server = serve();
    const client = open(server.ws(), fast);
    const events = recordEvents(client);
    await within(client.ready(), 3000, "open");
    client.subscribe("bad topic", () => {})();
    await client.ping();
    expect(events.error.map((e) => [(e.error as SwitchboardError).code, (e.error as SwitchboardError).topic])).toEqual([["invalid_topic", "bad topic"]]);
  });

  test("after a reconnect, resubscribes refused by the rate limit are asked again, not dropped", async () => {
    // The identity's budget is not refilled by reconnecting (by design), so the resubscribe burst can meet an
    // empty bucket. The server's clock is injected: the budget refills only when the test says so.
    const clock = new ManualClock();
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 1, RATE_LIMIT_BURST: 4, PUBLISH_API_KEY: "client-test-key-0123456789" }, { clock });
    const client = open(server.ws(), fast);
    const events = recordEvents(client);
    const got: string[] = [];
    for (const topic of ["a", "b", "c"]) client.subscribe(topic, (data) => got.push(`${topic}:${String(data)}`));
    await within(client.ready(), 3000, "open");
    await client.publish("a", 1); // the 4th frame: the budget is spent
    for (const conn of server.gateway.connections) conn.ws.close(1011, "internal error");
    await until(() => events.open.length === 2, 3000, "reconnected");
    await until(() => server.gateway.metrics.rateLimited >= 3, 3000, "resubscribes refused");
    clock.advance(10_000); // the budget refills; the client asks again on its own, about a second later
    await until(() => ["a", "b", "c"].every((t) => server.gateway.topics.localInterest(t) === 1), 5000, "resubscribed");
    for (const topic of ["a", "b", "c"]) {
      const res = await fetch(`http://127.0.0.1:${server.port}/publish`, {
        method: "POST",
        headers: { authorization: "Bearer client-test-key-0123456789" },
        body: JSON.stringify({ topic, data: "after" }),
      });
      expect(res.status).toBe(200);
    }
    await until(() => got.length === 4, 3000, "messages on every topic");
    expect(got).toEqual(["a:1", "a:after", "b:after", "c:after"]);
    expect(events.error).toEqual([]);
  });

  test("a rate-limited publish rejects at once with SwitchboardError rate_limited", async () => {
    const server = serve({ RATE_LIMIT_MSGS_PER_S: 1, RATE_LIMIT_BURST: 1 });
    const client = open(server.ws(), { ...fast, requestTimeoutMs: 30_000 });
    const events = recordEvents(client);
    await within(client.ready(), 3000, "open");
    await client.publish("t", "within the burst");
    const refused = await within(client.publish("t", "over the rate").catch((e) => e), 3000, "the refusal");
    expect(refused).toBeInstanceOf(SwitchboardError);
    expect(refused.code).toBe("rate_limited");
    expect(events.error).toEqual([]);
  });
});
