// Shared pieces of the benchmarks: spawning a pinned server process, reading its CPU time and RSS from /proc,
// a raw-TCP WebSocket load client that pipelines pre-masked frames and counts replies without parsing JSON, and a
// bench-owned redis-server.
import { RedisClient, type Socket } from "bun";
import { heapStats } from "bun:jsc";

export const CLK_TCK = 100; // Linux USER_HZ; /proc/<pid>/stat times are in these ticks

export interface ServerProcess {
  pid: number;
  port: number;
  /** JS heap of the server, read inside it (bench/servers and baselines print it on SIGUSR2). */
  heap(): Promise<HeapReport>;
  /** SIGKILL by default; SIGTERM lets a supervisor drain its workers first. */
  kill(signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
}

export interface HeapReport {
  heapSize: number;
  heapCapacity: number;
  objectCount: number;
}

/** Starts `cmd` pinned to `cpu`; it must print a line containing `127.0.0.1:<port>`. */
export async function spawnServer(cmd: string[], env: Record<string, string>, cpu: number | null): Promise<ServerProcess> {
  const argv = cpu === null ? cmd : ["taskset", "-c", String(cpu), ...cmd];
  const proc = Bun.spawn(argv, { env: { ...process.env, ...env }, stdout: "pipe", stderr: "inherit" });
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  void (async () => {
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of proc.stdout) {
      buffered += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        lines.push(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        wake?.();
      }
    }
  })();
  const nextLine = async (match: (line: string) => boolean, ms: number): Promise<string | undefined> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = lines.findIndex(match);
      if (i >= 0) return lines.splice(0, i + 1).pop();
      const left = deadline - Date.now();
      if (left <= 0 || proc.exitCode !== null) return undefined;
      await Promise.race([new Promise<void>((r) => (wake = r)), Bun.sleep(left)]);
    }
  };
  const portLine = await nextLine((l) => /127\.0\.0\.1:\d+/.test(l), 10_000);
  if (portLine === undefined) {
    proc.kill("SIGKILL");
    throw new Error(`server did not print its port: ${lines.join("\n")}`);
  }
  return {
    pid: proc.pid,
    port: Number(portLine.match(/127\.0\.0\.1:(\d+)/)![1]),
    heap: async () => {
      proc.kill("SIGUSR2");
      const line = await nextLine((l) => l.startsWith('{"heap"'), 5000);
      if (line === undefined) throw new Error("server did not report its heap (SIGUSR2)");
      return (JSON.parse(line) as { heap: HeapReport }).heap;
    },
    kill: async (signal = "SIGKILL") => {
      proc.kill(signal);
      await proc.exited;
    },
  };
}

/** For server processes under test: print JS heap statistics as one JSON line on SIGUSR2. */
export function reportHeapOnSignal(): void {
  process.on("SIGUSR2", () => {
    Bun.gc(true);
    const { heapSize, heapCapacity, objectCount } = heapStats();
    console.log(JSON.stringify({ heap: { heapSize, heapCapacity, objectCount } }));
  });
}

/** utime + stime of a process, in microseconds. */
export async function cpuMicros(pid: number): Promise<number> {
  const { user, system } = await cpuSplit(pid);
  return user + system;
}

/** CPU time of `pid` so far in microseconds, in user space and in the kernel (system calls, loopback TCP). */
export async function cpuSplit(pid: number): Promise<{ user: number; system: number }> {
  const stat = await Bun.file(`/proc/${pid}/stat`).text();
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: (Number(fields[11]) * 1e6) / CLK_TCK, system: (Number(fields[12]) * 1e6) / CLK_TCK };
}

export async function rssBytes(pid: number): Promise<number> {
  const status = await Bun.file(`/proc/${pid}/status`).text();
  return Number(status.match(/VmRSS:\s+(\d+) kB/)![1]) * 1024;
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** One client frame, masked with a zero mask (legal, and lets us reuse the bytes for every send). */
export function clientFrame(text: string): Uint8Array {
  const payload = Buffer.from(text);
  const n = payload.length;
  const header = n < 126 ? [0x81, 0x80 | n] : [0x81, 0x80 | 126, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from(header), Buffer.alloc(4), payload]);
}

/** An empty masked pong (zero mask). */
const PONG = new Uint8Array([0x8a, 0x80, 0, 0, 0, 0]);

const HANDSHAKE = (port: number, path: string) =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;

/**
 * A WebSocket client over raw TCP for load: counts whole server frames (headers only, no JSON), and calls
 * `onFrames(n)` after each read so the caller can keep a window of requests in flight.
 */
export class LoadConn {
  frames = 0;
  /** Set when the server ended the connection: in a fan-out run that means lost messages. */
  closed = false;
  private upgraded = false;
  private head = "";
  /** Bytes still to skip of the current frame, and bytes of a split header. */
  private skip = 0;
  private partial: number[] = [];
  socket!: Socket<undefined>;
  ready!: Promise<void>;

