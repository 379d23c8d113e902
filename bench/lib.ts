// Shared pieces of the benchmarks: spawning a pinned server process, reading its CPU time and RSS from /proc,
// and a raw-TCP WebSocket load client that pipelines pre-masked frames and counts replies without parsing JSON.
import type { Socket } from "bun";

export const CLK_TCK = 100; // Linux USER_HZ; /proc/<pid>/stat times are in these ticks

export interface ServerProcess {
  pid: number;
  port: number;
  /** SIGKILL by default; SIGTERM lets a supervisor drain its workers first. */
  kill(signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
}

/** Starts `cmd` pinned to `cpu`; it must print a line containing `127.0.0.1:<port>`. */
export async function spawnServer(cmd: string[], env: Record<string, string>, cpu: number | null): Promise<ServerProcess> {
  const argv = cpu === null ? cmd : ["taskset", "-c", String(cpu), ...cmd];
  const proc = Bun.spawn(argv, { env: { ...process.env, ...env }, stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  let out = "";
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
    const match = out.match(/127\.0\.0\.1:(\d+)/);
    if (match) {
      void (async () => {
        while (!(await reader.read()).done);
      })();
      return {
        pid: proc.pid,
        port: Number(match[1]),
        kill: async (signal = "SIGKILL") => {
          proc.kill(signal);
          await proc.exited;
        },
      };
    }
  }
  proc.kill("SIGKILL");
  throw new Error(`server did not print its port: ${out}`);
}

/** utime + stime of a process, in microseconds. */
export async function cpuMicros(pid: number): Promise<number> {
  const stat = await Bun.file(`/proc/${pid}/stat`).text();
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK;
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

  private count(bytes: Uint8Array): number {
    let i = 0;
    let n = 0;
    const len = bytes.length;
    while (i < len) {
      if (this.skip > 0) {
        const take = Math.min(this.skip, len - i);
        this.skip -= take;
        i += take;
        continue;
      }
      this.partial.push(bytes[i++]!);
      const h = this.partial;
      if (h.length < 2) continue;
      const l = h[1]! & 0x7f;
      const need = l === 126 ? 4 : l === 127 ? 10 : 2;
      if (h.length < need) continue;
      const payload = l === 126 ? (h[2]! << 8) | h[3]! : l === 127 ? Number(Buffer.from(h.slice(2, 10)).readBigUInt64BE()) : l;
      this.partial = [];
      this.skip = payload;
      if ((h[0]! & 0x0f) < 8) n++; // data frames only, not pings
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
