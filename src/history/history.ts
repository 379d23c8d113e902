// What a history store promises, whichever holds it (this process's memory, or Redis for a cluster). The
// broker composes one (src/broker/memory.ts, src/broker/redis.ts); the topic pipeline reads it through the
// broker for recoveries and history requests.
//
// Contract:
// - Offsets: per topic, every stored message gets the next integer (the first of an epoch is 1), assigned in
//   one atomic step with storing it, so all subscribers on every node see the same offsets in the same order.
// - Epochs: a topic's offsets belong to its epoch, a short random string. A topic whose position was lost
//   (process restart, Redis emptied, expired) starts a new epoch at offset 1; a `since` naming an old epoch
//   can therefore never be mistaken for a position in the new one.
// - Retention: the last `size` messages of a topic, for `ttlMs` after its last publish, within the store's
//   byte bound (memory). A read says whether everything after a given position is still there (`complete`);
//   it never pretends a gap is not one.
import type { Position } from "../protocol.ts";

/** A stored message: its offset and the message frame exactly as subscribers received it (offset included). */
export interface StoredMessage {
  readonly offset: number;
  readonly frame: string;
}

export interface HistoryRead extends Position {
  /**
   * Oldest first: the messages after `since` when it names the current epoch (at most `limit`, from the
   * oldest missed one), otherwise the latest `limit`.
   */
  messages: StoredMessage[];
  /** `since` names the current epoch and every message after it is in `messages`. */
  complete: boolean;
}

export interface HistoryQuery {
  since?: Position;
  /** At most this many messages; 0 reads the position only. */
  limit: number;
  /** Messages stop before their frames pass this many characters (what the caller can send at once). */
  maxBytes?: number;
  /**
   * Give the topic a position (an epoch) if it has none yet: subscribes do, so that a later `since` from the
   * reply names the epoch the first publish will use. History requests do not (they must not create state).
   */
  create: boolean;
}

/** The retention a store applies to every topic (per-topic options come with typed topics). */
export interface HistoryOptions {
  /** Messages kept per topic (HISTORY_SIZE, > 0). */
  size: number;
  /** Kept this long after the topic's last publish. */
  ttlMs: number;
}

/** A fresh epoch: 8 base-36 characters (~41 bits), enough that a lost topic never reuses one. */
export function newEpoch(): string {
  const [a, b] = crypto.getRandomValues(new Uint32Array(2));
  return (a!.toString(36) + b!.toString(36)).padStart(8, "0").slice(-8);
}

/** Whether a read of `since` in `epoch` up to `offset` found every missed message in `messages`. */
export function isComplete(since: Position | undefined, epoch: string, offset: number, messages: readonly StoredMessage[]): boolean {
  if (since === undefined || since.epoch !== epoch || since.offset > offset) return false;
  const missed = offset - since.offset;
  return missed === 0 || (messages.length === missed && messages[0]!.offset === since.offset + 1);
}

/**
 * The store could not take or read a message. `unconfirmed` false: it certainly did not (Redis down, refused,
 * or over the pending bound): the caller answers `unavailable`, and a retry is safe. `unconfirmed` true: the
 * command was sent and no answer came (the connection dropped or Redis hung): it may have been stored and
 * delivered; the caller answers `unconfirmed`.
 */
export class HistoryUnavailable extends Error {
  override name = "HistoryUnavailable";
  constructor(
    message: string,
    readonly unconfirmed = false,
  ) {
    super(message);
  }
}
