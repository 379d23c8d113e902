// Test helpers: a real server on port 0, a queueing WebSocket client, and a raw-TCP WebSocket peer that
// does exactly what a test tells it (no automatic pongs, no reading when paused, arbitrary frames).
import { afterAll, afterEach, beforeAll } from "bun:test";
import net from "node:net";
import { randomBytes } from "node:crypto";
import { configWith, type Config } from "../src/config.ts";
import { Logger } from "../src/log.ts";
import type { ServerFrame } from "../src/protocol.ts";
import { startServer, type RunningServer, type ServerDeps } from "../src/server.ts";
import type { ClientEvents, SwitchboardClient } from "../src/client.ts";

export interface TestServer extends RunningServer {
  ws(route?: "/connect" | "/echo"): string;
  port: number;
}

const running = new Set<RunningServer>();

export function serve(overrides: Partial<Config> = {}, deps: ServerDeps = {}): TestServer {
  const config = configWith({ PORT: 0, HOST: "127.0.0.1", LOG_LEVEL: "silent", ...overrides });
  const server = startServer(config, { log: new Logger(config.LOG_LEVEL), ...deps });
  running.add(server);
  const port = server.server.port!;
  return { ...server, port, ws: (route = "/connect") => `ws://127.0.0.1:${port}${route}` };
}

/** Shuts down every server a test file started (call from afterAll / afterEach). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((s) => s.shutdown()));
  running.clear();
}

/** Rejects after `ms`: every wait in a test is bounded. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `check` (which may be async, e.g. an HTTP request) until it is true (bounded). */
export async function until(check: () => boolean | Promise<boolean>, ms = 5000, what = "condition"): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(5);
  }
}

export interface Closed {
  code: number;
  reason: string;
}

/** A browser-style WebSocket whose messages queue up until a test takes them. */
export class Client {
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<Closed>;
  private readonly queue: (string | ArrayBuffer)[] = [];
  private waiter: (() => void) | undefined;

  constructor(url: string, options?: { perMessageDeflate?: boolean }) {
    this.socket = new WebSocket(url, options as never);
    this.socket.binaryType = "arraybuffer";
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve(), { once: true });
      this.socket.addEventListener("error", () => reject(new Error(`could not connect to ${url}`)), { once: true });
    });
    this.closed = new Promise((resolve) =>
      this.socket.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason }), { once: true }),
    );
    this.socket.addEventListener("message", (e) => {
      this.queue.push(e.data as string | ArrayBuffer);
      this.waiter?.();
    });
  }

  static async open(url: string, options?: { perMessageDeflate?: boolean }): Promise<Client> {
    const client = new Client(url, options);
    await within(client.opened, 5000, `open ${url}`);
    return client;
  }

  /** Opens /connect and consumes the welcome frame. */
  static async connect(server: TestServer): Promise<Client> {
    const client = await Client.open(server.ws("/connect"));
    const welcome = await client.json();
    if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
    return client;
  }

  async raw(ms = 3000): Promise<string | ArrayBuffer> {
    if (this.queue.length === 0) {
      await within(new Promise<void>((resolve) => (this.waiter = resolve)), ms, "a message").finally(
        () => (this.waiter = undefined),
      );
    }
    return this.queue.shift()!;
  }

  async text(ms?: number): Promise<string> {
    const data = await this.raw(ms);
    if (typeof data !== "string") throw new Error("expected a text frame, got binary");
    return data;
  }

  async json(ms?: number): Promise<ServerFrame> {
    return JSON.parse(await this.text(ms)) as ServerFrame;
  }

  /** Sends a frame object as JSON text and returns the next frame. */
  async request(frame: unknown): Promise<ServerFrame> {
    this.send(frame);
    return this.json();
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Asserts that nothing arrives for `ms`. */
  async silence(ms: number): Promise<void> {
    await Bun.sleep(ms);
    if (this.queue.length > 0) throw new Error(`unexpected frame: ${String(this.queue[0])}`);
  }

  get pending(): number {
    return this.queue.length;
  }

  close(): void {
    this.socket.close();
  }
}

export interface RawFrame {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  payload: Buffer;
}

