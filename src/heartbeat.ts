// Read deadlines for every connection with ONE timer, cheap at 100k connections.
//
// Design: a coarse clock plus a hashed timing wheel with lazy rescheduling.
// - The clock advances in ticks of `tickMs` (a quarter of the shorter of interval and wait, 5 ms..1 s).
//   Recording activity on the hot path is one store: `conn.seen = heartbeat.tick`. No Date.now(), no timer
//   reset, no data-structure move per frame.
// - Each connection sits in exactly one bucket: the tick at which something may next be due for it
//   (a ping or the deadline). Buckets live in a Map keyed by absolute tick, so any delay fits.
// - When a bucket comes due, each connection in it is checked against what really happened since it was
//   filed: if frames arrived, it is simply refiled at `seen + interval`; if it has been silent for an
//   interval since the last frame or ping, it is pinged; past the deadline it is closed (4000).
//   So each connection costs O(1) work per ping interval, whatever its message rate, and a tick costs
//   only the connections due in it: the wheel never scans all connections.
// - Closed connections are not searched for and removed; they are skipped when their bucket comes due.
//
// Precision: `seen` is floored to a tick, so thresholds get one extra tick: a ping goes out after
// [interval, interval + 2 ticks) of silence, and a close after [deadline, deadline + 2 ticks) - never early,
// and always within "deadline plus one interval". If the event loop stalls, the clock catches up from
// performance.now() tick by tick, so late ticks are processed late but in order, never skipped.

/** What the heartbeat needs from a connection. */
export interface Beating {
  /** Tick of the last frame received from the peer (message, ping or pong). */
  seen: number;
  /** Tick of the last ping we sent; -1 for none. */
  pinged: number;
  closed: boolean;
}

export interface HeartbeatOptions<C extends Beating> {
  intervalMs: number;
  waitMs: number;
  ping(conn: C): void;
  timeout(conn: C): void;
  /** The time given to expireAt() has come (e.g. the token expired). */
  expire(conn: C): void;
  /** A ping or timeout callback threw: the wheel goes on with the other connections. */
  failed(conn: C, error: unknown): void;
}

export class Heartbeat<C extends Beating> {
  /** The coarse clock, in ticks since start. Read it on every inbound frame. */
  tick = 0;
  readonly tickMs: number;
  private readonly intervalTicks: number;
  private readonly deadlineTicks: number;
  private readonly buckets = new Map<number, C[]>();
  /** One-shot expiries (token `exp`) on the same clock: no timer per connection for them either. */
  private readonly expiries = new Map<number, C[]>();
  private readonly start = performance.now();
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly options: HeartbeatOptions<C>) {
    const { intervalMs, waitMs } = options;
    this.tickMs = Math.min(1000, Math.max(5, Math.floor(Math.min(intervalMs, waitMs) / 4)));
    this.intervalTicks = Math.ceil(intervalMs / this.tickMs) + 1;
    this.deadlineTicks = Math.ceil((intervalMs + waitMs) / this.tickMs) + 1;
    this.timer = setInterval(() => this.advance(), this.tickMs);
    this.timer.unref?.();
  }

  /** Starts watching a new connection: its deadline runs from now. */
  track(conn: C): void {
    conn.seen = this.tick;
    conn.pinged = -1;
    fileInto(this.buckets, conn, this.tick + this.intervalTicks);
  }

  /** Calls `expire(conn)` at wall-clock `atMs` (Unix ms), within one tick after it; never before. */
  expireAt(conn: C, atMs: number): void {
    const inMs = atMs - Date.now();
    fileInto(this.expiries, conn, this.tick + Math.max(1, Math.ceil(inMs / this.tickMs) + 1));
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.buckets.clear();
    this.expiries.clear();
  }

  private advance(): void {
    const target = Math.floor((performance.now() - this.start) / this.tickMs);
    while (this.tick < target) {
      this.tick++;
      this.runDue(this.expiries, (conn) => this.options.expire(conn));
      this.runDue(this.buckets, this.check);
    }
  }

  /** Takes this tick's bucket out of `map` and runs `action` on its open connections, one failure at a time. */
  private runDue(map: Map<number, C[]>, action: (conn: C) => void): void {
    const due = map.get(this.tick);
    if (due === undefined) return;
    map.delete(this.tick);
    for (const conn of due) {
      if (conn.closed) continue;
      try {
        action(conn);
      } catch (error) {
        this.options.failed(conn, error);
      }
    }
  }

  private readonly check = (conn: C): void => {
    const now = this.tick;
    const deadline = conn.seen + this.deadlineTicks;
    if (now >= deadline) {
      this.options.timeout(conn);
      return;
    }
    if (now >= Math.max(conn.seen, conn.pinged) + this.intervalTicks) {
      conn.pinged = now;
      this.options.ping(conn);
      if (conn.closed) return; // a failed ping may have closed it
    }
    fileInto(this.buckets, conn, Math.min(deadline, Math.max(conn.seen, conn.pinged) + this.intervalTicks));
  };
}

/** Files `conn` in the bucket of tick `at` (buckets are created on demand, removed when they come due). */
function fileInto<C>(map: Map<number, C[]>, conn: C, at: number): void {
  const bucket = map.get(at);
  if (bucket === undefined) map.set(at, [conn]);
  else bucket.push(conn);
}
