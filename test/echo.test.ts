// /echo parity with the gws / tungstenite echo servers, permessage-deflate, and payload limits on both routes.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { Client, Opcode, RawPeer, serve, stopAll, until, type TestServer } from "./helpers.ts";

const LIMIT = 64 * 1024;
let server: TestServer;
let plain: TestServer;
beforeAll(() => {
  server = serve({ MAX_PAYLOAD_BYTES: LIMIT, PERMESSAGE_DEFLATE: true });
  plain = serve({ MAX_PAYLOAD_BYTES: LIMIT, PERMESSAGE_DEFLATE: false });
});
afterAll(stopAll);

const DEFLATE_OFFER = { "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits" };
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** permessage-deflate payloads end without the 00 00 ff ff tail (RFC 7692 7.2.1). */
const compress = (data: Buffer) => {
  const out = deflateRawSync(data, { finishFlush: 2 /* Z_SYNC_FLUSH */ });
  return out.subarray(0, out.length - 4);
};
const decompress = (data: Buffer) => inflateRawSync(Buffer.concat([data, TAIL]), { finishFlush: 2 /* Z_SYNC_FLUSH */ });

describe("echo", () => {
  test("text comes back as text with the same bytes, no welcome frame", async () => {
    const c = await Client.open(server.ws("/echo"));
    for (const text of ["hi", "", "héllo ✓ 😀", "x".repeat(10_000), '{"type":"ping"}', "123"]) {
      c.socket.send(text);
      expect(await c.raw()).toBe(text);
    }
    c.close();
  });

  test("binary comes back as binary with identical bytes", async () => {
    const c = await Client.open(server.ws("/echo"));
    const payloads = [new Uint8Array([0, 1, 2, 255]), crypto.getRandomValues(new Uint8Array(50_000)), new Uint8Array(0)];
    for (const bytes of payloads) {
      c.socket.send(bytes);
      const got = await c.raw();
      expect(got).toBeInstanceOf(ArrayBuffer);
      expect(new Uint8Array(got as ArrayBuffer)).toEqual(bytes);
    }
    c.close();
  });

  test("opcodes are kept exactly (raw frames), including a fragmented message", async () => {
    const peer = await RawPeer.connect(server.port, "/echo");
    peer.send(Opcode.text, "text frame");
    peer.send(Opcode.binary, Buffer.from([1, 2, 3]));
    // Fragmented text: "frag" + "ment" arrives as one message "fragment".
    peer.send(Opcode.text, "frag", { fin: false });
    peer.send(0, "ment");
    await until(() => peer.frames.length >= 3, 3000, "three echoes");
    expect(peer.frames.map((f) => [f.opcode, f.payload.toString("hex")])).toEqual([
      [Opcode.text, Buffer.from("text frame").toString("hex")],
      [Opcode.binary, "010203"],
      [Opcode.text, Buffer.from("fragment").toString("hex")],
    ]);
    peer.destroy();
  });

  test("many messages in flight come back in order", async () => {
    const c = await Client.open(server.ws("/echo"));
    for (let i = 0; i < 2000; i++) c.socket.send(String(i));
    for (let i = 0; i < 2000; i++) expect(await c.raw()).toBe(String(i));
    c.close();
  });
});

describe("permessage-deflate", () => {
  test("negotiated when enabled; not offered back when disabled", async () => {
    const on = await Client.open(server.ws("/echo"));
    expect(on.socket.extensions).toContain("permessage-deflate");
    const off = await Client.open(plain.ws("/echo"));
    expect(off.socket.extensions).toBe("");
    on.close();
    off.close();
  });

  test("a compressed frame is inflated, and a large echo is sent compressed (RSV1) with the same text", async () => {
    const peer = await RawPeer.connect(server.port, "/echo", DEFLATE_OFFER);
    expect(peer.response.toLowerCase()).toContain("sec-websocket-extensions: permessage-deflate");
    const text = "compress me ".repeat(200);
    peer.send(Opcode.text, compress(Buffer.from(text)), { rsv1: true });
    await until(() => peer.frames.length >= 1, 3000, "echo");
    const frame = peer.frames[0]!;
    expect(frame.opcode).toBe(Opcode.text);
    expect(frame.rsv1).toBe(true);
    expect(frame.payload.length).toBeLessThan(text.length / 10);
    expect(decompress(frame.payload).toString()).toBe(text);
    peer.destroy();
  });

  test("/connect frames are compressed too, and decoded by a normal client", async () => {
    const peer = await RawPeer.connect(server.port, "/connect", DEFLATE_OFFER);
    peer.send(Opcode.text, JSON.stringify({ type: "subscribe", topic: "z" }));
    peer.send(Opcode.text, JSON.stringify({ type: "publish", topic: "z", data: "y".repeat(5000) }));
    await until(() => peer.frames.length >= 3, 3000, "welcome, subscribed, message");
    const message = peer.frames[2]!;
    expect(message.rsv1).toBe(true);
    expect(JSON.parse(decompress(message.payload).toString())).toEqual({ type: "message", topic: "z", data: "y".repeat(5000), offset: 1 });
    peer.destroy();

    const c = await Client.connect(server);
    await c.request({ type: "subscribe", topic: "z" });
    c.send({ type: "publish", topic: "z", data: "w".repeat(5000) });
    // History keeps the topic's first message, so this is its second offset.
    expect(await c.json()).toEqual({ type: "message", topic: "z", data: "w".repeat(5000), offset: 2 });
    c.close();
  });
});

describe("MAX_PAYLOAD_BYTES", () => {
  for (const route of ["/echo", "/connect"] as const) {
    test(`${route}: a frame over the limit closes with 1009; at the limit is fine`, async () => {
      const c = await Client.open(server.ws(route));
      if (route === "/connect") await c.json();
      const atLimit = route === "/echo" ? "a".repeat(LIMIT) : JSON.stringify({ type: "ping", id: 1 }).padEnd(LIMIT, " ");
      c.socket.send(atLimit);
      const reply = await c.text();
      expect(route === "/echo" ? reply : JSON.parse(reply)).toEqual(route === "/echo" ? atLimit : { type: "pong", id: 1 });
      c.socket.send("a".repeat(LIMIT + 1));
      expect(await c.closed).toEqual({ code: 1009, reason: expect.any(String) });
    });
  }

  test("the limit applies after decompression: a small compressed bomb closes with 1009", async () => {
    const peer = await RawPeer.connect(server.port, "/echo", DEFLATE_OFFER);
    const bomb = compress(Buffer.alloc(LIMIT * 4, 0x61));
    expect(bomb.length).toBeLessThan(LIMIT / 10);
    peer.send(Opcode.text, bomb, { rsv1: true });
    await until(() => peer.closeFrame() !== undefined || peer.ended, 3000, "close");
    expect(peer.closeFrame()?.code).toBe(1009);
    expect(peer.count(Opcode.text)).toBe(0);
    peer.destroy();
  });

  test("the server keeps serving others after closing an oversized sender", async () => {
    const bystander = await Client.open(server.ws("/echo"));
    const offender = await Client.open(server.ws("/echo"));
    offender.socket.send("b".repeat(LIMIT + 10));
    expect((await offender.closed).code).toBe(1009);
    bystander.socket.send("still here");
    expect(await bystander.raw()).toBe("still here");
    bystander.close();
  });
});
