// The typed client against real servers: round trips, exact data, reconnect + resubscribe across a real
// server restart, the publish queue, backoff, dead-server detection through a pausable TCP proxy, close().
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import {
  backoffDelay,
  connect,
  ConnectionLostError,
  QueueFullError,
  SwitchboardError,
  type ClientEvents,
  type SwitchboardClient,
} from "../src/client.ts";
import { freePort, serve, spawnEntry, stopAll, until, within, recordEvents } from "./helpers.ts";

const clients: SwitchboardClient[] = [];
const track = (c: SwitchboardClient) => (clients.push(c), c);
afterAll(async () => {
  for (const c of clients) c.close();
  await stopAll();
});


/** Collects messages of one topic. */
function inbox(client: SwitchboardClient, topic: string) {
  const got: unknown[] = [];
  const unsubscribe = client.subscribe(topic, (data) => got.push(data));
  return { got, unsubscribe };
}

/** The real entry point on a fixed port, so it can be restarted where clients expect it. */
async function spawnServer(port: number) {
  const entry = await spawnEntry({ PORT: String(port), LOG_LEVEL: "warn" });
  return {
    stop: async (signal: "SIGTERM" | "SIGKILL" = "SIGTERM") => {
      entry.kill(signal);
      await entry.exited();
    },
  };
}

/** A TCP proxy whose existing connections can be frozen (bytes silently dropped both ways, sockets open). */
async function pausableProxy(upstreamPort: number) {
  const links: { frozen: boolean; sockets: net.Socket[] }[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, "127.0.0.1");
    const link = { frozen: false, sockets: [client, upstream] };
    links.push(link);
    client.on("data", (chunk) => void (link.frozen || upstream.write(chunk)));
    upstream.on("data", (chunk) => void (link.frozen || client.write(chunk)));
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => link.frozen || client.destroy());
    client.on("error", () => {});
    upstream.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    freezeAll: () => links.forEach((l) => (l.frozen = true)),
    stop: () => {
      for (const l of links) for (const s of l.sockets) s.destroy();
      server.close();
    },
  };
}

describe("typed round trips", () => {
  test("subscribe, publish (ack), message, ping, unsubscribe; data arrives exactly as published", async () => {
    const server = serve();
    const client = track(connect(`http://127.0.0.1:${server.port}`));
    const events = recordEvents(client);
    await client.ready();
    expect(events.open).toEqual([{ connectionId: expect.any(String), heartbeat: { intervalMs: 5000, timeoutMs: 15000 }, reconnected: false }]);
    expect(client.connectionId).toBe(events.open[0]!.connectionId);

    const room = inbox(client, "room.1");
    const values = ["123", "2026-11-28T12:00:00.000Z", "true", { at: "2026-01-01", n: "007" }, [1, "1"], null, 0];
    for (const value of values) await client.publish("room.1", value);
    await until(() => room.got.length === values.length, 3000, "all messages");
    expect(room.got).toEqual(values);
    expect(typeof room.got[0]).toBe("string"); // Eden would have made it the number 123
    expect(typeof room.got[1]).toBe("string"); // ...and this a Date

    const rtt = await client.ping();
    expect(rtt).toBeGreaterThanOrEqual(0);
    expect(rtt).toBeLessThan(5000);

    room.unsubscribe();
    await client.publish("room.1", "after unsubscribe");
    await client.ping(); // a full round trip after the publish
    expect(room.got).toHaveLength(values.length);
    expect(events.error).toEqual([]);
    client.close();
  });

  test("two subscribers on one topic share one server subscription; the last to leave unsubscribes", async () => {
    const server = serve();
    const client = track(connect(`http://127.0.0.1:${server.port}`));
    await client.ready();
    const a = inbox(client, "shared");
    const b = inbox(client, "shared");
    await client.publish("shared", 1);
    await until(() => a.got.length === 1 && b.got.length === 1, 3000, "both handlers");
    expect([...server.gateway.connections].map((c) => c.topics?.size)).toEqual([1]);
    a.unsubscribe();
    await client.publish("shared", 2);
    await until(() => b.got.length === 2, 3000, "b only");
    expect(a.got).toEqual([1]);
    b.unsubscribe();
    await client.publish("shared", 3);
    await client.ping();
    expect(b.got).toEqual([1, 2]);
    client.close();
  });

  test("server errors: publish rejects with SwitchboardError; a refused subscribe is an error event", async () => {
    const server = serve({ MAX_TOPICS_PER_CONNECTION: 1 });
    const client = track(connect(`http://127.0.0.1:${server.port}`));
    const events = recordEvents(client);
    await client.ready();
    const error = await client.publish("bad topic", 1).catch((e) => e);
    expect(error).toBeInstanceOf(SwitchboardError);
    expect(error.code).toBe("invalid_topic");

    client.subscribe("one", () => {});
    client.subscribe("two", () => {});
    await until(() => events.error.length === 1, 3000, "error event");
    const refused = events.error[0]!.error as SwitchboardError;
    expect(refused).toBeInstanceOf(SwitchboardError);
    expect(refused.code).toBe("too_many_topics");
    client.close();
  });
});