export const Opcode = { text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

/**
 * A WebSocket peer over plain TCP (node:net, so it can stop reading). It never answers pings unless told,
 * and can send any frame, including broken ones.
 */
export class RawPeer {
  readonly frames: RawFrame[] = [];
  response = "";
  ended = false;
  private buffer = Buffer.alloc(0);
  private upgraded = false;
  /** Settles when the upgrade response has arrived or the connection ended, whichever comes first. */
  private readonly responded: Promise<void>;
  private readonly closed: Promise<void>;
  private onResponse: (() => void) | undefined;

  private constructor(readonly socket: net.Socket) {
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.responded = new Promise((resolve) => (this.onResponse = resolve));
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("close", () => {
      this.ended = true;
      this.onResponse?.();
    });
    socket.on("error", () => (this.ended = true));
  }

  static async connect(port: number, path: string, extraHeaders: Record<string, string> = {}): Promise<RawPeer> {
    const socket = net.connect(port, "127.0.0.1");
    await within(new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject)), 3000, "tcp");
    const peer = new RawPeer(socket);
    const headers = {
      Host: `127.0.0.1:${port}`,
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
      "Sec-WebSocket-Version": "13",
      ...extraHeaders,
    };
    const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\r\n");
    socket.write(`GET ${path} HTTP/1.1\r\n${head}\r\n\r\n`);
    await within(peer.responded, 3000, "upgrade response");
    if (!peer.response.startsWith("HTTP/1.1 101")) throw new Error(`upgrade refused: ${peer.response}`);
    return peer;
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    if (!this.upgraded) {
      const end = this.buffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      this.response = this.buffer.subarray(0, end).toString();
      this.buffer = this.buffer.subarray(end + 4);
      this.upgraded = true;
      this.onResponse?.();
    }
    for (;;) {
      const frame = parseFrame(this.buffer);
      if (frame === undefined) return;
      this.buffer = this.buffer.subarray(frame.length);
      this.frames.push(frame.frame);
    }
  }

  /** Sends one masked frame. */
  send(opcode: number, payload: Buffer | string = Buffer.alloc(0), options: { rsv1?: boolean; fin?: boolean } = {}) {
    this.socket.write(encodeFrame(opcode, typeof payload === "string" ? Buffer.from(payload) : payload, options));
  }

  count(opcode: number): number {
    return this.frames.filter((f) => f.opcode === opcode).length;
  }

  closeFrame(): Closed | undefined {
    const frame = this.frames.find((f) => f.opcode === Opcode.close);
    if (frame === undefined) return undefined;
    return { code: frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005, reason: frame.payload.subarray(2).toString() };
  }

  pause(): void {
    this.socket.pause();
  }

  /**
   * Half-closes (TCP FIN) and waits until the server has closed the connection. The server handles every byte
   * sent before the FIN first, so afterwards `frames` holds every answer and any close frame it sent.
   */
  async finish(ms = 5000): Promise<void> {
    this.socket.end();
    await within(this.closed, ms, "the server to close the connection");
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function parseFrame(buf: Buffer): { frame: RawFrame; length: number } | undefined {
  if (buf.length < 2) return undefined;
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  let length = b1 & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buf.length < 4) return undefined;
    length = buf.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buf.length < 10) return undefined;
    length = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  if (b1 & 0x80) offset += 4; // servers never mask, but be exact
  if (buf.length < offset + length) return undefined;
  return {
    frame: { fin: (b0 & 0x80) !== 0, rsv1: (b0 & 0x40) !== 0, opcode: b0 & 0x0f, payload: Buffer.from(buf.subarray(offset, offset + length)) },
    length: offset + length,
  };
}

export function encodeFrame(opcode: number, payload: Buffer, options: { rsv1?: boolean; fin?: boolean } = {}): Buffer {
  const fin = options.fin ?? true;
  const header: number[] = [(fin ? 0x80 : 0) | (options.rsv1 ? 0x40 : 0) | opcode];
  const n = payload.length;
  if (n < 126) header.push(0x80 | n);
  else if (n < 65536) header.push(0x80 | 126, n >> 8, n & 0xff);
  else {
    header.push(0x80 | 127);
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(n));
    header.push(...len);
  }
  const mask = randomBytes(4);
  const masked = Buffer.alloc(n);
  for (let i = 0; i < n; i++) masked[i] = payload[i]! ^ mask[i & 3]!;
  return Buffer.concat([Buffer.from(header), mask, masked]);
}

/** Reads healthz's connection count over HTTP, as an operator would. */
export async function connectionsOf(server: TestServer): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${server.port}/healthz`);
  return ((await res.json()) as { connections: number }).connections;
}

/** A free TCP port on 127.0.0.1 (bound, read, released: a later bind may race, which tests tolerate). */
export function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

export interface Entry {
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  /** The port from the start-up line. */
  port: number;
  /** All of stdout so far, and (once the process exits) the rest of it. */
  stdout(): string;
  /** All of stderr so far (warn and error log lines go there). */
  stderr(): string;
  exited(): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Sends a signal; the process is SIGKILLed anyway after 30 s so no test leaves one behind. */
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Runs the real entry point (`bun run src/index.ts`) on 127.0.0.1 with `env` and waits for its start-up line
 * (`switchboard listening on http://127.0.0.1:PORT ...`, matched by `ready` when given). `preload` is a module
 * run first (`bun run --preload`), for faults no real input can cause (see test/fixtures/).
 */
