// The connection registry: every piece of per-connection bookkeeping in one place. Open connections, the
// slots reserved for upgrades still being admitted, per-address counts, rate-limit buckets, what each
// connection holds, and (with tokens) the connections of each user. Caps are checked and counted here,
// against the same numbers:
// an upgrade reserves its slot BEFORE the asynchronous token check, and the slot is released on refusal,
// converted on open, or expires if the upgrade never completes. So MAX_CONNECTIONS and
// MAX_CONNECTIONS_PER_IP hold under any number of simultaneous upgrades.
import type { ServerWebSocket } from "bun";
import type { Identity } from "./auth/tokens.ts";
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import type { Beating, WheelSlot } from "./heartbeat.ts";
import type { HistoryRead } from "./history/history.ts";
import type { Recovery } from "./history/recovery.ts";
import type { FrameId, Json, Position } from "./protocol.ts";
import { RateLimiter, type Bucket } from "./rate-limit.ts";
import type { TopicRule } from "./topics/rules.ts";

/** A subscription waiting for the broker's confirmation: the ids of the subscribe frames to answer then. */
export interface PendingSubscription {
  replies: (FrameId | undefined)[];
  /** The topic's rule, looked up once when the subscribe came (history and presence follow it). */
  rule: TopicRule;
  /** The position the client asked to resume from (subscribe with `since`). */
  since?: Position;
  /** Live messages buffered while the topic's history is read (async stores only). */
  recovery?: Recovery;
  /** The history read, kept while the recovery waits for this node's stream to catch up with `since`. */
  read?: HistoryRead;
  /** Join/leave of the topic's other members wanted (`presence: true`). */
  presence?: boolean;
  /** The presence entry's `info` (checked for size already). */
  info?: { [key: string]: Json };
}

export class Conn implements Beating {
  seen = 0;
  pinged = -1;
  closed = false;
  wheelBucket: Beating[] | undefined = undefined;
  wheelIndex = -1;
  expiry: WheelSlot | undefined = undefined;
  /**
   * Topics held: `null` once active (natively subscribed, `subscribed` sent), or the pending subscription.
   * Created on the first subscribe, so idle connections pay nothing. Bun keeps its own set, but it is already
   * empty when the close handler runs, and the broker must hear which topics lost a subscriber.
   */
  topics: Map<string, PendingSubscription | null> | undefined = undefined;
  /**
   * What only some deployments set (a token, connection caps, a rate limit), in one object allocated on first
   * use: an idle connection with none of them pays one field, not three (the idle-memory floor is 2 KiB).
   */
  private extras: ConnExtras | undefined = undefined;
  constructor(
    readonly ws: ServerWebSocket<Conn>,
    readonly seq: number,
    readonly echo: boolean,
  ) {}

  /** Verified token (auth mode only): topic permissions for subscribe and publish. */
  get identity(): Identity | undefined {
    return this.extras?.identity;
  }
  set identity(identity: Identity | undefined) {
    (this.extras ??= {}).identity = identity;
  }
  /** The reserved slot this connection occupies (counts toward the caps until close). */
  get slot(): Slot | undefined {
    return this.extras?.slot;
  }
  set slot(slot: Slot | undefined) {
    (this.extras ??= {}).slot = slot;
  }
  /** Rate-limit bucket of this connection's identity (RATE_LIMIT_MSGS_PER_S > 0 only). */
  get bucket(): Bucket | undefined {
    return this.extras?.bucket;
  }
  set bucket(bucket: Bucket | undefined) {
    (this.extras ??= {}).bucket = bucket;
  }
  /** The client asked for batched delivery (`?batch=1`): its messages come through the hub's batch topics. */
  get batch(): boolean {
    return this.extras?.batch === true;
  }
  set batch(batch: boolean) {
    (this.extras ??= {}).batch = batch;
  }
}

interface ConnExtras {
  identity?: Identity;
  slot?: Slot;
  bucket?: Bucket;
  batch?: boolean;
}

/** A place under the caps, taken at admission. */
export interface Slot {
  /** Counted per address only when MAX_CONNECTIONS_PER_IP is set. */
  readonly ip: string | undefined;
  /** Until it is opened: when an upgrade that never completed gives it back. -1 once open. */
  expiresAt: number;
  released: boolean;
}

export type CapRefusal = "max_connections" | "max_connections_per_ip";

/**
 * How long an admitted upgrade may take to open before its slot is given back. Bun opens the socket in the
 * same event-loop turn as the upgrade; 5 s only covers a stalled loop. Admission checks the handshake headers
 * first, so a request that cannot upgrade never holds a slot this long.
 */
