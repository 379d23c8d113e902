// Presence on one node (memory): one entry per active subscription, presence and presence_stats requests,
// join/leave to `presence: true` subscribers exactly once, `info` limits, permissions, and the typed client.
// (Cluster-wide presence over Redis is the rest of issue 11.)
import { afterAll, describe, expect, test } from "bun:test";
import { SignJWT } from "jose";
import { connect, type PresenceClient } from "../src/client.ts";
import { Client, serve, stopAll, until } from "./helpers.ts";

afterAll(stopAll);

const idOf = async (c: Client, server: ReturnType<typeof serve>): Promise<string> => {
  const pong = await c.request({ type: "ping", id: "who" });
  if (pong.type !== "pong") throw new Error("no pong");
  // The newest connection's id: the gateway names connections `<prefix>-<seq>`.
  return [...server.gateway.connections].map((conn) => server.gateway.connectionId(conn)).at(-1)!;
};

describe("presence on one node", () => {
  test("one entry per active subscription, with info; stats count clients; join/leave reach presence subscribers once", async () => {
    const server = serve();
    const watcher = await Client.connect(server);
    const watcherId = await idOf(watcher, server);
    expect(await watcher.request({ type: "subscribe", topic: "room", presence: true, id: 1 })).toMatchObject({ type: "subscribed", topic: "room", id: 1 });
    const guest = await Client.connect(server);
    const guestId = await idOf(guest, server);
    expect(await guest.request({ type: "subscribe", topic: "room", info: { name: "ann" }, id: 2 })).toMatchObject({ type: "subscribed", id: 2 });
    // The watcher hears the guest join; the guest (no presence: true) hears nothing, not even its own join.
    expect(await watcher.json()).toEqual({ type: "join", topic: "room", client: { connectionId: guestId, user: null, info: { name: "ann" } } });
    expect(await guest.request({ type: "presence", topic: "room", id: 3 })).toEqual({
      type: "presence",
      topic: "room",
      clients: [
        { connectionId: watcherId, user: null },
        { connectionId: guestId, user: null, info: { name: "ann" } },
      ],
      id: 3,
    });
    expect(await guest.request({ type: "presence_stats", topic: "room", id: 4 })).toEqual({ type: "presence_stats", topic: "room", clients: 2, users: 0, id: 4 });
    expect(await guest.request({ type: "unsubscribe", topic: "room", id: 5 })).toEqual({ type: "unsubscribed", topic: "room", id: 5 });
    expect(await watcher.json()).toEqual({ type: "leave", topic: "room", client: { connectionId: guestId, user: null, info: { name: "ann" } } });
    // A close leaves too, exactly once.
    const closer = await Client.connect(server);
    const closerId = await idOf(closer, server);
    await closer.request({ type: "subscribe", topic: "room" });
    expect(await watcher.json()).toEqual({ type: "join", topic: "room", client: { connectionId: closerId, user: null } });
    closer.close();
    expect(await watcher.json()).toEqual({ type: "leave", topic: "room", client: { connectionId: closerId, user: null } });
    await watcher.silence(30);
    expect(await watcher.request({ type: "presence", topic: "room", id: 6 })).toEqual({ type: "presence", topic: "room", clients: [{ connectionId: watcherId, user: null }], id: 6 });
    expect(await watcher.request({ type: "presence", topic: "empty", id: 7 })).toEqual({ type: "presence", topic: "empty", clients: [], id: 7 });
    // The watcher leaves: nobody is left, nothing is held.
    watcher.close();
    guest.close();
    await until(() => (server.gateway.renderMetrics().match(/^switchboard_presence_entries (\d+)$/m)?.[1] ?? "") === "0", 2000, "no entries left");
  });

  test("info must be a JSON object of at most 1 KiB; presence of a bad topic is invalid_topic", async () => {
    const server = serve();
    const c = await Client.connect(server);
    expect(await c.request({ type: "subscribe", topic: "t", info: { big: "x".repeat(1100) }, id: 1 })).toEqual({
      type: "error",
      code: "invalid_message",
      message: "info: at most 1024 bytes as JSON (UTF-8)",
      id: 1,
    });
    for (const info of ["text", [1, 2], 5, null]) {
      expect(await c.request({ type: "subscribe", topic: "t", info, id: 2 })).toMatchObject({ type: "error", code: "invalid_message", id: 2 });
    }
    expect(server.topics.localInterest("t")).toBe(0);
    expect(await c.request({ type: "presence", topic: "bad topic", id: 3 })).toMatchObject({ type: "error", code: "invalid_topic", id: 3 });
    c.close();
  });

  test("with tokens: entries carry the sub, stats count distinct users, presence needs subscribe permission", async () => {
    const secret = "presence-test-secret-of-at-least-32-characters";
    const server = serve({ AUTH_SECRET: secret });
    const token = (sub: string, topics: string[]) =>
      new SignJWT({ sub, topics: { subscribe: topics, publish: [] } }).setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h").sign(new TextEncoder().encode(secret));
    const open = async (sub: string, topics: string[]) => {
      const c = await Client.open(`${server.ws()}?token=${await token(sub, topics)}`);
      expect((await c.json()).type).toBe("welcome");
      return c;
    };
    const [ann1, ann2, bob] = [await open("ann", ["room"]), await open("ann", ["room"]), await open("bob", ["room"])];
    for (const c of [ann1, ann2, bob]) expect((await c.request({ type: "subscribe", topic: "room" })).type).toBe("subscribed");
    expect(await bob.request({ type: "presence_stats", topic: "room", id: 1 })).toEqual({ type: "presence_stats", topic: "room", clients: 3, users: 2, id: 1 });
    const list = (await bob.request({ type: "presence", topic: "room", id: 2 })) as { clients: { user: string }[] };
    expect(list.clients.map((c) => c.user)).toEqual(["ann", "ann", "bob"]);
    const outsider = await open("eve", ["elsewhere"]);
    expect(await outsider.request({ type: "presence", topic: "room", id: 3 })).toEqual({
      type: "error",
      code: "forbidden",
      message: "not allowed to see who is in room",
      id: 3,
    });
    expect(await outsider.request({ type: "presence_stats", topic: "room", id: 4 })).toMatchObject({ type: "error", code: "forbidden", id: 4 });
    for (const c of [ann1, ann2, bob, outsider]) c.close();
  });
});

