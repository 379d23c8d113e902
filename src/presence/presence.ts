// Who is in a topic: one entry per active `/connect` subscription. The topic pipeline adds an entry when a
// subscription becomes active and removes it when it ends (unsubscribe, close, a stream break); the presence
// manager says whether each change was one (a new entry, an entry this call removed), so every join and leave
// is announced exactly once, whichever node or path made it.
//
// Contract:
// - `add(topic, entry)` returns true when the entry is new (announce a join), false when it was there already.
// - `remove(topic, connectionId)` returns the entry when this call removed it (announce a leave), else undefined.
// - `list(topic, max)` returns at most `max` entries (`truncated` when there were more); `stats(topic)` counts
//   entries and distinct users (token `sub`s; connections without one are not users).
// - Every method may answer synchronously (this process's memory) or with a promise (a shared store).
import type { Json } from "../protocol.ts";

/**
 * The internal topic a topic's join/leave go out on. `$` is outside the topic name rule, so no client topic can
 * be it; `presence: true` subscribers are natively subscribed to it beside the topic.
 */
export const presenceTopic = (topic: string): string => `$presence:${topic}`;

export interface PresenceEntry {
  connectionId: string;
  /** The token's `sub`; null in open mode. */
  user: string | null;
  /** What the client sent on subscribe (a small JSON object), if anything. */
  info?: { [key: string]: Json };
}

export interface PresenceList {
  clients: PresenceEntry[];
  truncated: boolean;
}

export interface PresenceStats {
  clients: number;
  users: number;
}

type Maybe<T> = T | Promise<T>;

export interface Presence {
  add(topic: string, entry: PresenceEntry): Maybe<boolean>;
  remove(topic: string, connectionId: string): Maybe<PresenceEntry | undefined>;
  /** At most `max` entries, and no more than `maxBytes` of their JSON (what the caller can send at once). */
  list(topic: string, max: number, maxBytes?: number): Maybe<PresenceList>;
  stats(topic: string): Maybe<PresenceStats>;
  /** Entries held (for /metrics). */
  gauges?(): Record<string, number>;
}
