// History in this process's memory, for the memory broker: one log per topic (a window over an array of
// entries, dropped from its front), and one queue of every entry in publish order across topics, so the
// byte bound drops the oldest entries of the whole process first.
//
// Memory arithmetic (HISTORY_MAX_BYTES counts it this way): an entry costs its frame (UTF-16 code units: one
// byte each for Latin-1 text, which JSC stores so) plus ENTRY_OVERHEAD_BYTES (the entry object, its slot in
// its topic's array and in the queue); a topic costs TOPIC_OVERHEAD_BYTES plus its name. The frame string is
// the very one that was published: storing it allocates no copy. `bun run bench:history -- --only=memory`
// measures the real figure against this estimate.
//
// A topic keeps its position (epoch and offset) while it has entries or local subscribers, and ttlMs after
// its last publish or its last subscriber leaving, whichever is later: a subscriber that drops and comes back
// a few seconds later still finds the position it left, even on a topic nobody published to. A topic
// forgotten after that starts a new epoch at its next publish (so a `since` from before cannot match).
// Positions of idle topics (no entries, no local subscriber) are kept apart, within an eighth of maxBytes,
// oldest dropped first: subscribe/unsubscribe churn over many topics must not push stored messages out.
import type { Clock } from "../clock.ts";
import { withOffset, type Position } from "../protocol.ts";
import { isComplete, newEpoch, type HistoryOptions, type HistoryQuery, type HistoryRead, type StoredMessage } from "./history.ts";

export const ENTRY_OVERHEAD_BYTES = 120;
export const TOPIC_OVERHEAD_BYTES = 200;

interface Entry extends StoredMessage {
  readonly log: TopicLog;
  readonly bytes: number;
  live: boolean;
}

interface TopicLog {
  readonly topic: string;
  readonly epoch: string;
  offset: number;
  /** Held entries are entries[head..], offsets consecutive. */
  entries: Entry[];
  head: number;
  lastPublishAt: number;
  /** The last publish, creation, or last local subscriber leaving: the position lives ttlMs after it. */
  lastTouchedAt: number;
  /** The topic's retention TTL (its definition's, or the store's), as of its last publish. */
  ttlMs: number;
}

export interface MemoryHistoryOptions extends HistoryOptions {
  maxBytes: number;
  clock: Clock;
  /** Whether the topic has local subscribers (their position must survive the topic's expiry). */
  held(topic: string): boolean;
}

export class MemoryHistory {
  private readonly logs = new Map<string, TopicLog>();
  /** Every held entry (and some already dropped ones, skipped and compacted away), oldest first. */
  private queue: Entry[] = [];
  private queueHead = 0;
  private liveEntries = 0;
  /** Entries and the topics that have entries or subscribers: what maxBytes bounds. */
  bytes = 0;
  /** Idle topics (no entries, no local subscriber), least recently touched first; their bytes apart. */
  private readonly idle = new Map<string, TopicLog>();
  private idleBytes = 0;
  /** Messages dropped by the byte bound (evicted) and by the TTL (expired). */
  readonly counters = { evicted: 0, expired: 0 };
  private readonly stopSweep: () => void;

  constructor(private readonly options: MemoryHistoryOptions) {
    // Expiry is also checked on every access, so the sweep only returns memory; once a second is plenty (no
    // topic's TTL is shorter: HISTORY_TTL_MS_MIN).
    this.stopSweep = options.clock.every(Math.min(options.ttlMs, 1000), () => this.sweep());
  }

  /**
   * Stores the message `head` + its offset; returns the offset and the frame to deliver. `retention`: the
   * topic's own (its definition's), else the store's.
   */
  append(topic: string, head: string, retention: HistoryOptions = this.options): StoredMessage {
    const now = this.options.clock.now();
    let log = this.logs.get(topic);
    if (log !== undefined) this.expireIfDue(log, now);
    // Expired and forgotten just now (no local subscriber): the topic starts a new epoch.
    if (log === undefined || this.logs.get(topic) !== log) log = this.create(topic, now);
    else if (this.idle.size !== 0) this.wake(log);
    const offset = ++log.offset;
    const frame = withOffset(head, offset);
    const entry: Entry = { offset, frame, log, bytes: frame.length + ENTRY_OVERHEAD_BYTES, live: true };
    log.entries.push(entry);
    log.lastPublishAt = now;
    log.lastTouchedAt = now;
    log.ttlMs = retention.ttlMs;
    this.queue.push(entry);
    this.liveEntries++;
    this.bytes += entry.bytes;
    if (log.entries.length - log.head > retention.size) this.dropOldest(log);
    if (this.bytes > this.options.maxBytes) this.evict();
    else this.compactQueue();
    return entry;
  }

  read(topic: string, query: HistoryQuery): HistoryRead {
    const now = this.options.clock.now();
    let log = this.logs.get(topic);
    if (log !== undefined) this.expireIfDue(log, now);
    if (log === undefined || this.logs.get(topic) !== log) {
      if (!query.create) return { epoch: newEpoch(), offset: 0, messages: [], complete: false };
      log = this.create(topic, now);
    } else if (query.create && this.idle.size !== 0) {
      this.wake(log); // subscribed again
    }
    const { since, limit } = query;
    const maxBytes = query.maxBytes ?? Infinity; // the caller could not send more at once
    const messages: StoredMessage[] = [];
    let bytes = 0;
    if (since !== undefined && since.epoch === log.epoch) {
      // The oldest missed ones first, up to the limit or the bytes.
      const first = log.head < log.entries.length ? log.entries[log.head]!.offset : log.offset + 1;
      for (let i = log.head + Math.max(0, since.offset + 1 - first); i < log.entries.length && messages.length < limit; i++) {
        const entry = log.entries[i]!;
        if ((bytes += entry.frame.length) > maxBytes) break;
        messages.push(entry);
      }
    } else {
      // The latest ones: walk back from the newest, then return them oldest first.
      for (let i = log.entries.length - 1; i >= log.head && messages.length < limit; i--) {
        const entry = log.entries[i]!;
        if ((bytes += entry.frame.length) > maxBytes) break;
        messages.push(entry);
      }
      messages.reverse();
    }
    return { epoch: log.epoch, offset: log.offset, messages, complete: isComplete(since, log.epoch, log.offset, messages) };
  }