describe("PRESENCE_MAX_CLIENTS", () => {
  test("a presence request returns at most that many entries and says it is truncated; stats count them all", async () => {
    const server = serve({ PRESENCE_MAX_CLIENTS: 2 });
    const members = await Promise.all([1, 2, 3].map(() => Client.connect(server)));
    for (const m of members) expect((await m.request({ type: "subscribe", topic: "busy" })).type).toBe("subscribed");
    const list = (await members[0]!.request({ type: "presence", topic: "busy", id: 1 })) as { clients: unknown[]; truncated?: boolean };
    expect([list.clients.length, list.truncated]).toEqual([2, true]);
    expect(await members[0]!.request({ type: "presence_stats", topic: "busy", id: 2 })).toEqual({ type: "presence_stats", topic: "busy", clients: 3, users: 0, id: 2 });
    for (const m of members) m.close();
  });
});

describe("big presence lists", () => {
  test("a list stops at half the backpressure limit (truncated) and a burst of them never gets the socket dropped", async () => {
    const server = serve({ BACKPRESSURE_LIMIT_BYTES: 256 * 1024 });
    const info = { bio: "b".repeat(1000) };
    const members = await Promise.all(Array.from({ length: 300 }, () => Client.connect(server)));
    for (const m of members) m.send({ type: "subscribe", topic: "crowd", info });
    for (const m of members) expect((await m.json()).type).toBe("subscribed");
    const asker = await Client.connect(server);
    for (let i = 0; i < 20; i++) asker.send({ type: "presence", topic: "crowd", id: i });
    let lists = 0;
    for (let i = 0; i < 20; i++) {
      const reply = (await asker.json()) as { type: string; clients?: unknown[]; truncated?: boolean; code?: string };
      if (reply.type === "presence") {
        lists++;
        expect(reply.truncated).toBe(true); // 300 x ~1.1 KB does not fit 128 KiB
        expect(JSON.stringify(reply).length).toBeLessThanOrEqual(128 * 1024 + 1024);
      } else {
        expect(reply).toMatchObject({ type: "error", code: "unavailable" });
      }
    }
    expect(lists).toBeGreaterThan(0);
    expect(await asker.request({ type: "ping", id: "alive" })).toEqual({ type: "pong", id: "alive" });
    for (const m of [...members, asker]) m.close();
  });
});

describe("presence in the typed client", () => {
  test("subscribe with info and onJoin/onLeave; presence() and presenceStats()", async () => {
    const server = serve();
    const watcher = connect(server.url, { reconnect: false });
    const joins: PresenceClient[] = [];
    const leaves: PresenceClient[] = [];
    watcher.subscribe("lobby", () => {}, { onJoin: (c) => joins.push(c), onLeave: (c) => leaves.push(c), info: { role: "host" } });
    await watcher.ready();
    await until(async () => (await watcher.presenceStats("lobby")).clients === 1, 2000, "the watcher's own entry");
    const guest = connect(server.url, { reconnect: false });
    const off = guest.subscribe("lobby", () => {}, { info: { role: "guest" } });
    await until(() => joins.length === 1, 2000, "the join");
    expect(joins[0]).toEqual({ connectionId: guest.connectionId!, user: null, info: { role: "guest" } });
    const list = await guest.presence("lobby");
    expect(list).toMatchObject({ type: "presence", topic: "lobby" });
    expect(list.clients.map((c) => c.info)).toEqual([{ role: "host" }, { role: "guest" }]);
    expect(await guest.presenceStats("lobby")).toMatchObject({ type: "presence_stats", topic: "lobby", clients: 2, users: 0 });
    off();
    await until(() => leaves.length === 1, 2000, "the leave");
    expect(leaves[0]).toEqual(joins[0]!);
    watcher.close();
    guest.close();
  });
});