const RESERVATION_MS = 5000;

const NONE: ReadonlySet<Conn> = new Set();

export class ConnectionRegistry {
  readonly open = new Set<Conn>();
  /**
   * Open connections by their token's `sub` (tokens only: open mode pays nothing), so that the API's commands
   * by user (disconnect, unsubscribe) find a user's connections without walking every connection.
   */
  private readonly byUser = new Map<string, Set<Conn>>();
  /** Connections per client address, open or being admitted (only with MAX_CONNECTIONS_PER_IP). */
  readonly perIp = new Map<string, number>();
  readonly rate: RateLimiter;
  /** Admitted upgrades not yet open, oldest first (a Set keeps insertion order, so expiry is from the front). */
  private readonly reserved = new Set<Slot>();
  private readonly maxTotal: number;
  private readonly maxPerIp: number;

  constructor(
    config: Pick<Config, "MAX_CONNECTIONS" | "MAX_CONNECTIONS_PER_IP" | "RATE_LIMIT_MSGS_PER_S" | "RATE_LIMIT_BURST">,
    private readonly clock: Clock,
  ) {
    this.maxTotal = config.MAX_CONNECTIONS;
    this.maxPerIp = config.MAX_CONNECTIONS_PER_IP;
    this.rate = new RateLimiter(config.RATE_LIMIT_MSGS_PER_S, config.RATE_LIMIT_BURST, clock);
  }

  /** Open connections plus admitted upgrades that have not opened yet. */
  get counted(): number {
    return this.open.size + this.reserved.size;
  }

  /** Takes a place under the caps, or says which cap refuses it; `undefined` when no cap is set (nothing to count). */
  reserve(ip: string | undefined): Slot | CapRefusal | undefined {
    if (this.maxTotal === 0 && this.maxPerIp === 0) return undefined;
    this.expireReservations();
    if (this.maxTotal > 0 && this.counted >= this.maxTotal) return "max_connections";
    const counted = this.maxPerIp > 0 ? ip : undefined;
    if (counted !== undefined && (this.perIp.get(counted) ?? 0) >= this.maxPerIp) return "max_connections_per_ip";
    const slot: Slot = { ip: counted, expiresAt: this.clock.now() + RESERVATION_MS, released: false };
    this.reserved.add(slot);
    if (counted !== undefined) this.perIp.set(counted, (this.perIp.get(counted) ?? 0) + 1);
    return slot;
  }

  /** Gives a slot back (refused after reserving, or closed). Idempotent. */
  release(slot: Slot): void {
    if (slot.released) return;
    slot.released = true;
    this.reserved.delete(slot);
    if (slot.ip === undefined) return;
    const left = (this.perIp.get(slot.ip) ?? 1) - 1;
    if (left > 0) this.perIp.set(slot.ip, left);
    else this.perIp.delete(slot.ip);
  }

  /**
   * Registers an opened connection in its reserved slot. False when the slot is gone (the reservation expired
   * and its place may have been given to someone else): the caller closes the socket.
   */
  add(conn: Conn, slot: Slot | undefined): boolean {
    if (slot !== undefined) {
      if (slot.released) return false;
      this.reserved.delete(slot);
      slot.expiresAt = -1;
      conn.slot = slot;
    }
    this.open.add(conn);
    return true;
  }

  /** Gives an opened connection its verified token, and indexes it under the token's `sub`. */
  identify(conn: Conn, identity: Identity): void {
    conn.identity = identity;
    const same = this.byUser.get(identity.sub);
    if (same === undefined) this.byUser.set(identity.sub, new Set([conn]));
    else same.add(conn);
  }

  /** The open connections of a user (token `sub`); empty in open mode. */
  ofUser(user: string): ReadonlySet<Conn> {
    return this.byUser.get(user) ?? NONE;
  }

  /** Forgets a closed connection: its slot, its rate-limit hold, its place in the user index. */
  remove(conn: Conn): void {
    this.open.delete(conn);
    const user = conn.identity?.sub;
    if (user !== undefined) {
      const same = this.byUser.get(user);
      if (same?.delete(conn) && same.size === 0) this.byUser.delete(user);
    }
    if (conn.slot !== undefined) this.release(conn.slot);
    if (conn.bucket !== undefined) this.rate.release(conn.bucket);
  }

  private expireReservations(): void {
    const now = this.clock.now();
    for (const slot of this.reserved) {
      if (slot.expiresAt > now) break; // oldest first: the rest are younger
      this.release(slot);
    }
  }
}
