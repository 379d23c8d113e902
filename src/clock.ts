// Time as a dependency. Deadlines (heartbeat), token expiry, rate limits and Redis health checks read time and
// schedule work only through a Clock, so tests can drive them with ManualClock in milliseconds instead of
// waiting for real seconds.

export interface Clock {
  /** Monotonic milliseconds (never goes back): deadlines, rates, ages. */
  now(): number;
  /** Wall-clock Unix milliseconds: only for absolute times that come from outside (a token's `exp`). */
  wall(): number;
  /** Calls `fn` every `ms` until the returned function is called. Never keeps the process alive by itself. */
  every(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wall: () => Date.now(),
  every(ms, fn) {
    const timer = setInterval(fn, ms);
    timer.unref?.();
    return () => clearInterval(timer);
  },
};

/** A clock that moves only when told to: `advance(ms)` runs every periodic callback that fell due, in order. */
export class ManualClock implements Clock {
  private ms = 0;
  private readonly wallStart: number;
  private readonly timers = new Set<{ every: number; next: number; fn: () => void }>();

  constructor(wallStart = Date.now()) {
    this.wallStart = wallStart;
  }

  now(): number {
    return this.ms;
  }
  wall(): number {
    return this.wallStart + this.ms;
  }
  every(ms: number, fn: () => void): () => void {
    const timer = { every: Math.max(1, ms), next: this.ms + Math.max(1, ms), fn };
    this.timers.add(timer);
    return () => this.timers.delete(timer);
  }

  /** Moves time forward by `ms`, firing due callbacks at their own times (earliest first). */
  advance(ms: number): void {
    const end = this.ms + ms;
    for (;;) {
      let due: { every: number; next: number; fn: () => void } | undefined;
      for (const timer of this.timers) if (timer.next <= end && (due === undefined || timer.next < due.next)) due = timer;
      if (due === undefined) break;
      this.ms = due.next;
      due.next += due.every;
      due.fn();
    }
    this.ms = end;
  }
}