  /** The last local subscriber of `topic` left: its position lives another ttlMs from now. */
  touch(topic: string): void {
    const log = this.logs.get(topic);
    if (log === undefined) return;
    log.lastTouchedAt = this.options.clock.now();
    if (log.head === log.entries.length) this.rest(log);
  }

  /** The topic's position now, if it has one. */
  position(topic: string): Position | undefined {
    const log = this.logs.get(topic);
    return log === undefined ? undefined : { epoch: log.epoch, offset: log.offset };
  }

  gauges(): Record<string, number> {
    return { bytes: this.bytes + this.idleBytes, topics: this.logs.size, messages: this.liveEntries };
  }

  close(): void {
    this.stopSweep();
    this.logs.clear();
    this.queue = [];
    this.queueHead = 0;
    this.bytes = 0;
    this.liveEntries = 0;
    this.idle.clear();
    this.idleBytes = 0;
  }

  /** Drops expired entries, and forgets idle topics with no entries and no local subscriber. */
  sweep(): void {
    const now = this.options.clock.now();
    for (const log of this.logs.values()) this.expireIfDue(log, now);
    this.compactQueue();
  }

  private create(topic: string, now: number): TopicLog {
    const log: TopicLog = { topic, epoch: newEpoch(), offset: 0, entries: [], head: 0, lastPublishAt: now, lastTouchedAt: now, ttlMs: this.options.ttlMs };
    this.logs.set(topic, log);
    this.bytes += TOPIC_OVERHEAD_BYTES + topic.length;
    return log;
  }

  private forget(log: TopicLog): void {
    while (log.head < log.entries.length) this.dropOldest(log);
    if (this.logs.get(log.topic) !== log) return;
    this.logs.delete(log.topic);
    if (this.idle.get(log.topic) === log) {
      this.idle.delete(log.topic);
      this.idleBytes -= TOPIC_OVERHEAD_BYTES + log.topic.length;
    } else {
      this.bytes -= TOPIC_OVERHEAD_BYTES + log.topic.length;
    }
  }

  /** An idle topic (no entries, no local subscriber) moves to the idle positions; the oldest past the cap go. */
  private rest(log: TopicLog): void {
    const size = TOPIC_OVERHEAD_BYTES + log.topic.length;
    if (this.idle.delete(log.topic)) this.idleBytes -= size;
    else this.bytes -= size;
    this.idle.set(log.topic, log);
    this.idleBytes += size;
    const cap = this.options.maxBytes / 8;
    for (const oldest of this.idle.values()) {
      if (this.idleBytes <= cap) break;
      this.forget(oldest);
    }
  }

  /** A topic in use again (a publish, a subscriber) leaves the idle positions. */
  private wake(log: TopicLog): void {
    if (this.idle.get(log.topic) !== log) return;
    const size = TOPIC_OVERHEAD_BYTES + log.topic.length;
    this.idle.delete(log.topic);
    this.idleBytes -= size;
    this.bytes += size;
  }

  /**
   * A topic silent for ttlMs loses its entries; its position goes too once it has been idle (no publish, no
   * local subscriber) that long.
   */
  private expireIfDue(log: TopicLog, now: number): void {
    if (now - log.lastPublishAt < log.ttlMs) return;
    if (log.head < log.entries.length) {
      this.counters.expired += log.entries.length - log.head;
      while (log.head < log.entries.length) this.dropOldest(log);
    }
    if (this.options.held(log.topic)) return;
    if (now - log.lastTouchedAt >= log.ttlMs) this.forget(log);
    else if (this.idle.get(log.topic) !== log) this.rest(log);
  }

  private dropOldest(log: TopicLog): void {
    const entry = log.entries[log.head]!;
    log.entries[log.head++] = undefined as never; // release the frame now, not at the next compaction
    entry.live = false;
    this.liveEntries--;
    this.bytes -= entry.bytes;
    if (log.head === log.entries.length) {
      log.entries = [];
      log.head = 0;
    } else if (log.head >= 64 && log.head * 2 >= log.entries.length) {
      log.entries = log.entries.slice(log.head);
      log.head = 0;
    }
  }

  /** Past maxBytes: the oldest entries of the whole process go first. */
  private evict(): void {
    while (this.bytes > this.options.maxBytes && this.queueHead < this.queue.length) {
      const entry = this.queue[this.queueHead++]!;
      if (!entry.live) continue;
      this.dropOldest(entry.log); // a topic's oldest entry is the first of its entries in the queue
      this.counters.evicted++;
      if (entry.log.entries.length === 0 && !this.options.held(entry.log.topic)) this.forget(entry.log);
    }
    this.compactQueue();
  }

  /** Keeps the queue within twice the live entries (dropped ones are skipped lazily): amortized O(1). */
  private compactQueue(): void {
    const length = this.queue.length - this.queueHead;
    if (length <= 1024 || length <= 2 * this.liveEntries) return;
    this.queue = this.queue.slice(this.queueHead).filter((entry) => entry.live);
    this.queueHead = 0;
  }
}
