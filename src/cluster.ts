// The cluster view (GET /api/nodes, GET /api/topics): which nodes are up and what each is doing, and this node's
// topics with their local and cluster-wide subscriber counts.
//
// Contract:
// - `start(address)` begins announcing (at once, then every `periodMs`); `close()` stops and removes this node's
//   record, resolving once Redis answered or could not be reached (never rejects).
// - `self()` is this node's record from its live figures: connections, topics and uptime as they are now, and
//   message rates over the last completed period (0 before the first one ends).
// - `nodes()` lists every node, this node first (always, from `self()`), then the others as they last announced,
//   by node id. A node that stops announcing (killed, hung, cut off from Redis) is gone from every list within
//   `NODE_TTL_PERIODS` periods of its last announcement; one that shuts down removes itself at once. Refused
//   (`unavailable`) while Redis cannot be read: a list of this node alone would look like the others had died.
// - `topics(prefix)` lists this node's topics with local interest, most local subscriptions first, at most
//   `MAX_LISTED_TOPICS` (`truncated` past it), each with its cluster-wide count from the presence store (one
//   presence read per listed topic). Refused (`unavailable`) when the presence store cannot answer.
// - Memory broker: this node alone; the rates are sampled on the same period, nothing is written anywhere.
//
// Redis layout: `sb:node:<id>` holds a node's record (JSON) with `PX` = NODE_TTL_PERIODS periods, rewritten every
// period; the set `sb:nodes` indexes the ids. A set rather than SCAN over `sb:node:*`: SCAN walks the whole
// keyspace (every topic's history and presence keys), so its round trips grow with topics, not nodes. One script
// writes a record and one reads them all (one round trip each); both drop from the set the ids whose record has
// expired, so the set stays near the number of live nodes even when nobody reads it, and it expires with the
// last node announcing. The scripts reach keys they compute (from the set), so this view needs a single Redis
// (or one primary), not Redis Cluster.
import { evalOrLoad, sha1, type RedisSend } from "./broker/lua.ts";
import type { Clock } from "./clock.ts";
import type { Gateway } from "./gateway.ts";
import { NodeRecord } from "./protocol.ts";
import type { Refusal } from "./topics/pipeline.ts";
import pkg from "../package.json" with { type: "json" };

/**
 * A record lives this many announcement periods: a node that misses two announcements in a row (a GC pause, a
 * Redis reconnect) is still listed, and one that died is gone within three periods (6 s at the default).
 */
export const NODE_TTL_PERIODS = 3;
/**
 * How often a node announces itself (NODE_ANNOUNCE_MS when set): one small script per node every 2 s keeps a
 * dashboard's view fresh (rates over the last 2 s, a dead node gone within 6 s) at a cost Redis does not notice.
 */
export const NODE_ANNOUNCE_MS = 2000;
/**
 * Most topics one GET /api/topics lists. Each listed topic costs a presence read (a script with Redis): 1,000 of
 * them, pipelined on one connection, take Redis a few ms, and the answer stays under ~100 KB of JSON.
 */
export const MAX_LISTED_TOPICS = 1000;

const NODE_KEY_PREFIX = "sb:node:";
const NODE_INDEX = "sb:nodes";

/** KEYS: the index; ARGV[1]: the record key prefix. Drops expired ids from the index; returns the live records. */
const LIVE = `
local function live(index, prefix)
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', index)) do
    local record = redis.call('GET', prefix .. id)
    if record then out[#out + 1] = record else redis.call('SREM', index, id) end
  end
  return out
end`;

/** ARGV: prefix, id, record JSON, ttl ms. Writes the record, indexes it, prunes the index; returns nothing. */
const ANNOUNCE_SCRIPT = `${LIVE}
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
live(KEYS[1], ARGV[1])
return 1`;

/** ARGV: prefix. Every live record (and the index pruned). */
const READ_SCRIPT = `${LIVE}
return live(KEYS[1], ARGV[1])`;

const SCRIPTS = { announce: { text: ANNOUNCE_SCRIPT, sha: sha1(ANNOUNCE_SCRIPT) }, read: { text: READ_SCRIPT, sha: sha1(READ_SCRIPT) } };

/** A node as GET /api/nodes shows it. */
export type NodeView = NodeRecord & { self: boolean };

/** A topic as GET /api/topics shows it: subscriptions on this node (pending ones included) and cluster-wide. */
export interface TopicView {
  topic: string;
  local: number;
  /**
   * Its presence entries on every node; null where its definition turns presence off (nothing is counted), or
   * where its presence store did not answer (the list's `unavailable` counts those).
   */
  cluster: number | null;
}

export interface ClusterViewOptions {
  gateway: Pick<Gateway, "connections" | "hub" | "metrics" | "topics">;
  clock: Clock;
  /** Announcement (and rate sampling) period. */
  periodMs: number;
  /** With Redis: this node's id (the broker's) and one command on the node's Redis connection. */
  redis?: { nodeId: string; send: RedisSend };
}

const UNREACHABLE = (error: unknown): Refusal => ({
  code: "unavailable",
  message: `cluster view unavailable (${error instanceof Error ? error.message : String(error)}): retry later`,
});
const round2 = (n: number): number => Math.round(n * 100) / 100;

export class ClusterView {
  readonly nodeId: string;
  readonly version: string = pkg.version;
  private readonly startedAt: number;
  private address = "";
  private stopTimer: (() => void) | undefined;
  private closed = false;
  /** The announcement in flight: at most one (a slow Redis is not sent a queue of them). */
  private announcing: Promise<unknown> | undefined;
  /** Counters at the start of the current period, and the rates of the last completed one. */
  private mark = { at: 0, in: 0, out: 0 };
  private rates = { in: 0, out: 0 };