  constructor(
    readonly port: number,
    readonly path: string,
    private readonly onFrames: (conn: LoadConn, n: number) => void = () => {},
  ) {}

  async open(): Promise<void> {
    let resolveReady!: () => void;
    this.ready = new Promise((r) => (resolveReady = r));
    this.socket = await Bun.connect({
      hostname: "127.0.0.1",
      port: this.port,
      socket: {
        open: (s) => void s.write(HANDSHAKE(this.port, this.path)),
        close: () => void (this.closed = true),
        data: (_s, chunk) => {
          let bytes: Uint8Array = chunk;
          if (!this.upgraded) {
            this.head += Buffer.from(chunk).toString("latin1");
            const end = this.head.indexOf("\r\n\r\n");
            if (end < 0) return;
            this.upgraded = true;
            bytes = Buffer.from(this.head.slice(end + 4), "latin1");
            resolveReady();
          }
          const n = this.count(bytes);
          if (n > 0) {
            this.frames += n;
            this.onFrames(this, n);
          }
        },
      },
    });
    await this.ready;
  }

  /** Answer server pings (idle connections must, or the read deadline closes them). */
  answerPings = false;
  pings = 0;
  /** Set to receive every data frame's payload (costs a copy per frame: use on a few sampling connections). */
  capture: ((payload: Uint8Array) => void) | undefined;
  private payload: Uint8Array | undefined;
  private filled = 0;

  private count(bytes: Uint8Array): number {
    let i = 0;
    let n = 0;
    const len = bytes.length;
    while (i < len) {
      if (this.skip > 0) {
        const take = Math.min(this.skip, len - i);
        if (this.payload !== undefined) {
          this.payload.set(bytes.subarray(i, i + take), this.filled);
          this.filled += take;
        }
        this.skip -= take;
        i += take;
        if (this.skip === 0 && this.payload !== undefined) {
          this.capture!(this.payload);
          this.payload = undefined;
        }
        continue;
      }
      this.partial.push(bytes[i++]!);
      const h = this.partial;
      if (h.length < 2) continue;
      const l = h[1]! & 0x7f;
      const need = l === 126 ? 4 : l === 127 ? 10 : 2;
      if (h.length < need) continue;
      const size = l === 126 ? (h[2]! << 8) | h[3]! : l === 127 ? Number(Buffer.from(h.slice(2, 10)).readBigUInt64BE()) : l;
      this.partial = [];
      this.skip = size;
      const opcode = h[0]! & 0x0f;
      const data = opcode < 8;
      if (data) n++; // data frames only, not pings
      else if (opcode === 9) {
        this.pings++;
        if (this.answerPings) this.socket.write(PONG); // server pings carry no payload
      }
      if (data && this.capture !== undefined) {
        if (size === 0) this.capture(new Uint8Array(0));
        else {
          this.payload = new Uint8Array(size);
          this.filled = 0;
        }
      }
    }
    return n;
  }

  /** Short writes would corrupt the stream; the windows used here stay far below socket buffers. */
  write(frame: Uint8Array): void {
    if (this.socket.write(frame) !== frame.length) throw new Error("short write: lower the window");
  }

  close(): void {
    this.socket.end();
  }
}

/** Opens `count` load connections to `path` (500 at a time), answering the server's pings. */
export async function connectAll(port: number, count: number, path = "/connect"): Promise<LoadConn[]> {
  const conns = Array.from({ length: count }, () => new LoadConn(port, path));
  for (let i = 0; i < conns.length; i += 500) await Promise.all(conns.slice(i, i + 500).map((c) => c.open()));
  for (const c of conns) c.answerPings = true;
  return conns;
}

/** Waits (at most 10 s) until the server at `port` answers /readyz with 200: with Redis, its broker is up. */
export async function waitReady(port: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if ((await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0)) === 200) return;
    await Bun.sleep(20);
  }
}

export interface BenchRedis {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** A redis-server of the bench's own on a free port, without persistence; resolves once it accepts a connection. */
export async function startRedis(): Promise<BenchRedis> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const proc = Bun.spawn(["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdout: "ignore" });
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const c = new RedisClient(url);
      await c.connect();
      c.close();
      break;
    } catch {
      await Bun.sleep(20);
    }
  }
  return { url, pid: proc.pid, stop: async () => (proc.kill("SIGKILL"), void (await proc.exited)) };
}

/** Commands Redis has run so far (`total_commands_processed`, the commands of scripts included); costs one INFO. */
export async function redisCommands(url: string): Promise<number> {
  const c = new RedisClient(url);
  await c.connect();
  const info = String(await c.send("INFO", ["stats"]));
  c.close();
  return Number(/total_commands_processed:(\d+)/.exec(info)![1]);
}
