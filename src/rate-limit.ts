// Inbound rate limits on /connect, per identity (the token's `sub`, or the client address in open mode): a
// token bucket shared by all connections of that identity, so reconnecting does not refill it.
//
// A frame over the rate is refused (the caller answers `rate_limited`). Closing (1008) is for sustained abuse
// only: refusals add up as strikes that drain at half the allowed rate, and the connection is closed once
// strikes pass RATE_LIMIT_BURST plus STRIKE_SECONDS worth of the rate. At k times the rate (k > 1.5) that is
// about b/((k-1)r) + (b + 2.5r)/((k-1.5)r) seconds (r = 100, b = 100: 8 s at 2x, 2 s at 4x); at 1.5x or
// less, never; one burst only costs errors unless it is larger than 2b + 2.5r.
import type { Clock } from "./clock.ts";

/** Seconds of the allowed rate that refusals may pile up to, beyond the burst, before a close. */
const STRIKE_SECONDS = 2.5;

export class Bucket {
  tokens: number;
  refilledAt: number;
  /** Connections currently holding this bucket. */
  holders = 0;
  /** Refusals not yet forgiven (they drain at half the rate). */
  strikes = 0;
  constructor(
    readonly key: string,
    burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.refilledAt = now;
  }
}

export type RateVerdict = "ok" | "refused" | "close";

export class RateLimiter {
  private readonly perMs: number;
  private readonly maxStrikes: number;
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    readonly perSecond: number,
    private readonly burst: number,
    private readonly clock: Clock,
  ) {
    this.perMs = perSecond / 1000;
    this.maxStrikes = burst + perSecond * STRIKE_SECONDS;
  }

  get enabled(): boolean {
    return this.perSecond > 0;
  }

  /** The identity's bucket (shared, created full); pair with release() when the connection closes. */
  acquire(key: string): Bucket {
    let bucket = this.buckets.get(key);
    if (bucket === undefined) this.buckets.set(key, (bucket = new Bucket(key, this.burst, this.clock.now())));
    bucket.holders++;
    return bucket;
  }

  release(bucket: Bucket): void {
    bucket.holders--;
  }

  /** Identities tracked (held by a connection, or idle and not yet refilled): bounded by `sweep`. */
  get size(): number {
    return this.buckets.size;
  }

  /** Drops idle buckets that would be full and forgiven by now (slow timer): a new one would be identical. */
  sweep(): void {
    const now = this.clock.now();
    for (const [key, bucket] of this.buckets) {
      const elapsed = now - bucket.refilledAt;
      const full = bucket.tokens + elapsed * this.perMs >= this.burst && bucket.strikes - (elapsed * this.perMs) / 2 <= 0;
      if (bucket.holders === 0 && full) this.buckets.delete(key);
    }
  }

  take(bucket: Bucket): RateVerdict {
    const now = this.clock.now();
    const elapsed = now - bucket.refilledAt;
    bucket.refilledAt = now;
    bucket.tokens = Math.min(this.burst, bucket.tokens + elapsed * this.perMs);
    bucket.strikes = Math.max(0, bucket.strikes - (elapsed * this.perMs) / 2);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return "ok";
    }
    return ++bucket.strikes > this.maxStrikes ? "close" : "refused";
  }
}
