// The switch from history to live for one subscription, without a gap or a duplicate. While the history read
// is in flight (Redis), the hub hands every live message of the topic to the subscription's Recovery instead
// of the socket, which is not natively subscribed yet. When the read returns, `plan` merges the two in one
// synchronous step: replayed messages, then the buffered live ones the read did not already contain. The
// socket is subscribed natively right after, so every later message is live and nothing can overtake.
import type { Position } from "../protocol.ts";
import type { HistoryRead, StoredMessage } from "./history.ts";

/** Live messages of one topic that arrived for a subscription while its history was being read. */
export class Recovery {
  readonly frames: StoredMessage[] = [];
  bytes = 0;
  /** More than the budget arrived: the buffer was dropped, only `highest` (and its epoch) is known. */
  overflowed = false;
  /** The last live message's offset and epoch (0 / undefined: none arrived). */
  highest = 0;
  epoch: string | undefined;

  constructor(private readonly budgetBytes: number) {}

  add(frame: string, offset: number, epoch: string | undefined): void {
    this.highest = offset;
    if (epoch !== undefined) this.epoch = epoch;
    if (this.overflowed) return;
    this.bytes += frame.length;
    if (this.bytes > this.budgetBytes) {
      this.overflowed = true;
      this.frames.length = 0;
    } else {
      this.frames.push({ offset, frame });
    }
  }
}

export interface RecoveryPlan {
  /** The position the `subscribed` reply reports: the socket gets every later message live. */
  at: Position;
  /** The `recovered` field: undefined for a subscribe without `since`. */
  recovered: boolean | undefined;
  /** Frames to send after `subscribed`, in order, before the socket is subscribed natively. */
  frames: string[];
}

/**
 * Merges a history read with the live messages held meanwhile, up to `live position`: the offset this node's
 * native delivery of the topic has reached (`stream`, when the topic already has active subscribers here), or
 * else the newest offset known (the read's or the last held message's), which becomes the node's position. The
 * socket is subscribed natively right after, so it must have exactly everything up to that position: a
 * replayed message beyond it would arrive a second time live.
 *
 * Returns undefined when the subscriber is ahead of this node's stream (it resumes from an offset another node
 * already delivered and this one has not yet): the caller waits for the stream to catch up. Everything sent in
 * the step (replay and held messages) must fit `budgetBytes` (half the socket's backpressure limit: more would
 * get the socket dropped); a recovery that does not fit reports `recovered: false`.
 */
export function plan(
  read: HistoryRead,
  since: Position | undefined,
  live: Recovery | undefined,
  budgetBytes: number,
  stream?: Position,
): RecoveryPlan | undefined {
  const notRecovered = since === undefined ? undefined : false;
  let broken = live !== undefined && (live.overflowed || (live.epoch !== undefined && live.epoch !== read.epoch));
  if (stream !== undefined && stream.epoch !== read.epoch) broken = true;
  const target = stream?.offset ?? Math.max(read.offset, live?.highest ?? 0);
  if (broken) {
    // Start from the newest position known; the client learns (recovered: false) that it must reload.
    const epoch = stream?.epoch ?? live?.epoch ?? read.epoch;
    return { at: { epoch, offset: stream?.offset ?? Math.max(live?.highest ?? 0, epoch === read.epoch ? read.offset : 0) }, recovered: notRecovered, frames: [] };
  }
  const at = { epoch: read.epoch, offset: target };
  if (since === undefined || !read.complete) return { at, recovered: notRecovered, frames: [] };
  if (target < since.offset) return undefined; // this node has not delivered what the client already has
  const frames: string[] = [];
  let bytes = 0;
  let last = since.offset;
  const take = (message: StoredMessage): boolean => {
    if (message.offset <= last) return true; // already sent (the read and the held messages overlap)
    if (message.offset > target) return false;
    if (message.offset !== last + 1) return false; // a gap: checked below
    bytes += message.frame.length;
    if (bytes > budgetBytes) return false; // too much for one step: recovered false below, stop copying
    frames.push(message.frame);
    last = message.offset;
    return true;
  };
  for (const message of read.messages) if (!take(message)) break;
  if (live !== undefined) for (const message of live.frames) if (!take(message)) break;
  if (last !== target || bytes > budgetBytes) return { at, recovered: false, frames: [] };
  return { at, recovered: true, frames };
}
