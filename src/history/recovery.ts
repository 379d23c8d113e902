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
  /** The position the `subscribed` reply reports: every later message reaches the socket. */
  at: Position;
  /** The `recovered` field: undefined for a subscribe without `since`. */
  recovered: boolean | undefined;
  /** Frames to send after `subscribed`, in order, before the socket is subscribed natively. */
  frames: string[];
}

/**
 * Merges a history read with the live messages buffered meanwhile. Everything sent in the step (replay and
 * buffer) must fit `budgetBytes` (half the socket's backpressure limit: more would get the socket dropped);
 * a recovery that does not fit reports `recovered: false` and starts from the newest position seen.
 */
export function plan(read: HistoryRead, since: Position | undefined, live: Recovery | undefined, budgetBytes: number): RecoveryPlan {
  const frames: string[] = [];
  let bytes = 0;
  let recovered = since === undefined ? undefined : read.complete;
  if (recovered) {
    for (const message of read.messages) {
      frames.push(message.frame);
      bytes += message.frame.length;
    }
  }
  let last = read.offset;
  let broken = live !== undefined && (live.overflowed || (live.epoch !== undefined && live.epoch !== read.epoch));
  if (live !== undefined && !broken) {
    for (const message of live.frames) {
      if (message.offset <= last) continue; // the read already had it
      if (message.offset !== last + 1) {
        broken = true; // a live message went missing on this node: no consecutive stream to offer
        break;
      }
      frames.push(message.frame);
      bytes += message.frame.length;
      last = message.offset;
    }
  }
  if (broken || bytes > budgetBytes) {
    // Start from the newest position known; the client learns (recovered: false) that it must reload.
    const epoch = live?.epoch ?? read.epoch;
    const offset = Math.max(live?.highest ?? 0, epoch === read.epoch ? read.offset : 0);
    return { at: { epoch, offset }, recovered: since === undefined ? undefined : false, frames: [] };
  }
  return { at: { epoch: read.epoch, offset: read.offset }, recovered, frames };
}