describe("reconnect", () => {
  test("survives a real server restart on the same port: resubscribes, then sends queued publishes in order", async () => {
    const port = freePort();
    let server = await spawnServer(port);
    const client = track(connect(`ws://127.0.0.1:${port}`, { reconnect: { baseMs: 50, capMs: 200 } }));
    const events = recordEvents(client);
    await client.ready();
    const news = inbox(client, "news");
    await client.publish("news", "before");
    await until(() => news.got.length === 1, 3000, "first message");

    await server.stop("SIGTERM");
    await until(() => events.close.length >= 1, 3000, "close event");
    expect(events.close[0]).toEqual({ code: 1001, reason: "server shutting down", willReconnect: true });
    await until(() => events.reconnecting.length >= 1, 3000, "reconnecting");

    // Made while disconnected: queued, sent in order after the resubscribe burst.
    const queued = [1, 2, 3, 4, 5].map((n) => client.publish("news", `queued ${n}`));
    server = await spawnServer(port);
    await within(Promise.all(queued), 10_000, "queued publishes acked");
    expect(events.open.at(-1)?.reconnected).toBe(true);
    await until(() => news.got.length === 6, 3000, "queued messages");
    expect(news.got).toEqual(["before", "queued 1", "queued 2", "queued 3", "queued 4", "queued 5"]);

    // And another client's publish reaches it through the restored subscription.
    const other = track(connect(`http://127.0.0.1:${port}`));
    await other.ready();
    await other.publish("news", "from another client");
    await until(() => news.got.length === 7, 3000, "cross-client message");
    expect(news.got.at(-1)).toBe("from another client");
    other.close();
    client.close();
    await server.stop();
  });

  test("publishes beyond the queue bound reject with QueueFullError; close() rejects the queued ones", async () => {
    const port = freePort(); // nothing listens there
    const client = track(connect(`http://127.0.0.1:${port}`, { maxQueuedPublishes: 2, reconnect: { baseMs: 20, capMs: 50 } }));
    const first = client.publish("t", 1).catch((e) => e);
    const second = client.publish("t", 2).catch((e) => e);
    const third = await client.publish("t", 3).catch((e) => e);
    expect(third).toBeInstanceOf(QueueFullError);
    expect(third.message).toBe("queue is full (2 requests waiting for a connection)");
    client.close();
    expect(await first).toBeInstanceOf(ConnectionLostError);
    expect(await second).toBeInstanceOf(ConnectionLostError);
  });

  test("backoff: full jitter within [0, min(cap, base * 2^(attempt-1))], and it gives up after maxAttempts", async () => {
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, 100, 1000, () => 0.999999))).toEqual([99, 199, 399, 799, 999, 999]);
    expect(backoffDelay(7, 100, 1000, () => 0)).toBe(0);

    const port = freePort();
    const client = track(connect(`http://127.0.0.1:${port}`, { reconnect: { baseMs: 20, capMs: 80, maxAttempts: 5 } }));
    const events = recordEvents(client);
    const queued = client.publish("t", "never").catch((e) => e);
    await until(() => client.state === "closed", 5000, "giving up");
    expect(events.reconnecting.map((e) => e.attempt)).toEqual([1, 2, 3, 4, 5]);
    events.reconnecting.forEach(({ attempt, delayMs }) => {
      expect(delayMs).toBeGreaterThanOrEqual(0);
      expect(delayMs).toBeLessThan(Math.min(80, 20 * 2 ** (attempt - 1)));
    });
    expect(events.close).toHaveLength(6);
    expect(events.close.slice(0, 5).every((e) => e.willReconnect)).toBe(true);
    expect(events.close[5]!.willReconnect).toBe(false);
    expect(await queued).toBeInstanceOf(ConnectionLostError);
    await expect(client.ready()).rejects.toBeInstanceOf(ConnectionLostError);
  });

  test("a dead server (half-open TCP) is detected from the welcome's timeoutMs; the client reconnects", async () => {
    const server = serve({ PING_INTERVAL_MS: 200, PING_WAIT_MS: 300 });
    const proxy = await pausableProxy(server.port);
    const client = track(connect(`http://127.0.0.1:${proxy.port}`, { reconnect: { baseMs: 20, capMs: 50 } }));
    const events = recordEvents(client);
    await client.ready();
    const feed = inbox(client, "feed");
    await client.publish("feed", "live");

    proxy.freezeAll(); // the server stops answering; TCP stays open
    const frozenAt = performance.now();
    await until(() => events.close.length >= 1, 3000, "dead-server detection");
    const detectedAfter = performance.now() - frozenAt;
    expect(events.close[0]).toEqual({ code: 4000, reason: "server heartbeat timeout", willReconnect: true });
    // Never before the timeout (silence counts from the last frame, before the freeze); the wait above bounds it.
    expect(detectedAfter).toBeGreaterThanOrEqual(500 - 200);

    await until(() => events.open.length === 2, 3000, "reconnected through a fresh proxied connection");
    await client.publish("feed", "after");
    await until(() => feed.got.length === 2, 3000, "resubscribed");
    expect(feed.got).toEqual(["live", "after"]);
    client.close();
    proxy.stop();
  });

  test("while idle, the client keeps the link provably alive: no false timeouts over several deadlines", async () => {
    const server = serve({ PING_INTERVAL_MS: 100, PING_WAIT_MS: 150 });
    const client = track(connect(`http://127.0.0.1:${server.port}`));
    const events = recordEvents(client);
    await client.ready();
    await Bun.sleep(1500); // six read deadlines of silence from the application
    expect(events.close).toEqual([]);
    expect(events.open).toHaveLength(1);
    client.close();
  });

  test("close() is deliberate: no reconnect, the server sees the socket go", async () => {
    const server = serve();
    const client = track(connect(`http://127.0.0.1:${server.port}`, { reconnect: { baseMs: 10, capMs: 10 } }));
    const events = recordEvents(client);
    await client.ready();
    expect(server.gateway.connections.size).toBe(1);
    client.close();
    await until(() => server.gateway.connections.size === 0, 3000, "server-side close");
    await Bun.sleep(200);
    expect(events.reconnecting).toEqual([]);
    expect(events.close).toEqual([{ code: 1000, reason: "client closed", willReconnect: false }]);
    expect(client.state).toBe("closed");
    await expect(client.publish("t", 1)).rejects.toBeInstanceOf(ConnectionLostError);
  });
});
