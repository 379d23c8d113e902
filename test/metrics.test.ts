// GET /metrics: valid Prometheus text, and counters that move by exactly what a scripted session did.
import { afterAll, describe, expect, test } from "bun:test";
import { ENTRY_OVERHEAD_BYTES, TOPIC_OVERHEAD_BYTES } from "../src/history/memory.ts";
import { Client, serve, stopAll, until, type TestServer } from "./helpers.ts";

afterAll(stopAll);

async function scrape(server: TestServer): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  const text = await res.text();
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.trimEnd().split("\n")) {
    const type = /^# TYPE ([a-z_]+) (counter|gauge)$/.exec(line);
    if (type) {
      typed.add(type[1]!);
      continue;
    }
    if (line.startsWith("# HELP ")) continue;
    const sample = /^([a-z_]+)(\{[a-z_]+="[^"\\\n]*"\})? (-?\d+(?:\.\d+)?)$/.exec(line);
    if (!sample) throw new Error(`not Prometheus text: ${JSON.stringify(line)}`);
    if (!typed.has(sample[1]!)) throw new Error(`sample before its TYPE: ${line}`);
    samples.set(`${sample[1]}${sample[2] ?? ""}`, Number(sample[3]));
  }
  return samples;
}

function delta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) if (v !== (before.get(k) ?? 0)) out[k] = v - (before.get(k) ?? 0);
  return out;
}

describe("/metrics", () => {
  test("a scripted session moves the counters by exactly the expected amounts", async () => {
    const server = serve();
    const before = await scrape(server);
    expect(before.get('switchboard_connections{route="connect"}')).toBe(0);
    expect(before.get('switchboard_broker_ready{broker="memory"}')).toBe(1);

    const a = await Client.connect(server); // welcome: 1 frame out
    const b = await Client.connect(server); // welcome: 1 frame out
    const e = await Client.open(server.ws("/echo"));
    // History is on (the default): the first subscribe gives the topic a position (a history topic).
    const subscribed = await a.request({ type: "subscribe", topic: "m" }); // in 1, out 1
    const epoch = (subscribed as { epoch: string }).epoch;
    expect(subscribed).toEqual({ type: "subscribed", topic: "m", epoch: expect.stringMatching(/^[0-9a-z]{8}$/), offset: 0 });
    // A subscribe with since: a recovery (nothing missed), counted by outcome.
    expect(await b.request({ type: "subscribe", topic: "m", since: { epoch, offset: 0 } })).toEqual({
      type: "subscribed",
      topic: "m",
      epoch,
      offset: 0,
      recovered: true,
    }); // in 1, out 1
    a.send({ type: "publish", topic: "m", data: "x", id: 1 }); // in 1, out 1 (ack); 2 deliveries; 1 append
    const own = [await a.json(), await a.json()];
    expect(own).toContainEqual({ type: "ack", id: 1, offset: 1 });
    expect(own).toContainEqual({ type: "message", topic: "m", data: "x", offset: 1 });
    expect(await b.json()).toEqual({ type: "message", topic: "m", data: "x", offset: 1 });
    // A history request: in 1, out 1; one history read.
    expect(await a.request({ type: "history", topic: "m", id: 2 })).toEqual({
      type: "history",
      topic: "m",
      epoch,
      offset: 1,
      messages: [{ offset: 1, data: "x" }],
      id: 2,
    });
    expect(await a.request("{oops")).toMatchObject({ code: "invalid_json" }); // in 1, out 1
    a.socket.send(new Uint8Array([1]));
    expect(await a.json()).toMatchObject({ code: "unsupported_binary" }); // in 1, out 1
    e.socket.send("hello"); // in 1, out 1 (echo)
    expect(await e.raw()).toBe("hello");
    b.socket.close(1000, "bye");
    await until(() => server.gateway.connections.size === 2, 2000, "b closed");

    const after = await scrape(server);
    expect(delta(before, after)).toEqual({
      'switchboard_connections{route="connect"}': 1,
      'switchboard_connections{route="echo"}': 1,
      'switchboard_upgrades_accepted_total{route="connect"}': 2,
      'switchboard_upgrades_accepted_total{route="echo"}': 1,
      switchboard_frames_received_total: 7,
      switchboard_frames_received_payload_total: expect.any(Number),
      switchboard_frames_sent_total: 9,
      switchboard_frames_sent_payload_total: expect.any(Number),
      switchboard_publishes_total: 1,
      switchboard_deliveries_total: 2,
      switchboard_history_appends_total: 1,
      switchboard_history_reads_total: 1,
      'switchboard_history_recoveries_total{outcome="recovered"}': 1,
      // The memory store's gauges: one topic holding one message, counted as src/history/memory.ts says.
      switchboard_history_topics: 1,
      switchboard_history_messages: 1,
      switchboard_history_bytes: '{"type":"message","topic":"m","data":"x","offset":1}'.length + ENTRY_OVERHEAD_BYTES + TOPIC_OVERHEAD_BYTES + "m".length,
      // Presence: a and b joined "m", b left when it closed; a's entry remains.
      switchboard_presence_events_total: 3,
      switchboard_presence_entries: 1,
      switchboard_presence_topics: 1,
      'switchboard_errors_total{code="invalid_json"}': 1,
      'switchboard_errors_total{code="unsupported_binary"}': 1,
      'switchboard_closes_total{code="1000"}': 1,
    });
    expect(after.get("switchboard_frames_sent_payload_total")! - (before.get("switchboard_frames_sent_payload_total") ?? 0)).toBeGreaterThan(5);
    a.close();
    e.close();
  });

  test("rejected upgrades are counted by reason; heartbeat timeouts and rate-limited frames are counted", async () => {
    const server = serve({ MAX_CONNECTIONS: 1, PING_INTERVAL_MS: 100, PING_WAIT_MS: 100, RATE_LIMIT_MSGS_PER_S: 1, RATE_LIMIT_BURST: 1 });
    const a = await Client.connect(server);
    const refused = await fetch(`http://127.0.0.1:${server.port}/connect`, {
      headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" },
    });
    expect(refused.status).toBe(503);
    a.send({ type: "ping" });
    a.send({ type: "ping" });
    await a.json();
    await a.json();
    const m = await scrape(server);
    expect(m.get('switchboard_upgrades_rejected_total{reason="max_connections"}')).toBe(1);
    expect(m.get("switchboard_rate_limited_total")).toBe(1);
    expect(m.get('switchboard_errors_total{code="rate_limited"}')).toBe(1);
    a.close();
  });

  test("a dead peer's heartbeat timeout is counted with its close code", async () => {
    const server = serve({ PING_INTERVAL_MS: 100, PING_WAIT_MS: 100 });
    const { RawPeer } = await import("./helpers.ts");
    const peer = await RawPeer.connect(server.port, "/connect");
    await until(() => peer.closeFrame() !== undefined, 3000, "timeout");
    await until(() => server.gateway.connections.size === 0, 2000, "freed");
    const m = await scrape(server);
    expect(m.get("switchboard_heartbeat_timeouts_total")).toBe(1);
    expect(m.get('switchboard_closes_total{code="4000"}')).toBe(1);
    peer.destroy();
  });
});
