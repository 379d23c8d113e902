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
// - `untrack` removes a closed connection from its bucket at once (swap with the bucket's last entry, O(1)):
//   a closed connection must not stay reachable until its deadline or its token's `exp`, which may be far.
//
// Precision: `seen` is floored to a tick, so thresholds get one extra tick: a ping goes out after
// [interval, interval + 2 ticks) of silence, and a close after [deadline, deadline + 2 ticks) - never early,
// and always within "deadline plus one interval". If the event loop stalls, the clock catches up from the
// Clock tick by tick, so late ticks are processed late but in order, never skipped.
import { systemClock, type Clock } from "./clock.ts";

/** Where a wheel holds a connection: its bucket and its index there (so removal is O(1)). */
export interface WheelSlot {
  wheelBucket: Beating[] | undefined;
  wheelIndex: number;
}

/**
 * What the heartbeat needs from a connection. The connection is itself its slot in the deadline wheel (two
 * fields, no object of their own: every idle connection pays for them); the wheel fields are the heartbeat's
 * own bookkeeping.
 */
export interface Beating extends WheelSlot {
  /** Tick of the last frame received from the peer (message, ping or pong). */
  seen: number;
  /** Tick of the last ping we sent; -1 for none. */
  pinged: number;
  closed: boolean;
  /** Expiry wheel position, only for connections with an expiry (most have none: no allocation). */
  expiry: WheelSlot | undefined;
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
  clock?: Clock;
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
  private readonly clock: Clock;
  private readonly start: number;
  private cancel: (() => void) | undefined;

  constructor(private readonly options: HeartbeatOptions<C>) {
    const { intervalMs, waitMs } = options;
    this.clock = options.clock ?? systemClock;
    this.start = this.clock.now();
    this.tickMs = Math.min(1000, Math.max(5, Math.floor(Math.min(intervalMs, waitMs) / 4)));
    this.intervalTicks = Math.ceil(intervalMs / this.tickMs) + 1;
    this.deadlineTicks = Math.ceil((intervalMs + waitMs) / this.tickMs) + 1;
    this.cancel = this.clock.every(this.tickMs, () => this.advance());
  }

  /** Starts watching a new connection: its deadline runs from now. */
  track(conn: C): void {
    conn.seen = this.tick;
    conn.pinged = -1;
    fileInto(this.buckets, conn, conn, this.tick + this.intervalTicks);
  }

  /** Calls `expire(conn)` at wall-clock `atMs` (Unix ms), within one tick after it; never before. */
  expireAt(conn: C, atMs: number): void {
    const inMs = atMs - this.clock.wall();
    conn.expiry ??= { wheelBucket: undefined, wheelIndex: -1 };
    unfile(conn.expiry);
    fileInto(this.expiries, conn, conn.expiry, this.tick + Math.max(1, Math.ceil(inMs / this.tickMs) + 1));
  }

  /** Forgets a connection at once (on close): nothing of the wheel refers to it afterwards. */
  untrack(conn: C): void {
    unfile(conn);
    if (conn.expiry !== undefined) unfile(conn.expiry);
  }

  /** Connections the wheels hold (deadlines, expiries): for tests and leak checks. */
  held(): { deadlines: number; expiries: number } {
    let deadlines = 0;
    let expiries = 0;
    for (const bucket of this.buckets.values()) deadlines += bucket.length;
    for (const bucket of this.expiries.values()) expiries += bucket.length;
    return { deadlines, expiries };
  }

  stop(): void {
    this.cancel?.();
    this.cancel = undefined;
    this.buckets.clear();
    this.expiries.clear();
  }

  private advance(): void {
    const target = Math.floor((this.clock.now() - this.start) / this.tickMs);
    while (this.tick < target) {
      this.tick++;
      this.runDue(this.expiries, (conn) => conn.expiry!, (conn) => this.options.expire(conn));
      this.runDue(this.buckets, (conn) => conn, this.check);
    }
  }

  /** Takes this tick's bucket out of `map` and runs `action` on each connection, one failure at a time. */
  private runDue(map: Map<number, C[]>, slotOf: (conn: C) => WheelSlot, action: (conn: C) => void): void {
    const due = map.get(this.tick);
    if (due === undefined) return;
    map.delete(this.tick);
    for (const conn of due) {
      const slot = slotOf(conn);
      slot.wheelBucket = undefined;
      slot.wheelIndex = -1;
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
    fileInto(this.buckets, conn, conn, Math.min(deadline, Math.max(conn.seen, conn.pinged) + this.intervalTicks));
  };
}

/** Files `conn` in the bucket of tick `at` (buckets are created on demand, removed when they come due). */
function fileInto<C extends Beating>(map: Map<number, C[]>, conn: C, slot: WheelSlot, at: number): void {
  let bucket = map.get(at);
  if (bucket === undefined) map.set(at, (bucket = []));
  slot.wheelBucket = bucket;
  slot.wheelIndex = bucket.push(conn) - 1;
}

/** Removes the entry at `slot` by moving the bucket's last entry into its place. */
function unfile(slot: WheelSlot): void {
  const bucket = slot.wheelBucket;
  if (bucket === undefined) return;
  const last = bucket.pop()!;
  if (slot.wheelIndex < bucket.length) {
    bucket[slot.wheelIndex] = last;
    // The moved connection's slot in this same wheel: the bucket identifies which of its two slots it is.
    const moved = last.wheelBucket === bucket ? last : last.expiry!;
    moved.wheelIndex = slot.wheelIndex;
  }
  slot.wheelBucket = undefined;
  slot.wheelIndex = -1;
}