/**
 * Entry points still running. The 30 s guard above is unref'd (it must not hold a finished test run open), so
 * a process a failed test left hanging is killed after its test file instead.
 */
const spawned = new Set<{ kill(signal?: number | NodeJS.Signals): void }>();

/** Kills every entry point a test left running (test/setup.ts calls it after each file). */
export function killSpawned(): void {
  for (const proc of spawned) proc.kill("SIGKILL");
  spawned.clear();
}

export async function spawnEntry(
  env: Record<string, string>,
  ready = /^switchboard listening on http:\/\/127\.0\.0\.1:(\d+) /m,
  options: { preload?: string } = {},
): Promise<Entry> {
  const preload = options.preload === undefined ? [] : ["--preload", options.preload];
  const proc = Bun.spawn(["bun", "run", ...preload, "src/index.ts"], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const guard = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  guard.unref();
  spawned.add(proc);
  void proc.exited.then(() => spawned.delete(proc));
  const output = collectOutput(proc);
  const deadline = performance.now() + 15_000;
  let match: RegExpMatchArray | null = null;
  while ((match = output.stdout().match(ready)) === null) {
    if (proc.exitCode !== null || performance.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`server did not start: ${output.stdout()}${(await output.ended).stderr}`);
    }
    await Bun.sleep(10);
  }
  return {
    proc,
    port: Number(match[1]),
    stdout: output.stdout,
    stderr: output.stderr,
    exited: async () => {
      const code = await proc.exited;
      clearTimeout(guard);
      return { code, ...(await output.ended) };
    },
    kill: (signal = "SIGTERM") => proc.kill(signal),
  };
}

/** A child process's stdout and stderr as text so far, and both whole once the process closed them. */
export function collectOutput(proc: { stdout: ReadableStream<Uint8Array>; stderr: ReadableStream<Uint8Array> }) {
  let out = "";
  let err = "";
  const read = async (stream: ReadableStream<Uint8Array>, add: (text: string) => void) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) add(decoder.decode(chunk, { stream: true }));
  };
  const ended = Promise.all([read(proc.stdout, (t) => (out += t)), read(proc.stderr, (t) => (err += t))]).then(() => ({ stdout: out, stderr: err }));
  return { stdout: () => out, stderr: () => err, ended };
}

/** Records every event of a typed client, in order (for tests of src/client.ts). */
export function recordEvents(client: SwitchboardClient) {
  const events: { [K in keyof ClientEvents]: ClientEvents[K][] } = { open: [], close: [], reconnecting: [], error: [], recovery: [], subscribed: [], unsubscribed: [] };
  for (const name of Object.keys(events) as (keyof ClientEvents)[]) client.on(name, (e) => events[name].push(e as never));
  return events;
}

/**
 * A raw TCP connection for HTTP tests: what the server answered so far (`reply.text`) and whether it closed,
 * with `closed` resolving when it does.
 */
export async function rawHttpConnection(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  await within(new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject)), 3000, "tcp connect");
  const reply = { text: "", closed: false };
  const closed = new Promise<void>((resolve) => {
    socket.on("close", () => {
      reply.closed = true;
      resolve();
    });
  });
  socket.on("data", (d: Buffer) => (reply.text += d.toString()));
  socket.on("error", () => {}); // a reset is a close here; `close` follows
  return { socket, reply, closed };
}

/**
 * A test file's real Redis and its clients: a redis-server for the file (`redis()` after beforeAll), clients a
 * test registers closed after it, servers stopped after each test, Redis stopped after the file.
 */
export function redisPerFile(start: () => Promise<{ owned: boolean; stop(): Promise<void> }>) {
  redisForFile(start);
  const clients: Client[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await stopAll();
  });
  return { clients };
}

/** A test file's own redis-server: started before its tests; after them, the file's servers stop, then Redis. */
export function redisForFile(start: () => Promise<{ owned: boolean; stop(): Promise<void> }>): void {
  let redis: { owned: boolean; stop(): Promise<void> } | undefined;
  beforeAll(async () => {
    redis = await start();
  });
  afterAll(async () => {
    await stopAll();
    if (redis?.owned) await redis.stop();
  });
}