  constructor(private readonly options: ClusterViewOptions) {
    this.nodeId = options.redis?.nodeId ?? crypto.randomUUID().slice(0, 8);
    this.startedAt = options.clock.now();
    this.mark = { at: this.startedAt, ...this.totals() };
  }

  /** Begins announcing this node as `address` (its URL): at once, then every period. */
  start(address: string): void {
    this.address = address;
    this.announce();
    this.stopTimer = this.options.clock.every(this.options.periodMs, () => {
      this.sample();
      this.announce();
    });
  }

  self(): NodeRecord {
    const { gateway, clock } = this.options;
    return {
      nodeId: this.nodeId,
      address: this.address,
      version: this.version,
      uptimeMs: Math.round(clock.now() - this.startedAt),
      connections: gateway.connections.size,
      topics: gateway.hub.interests.size,
      messagesInPerSec: this.rates.in,
      messagesOutPerSec: this.rates.out,
    };
  }

  async nodes(): Promise<NodeView[] | Refusal> {
    const self = { ...this.self(), self: true };
    const redis = this.options.redis;
    if (redis === undefined) return [self];
    let records: string[];
    try {
      records = (await this.run("read", [])) as string[];
    } catch (error) {
      return UNREACHABLE(error);
    }
    const others: NodeView[] = [];
    for (const json of records) {
      let parsed: ReturnType<typeof NodeRecord.safeParse> | undefined;
      try {
        parsed = NodeRecord.safeParse(JSON.parse(json));
      } catch {
        // not JSON: not a record of ours, skipped like a malformed one
      }
      if (parsed?.success && parsed.data.nodeId !== this.nodeId) others.push({ ...parsed.data, self: false });
    }
    others.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    return [self, ...others];
  }

  /**
   * This node's topics with their counts. Topics whose count could not be read (their Redis instance is down,
   * when sharded) are listed with `cluster: null` and counted in `unavailable`; refused only when no listed
   * topic's count could be read (the one Redis down) or for any other refusal.
   */
  async topics(prefix = ""): Promise<{ topics: TopicView[]; truncated: boolean; unavailable: number } | Refusal> {
    const listed: [string, number][] = [];
    for (const entry of this.options.gateway.hub.interests) if (entry[0].startsWith(prefix)) listed.push(entry);
    listed.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const truncated = listed.length > MAX_LISTED_TOPICS;
    if (truncated) listed.length = MAX_LISTED_TOPICS;
    // Every read is started before any is awaited: with Redis they share the round trips.
    const stats = await Promise.all(listed.map(([topic]) => this.options.gateway.topics.readPresence(topic, true)));
    const topics: TopicView[] = [];
    let unavailable = 0;
    let refusal: Refusal | undefined;
    for (let i = 0; i < listed.length; i++) {
      const read = stats[i]!;
      if ("code" in read && read.code === "unavailable") {
        unavailable++;
        refusal = read;
      } else if ("code" in read && read.code !== "not_available") {
        return read;
      }
      topics.push({ topic: listed[i]![0], local: listed[i]![1], cluster: "code" in read ? null : read.clients });
    }
    // The store answered for no topic (the one Redis down): refused, as before sharding; some: a partial list.
    if (refusal !== undefined && topics.every((t) => t.cluster === null)) return refusal;
    return { topics, truncated, unavailable };
  }

  /** Stops announcing and removes this node's record (after the announcement in flight, which would write it back). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopTimer?.();
    const redis = this.options.redis;
    if (redis === undefined) return;
    await this.announcing;
    await Promise.all([redis.send("DEL", [NODE_KEY_PREFIX + this.nodeId]), redis.send("SREM", [NODE_INDEX, this.nodeId])]).catch(() => {});
  }

  /** Frames received, and frames sent plus deliveries, as /metrics counts them (echoes are one of each). */
  private totals(): { in: number; out: number } {
    const m = this.options.gateway.metrics;
    return { in: m.framesIn + m.echoes, out: m.framesOut + m.deliveries + m.echoes };
  }

  /** Ends a period: its rates replace the last ones. */
  private sample(): void {
    const now = this.options.clock.now();
    const totals = this.totals();
    const seconds = (now - this.mark.at) / 1000;
    if (seconds > 0) this.rates = { in: round2((totals.in - this.mark.in) / seconds), out: round2((totals.out - this.mark.out) / seconds) };
    this.mark = { at: now, ...totals };
  }

  /** Writes this node's record with its TTL; a failure (Redis down) waits for the next period. */
  private announce(): void {
    if (this.options.redis === undefined || this.closed || this.announcing !== undefined) return;
    const ttl = String(this.options.periodMs * NODE_TTL_PERIODS);
    this.announcing = this.run("announce", [this.nodeId, JSON.stringify(this.self()), ttl])
      .catch(() => {})
      .finally(() => (this.announcing = undefined));
  }

  /** One of the view's scripts (neither's order among other commands matters: EVAL after a NOSCRIPT is fine). */
  private run(name: keyof typeof SCRIPTS, args: string[]): Promise<unknown> {
    const { text, sha } = SCRIPTS[name];
    return evalOrLoad(this.options.redis!.send, text, sha, ["1", NODE_INDEX, NODE_KEY_PREFIX, ...args]);
  }
}
