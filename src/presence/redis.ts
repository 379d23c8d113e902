// Presence in Redis, shared by every node (docs/presence-design.md): per topic a hash of entries
// (`sb:{T}:p`, connection id -> the entry's JSON), a sorted set of their expiry times (`sb:{T}:px`) and a
// count per user (`sb:{T}:pu`, for presence_stats without reading every entry). Each change is one script, and
// each returns only what it changed, so a join or a leave is announced by exactly one caller whichever node
// makes it: the one whose ZREM removed the entry, or whose HSET created it.
//
// Entries live `ttlMs` unless refreshed: every node refreshes its own entries (one script per topic per
// refresh, all of the node's entries of the topic at once), and any refresh or read of a topic first removes
// its expired entries, returning them to announce as leaves. A node killed without a word therefore leaves every
// topic within ttlMs (plus the refresh period) of its last refresh, announced once. A refresh re-adds an entry
// Redis lost (restarted empty, or removed after this node was cut off longer than the TTL), and reports it as a
// join: watchers that were told it left are told it is back.
//
// The store keeps this node's own entries (an index per topic) to refresh them: `refreshAll()` runs on the
// heartbeat's clock every ttlMs / 3, one script per topic with local entries.
import { sha1, type RedisSend } from "../broker/lua.ts";
import { MemoryPresence } from "./memory.ts";
import type { Presence, PresenceEntry, PresenceList, PresenceStats } from "./presence.ts";


/**
 * KEYS: entries, expiries, users, gone. Removes entries expired at ARGV[1] (ms); returns their JSON, and
 * remembers their ids in `gone` (a leave was announced for them: if their node refreshes them back, that is a
 * join to announce; an entry Redis merely lost was never announced gone, and comes back silently).
 */
const EXPIRE = `
local function expire(now)
  local gone = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
    if redis.call('ZREM', KEYS[2], id) == 1 then
      local entry = redis.call('HGET', KEYS[1], id)
      redis.call('HDEL', KEYS[1], id)
      if entry then
        local user = cjson.decode(entry).user
        if type(user) == 'string' and redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then redis.call('HDEL', KEYS[3], user) end
        redis.call('SADD', KEYS[4], id)
        gone[#gone + 1] = entry
      end
    end
  end
  return gone
end`;

/** Adds one entry (ARGV: now, id, json, user or '', expires at, key ttl); returns whether it is new, and the expired. */
export const ADD_SCRIPT = `${EXPIRE}
local gone = expire(ARGV[1])
local fresh = redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
if fresh == 1 and ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[4], 1) end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[6]) end
return {fresh, gone}`;

/** Removes one entry (ARGV: id); returns its JSON when this call removed it, else false. */
export const REMOVE_SCRIPT = `
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return false end
local entry = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if entry then
  local user = cjson.decode(entry).user
  if type(user) == 'string' and redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then redis.call('HDEL', KEYS[3], user) end
end
return entry`;

/**
 * Refreshes this node's entries of a topic (ARGV: now, expires at, key ttl, then their ids); returns {expired
 * entries' JSON, ids Redis does not have}. Ids only, and a few commands per 500 of them (ZMSCORE, one ZADD of the
 * ones present): Redis runs every call inside a script as a command, and every refresh of every entry's JSON was
 * most of the refresh's cost. What is missing is put back by RESTORE, with its JSON, in a second call.
 */
export const REFRESH_SCRIPT = `${EXPIRE}
local gone = expire(ARGV[1])
local missing = {}
for first = 4, #ARGV, 500 do
  local ids = {}
  for i = first, math.min(#ARGV, first + 499) do ids[#ids + 1] = ARGV[i] end
  local scores = redis.call('ZMSCORE', KEYS[2], unpack(ids))
  local zadd = {}
  for k, id in ipairs(ids) do
    if scores[k] then
      zadd[#zadd + 1] = ARGV[2]
      zadd[#zadd + 1] = id
    else
      missing[#missing + 1] = id
    end
  end
  if #zadd > 0 then redis.call('ZADD', KEYS[2], unpack(zadd)) end
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return {gone, missing}`;

/**
 * Puts back entries Redis does not have (ARGV: expires at, key ttl, then id, json, user-or-'' triples); returns
 * the JSON of those that had been announced gone (a join to announce); the others come back silently.
 */
export const RESTORE_SCRIPT = `
local back = {}
for i = 3, #ARGV, 3 do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    if ARGV[i + 2] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[i + 2], 1) end
    if redis.call('SREM', KEYS[4], ARGV[i]) == 1 then back[#back + 1] = ARGV[i + 1] end
  end
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return back`;

/**
 * Reads (ARGV: now, max, byte budget): {entries' JSON (at most max, within the budget), 1 when there were more,
 * clients, users, expired}.
 */
export const READ_SCRIPT = `${EXPIRE}
local gone = expire(ARGV[1])
local max = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local out = {}
local more = 0
if max > 0 then
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000)
    cursor = page[1]
    for i = 2, #page[2], 2 do
      budget = budget - #page[2][i]
      if #out < max and budget >= 0 then out[#out + 1] = page[2][i] else more = 1 end
    end
  until cursor == '0' or more == 1
end
return {out, more, redis.call('HLEN', KEYS[1]), redis.call('HLEN', KEYS[3]), gone}`;

const SCRIPTS = { add: ADD_SCRIPT, remove: REMOVE_SCRIPT, refresh: REFRESH_SCRIPT, restore: RESTORE_SCRIPT, read: READ_SCRIPT } as const;
const SHAS = Object.fromEntries(Object.entries(SCRIPTS).map(([name, text]) => [name, sha1(text)])) as Record<keyof typeof SCRIPTS, string>;

export const presenceKeys = (topic: string): [string, string, string, string] => [
  `sb:{${topic}}:p`,
  `sb:{${topic}}:px`,
  `sb:{${topic}}:pu`,
  `sb:{${topic}}:pg`,
];
/** What a connection must load before presence works on it (the broker loads them on every new connection). */
export const PRESENCE_SCRIPTS: readonly string[] = Object.values(SCRIPTS);
/** Presence lists read at once per node: each is bounded in bytes; this bounds them together. */
const MAX_LISTS_IN_FLIGHT = 64;

export interface RedisPresenceOptions {
  /** The commands of the Redis `topic` lives on (one function per instance, for the broker's life). */
  sendFor: (topic: string) => RedisSend;
  /** An entry not refreshed for this long is gone (PRESENCE_TTL_MS). */
  ttlMs: number;
  /** Time in ms, shared by every node (wall clock: expiry times are compared across processes). */
  now?: () => number;
  /** Entries that expired, found by any call: the caller announces each as a leave (exactly once cluster-wide). */
  expired?: (topic: string, entries: PresenceEntry[]) => void;
  /** This node's entries a refresh put back (Redis had lost them): the caller announces each as a join. */
  rejoined?: (topic: string, entries: PresenceEntry[]) => void;
}

export class RedisPresence implements Presence {
  private readonly now: () => number;
  /** This node's entries, per topic: what its refreshes keep alive (the memory store's bookkeeping, reused). */
  private readonly local = new MemoryPresence();
  /** Scripts sent by refreshes (for /metrics: the cost of presence in Redis commands). */
  refreshes = 0;
  private listsInFlight = 0;
  /** Script reloads in flight, per Redis instance. */
  private readonly reloading = new Map<RedisSend, Promise<unknown>>();

  constructor(private readonly options: RedisPresenceOptions) {
    this.now = options.now ?? Date.now;
  }

  async add(topic: string, entry: PresenceEntry): Promise<boolean> {
    // Kept locally first: if Redis is down now, the next refresh that reaches it adds the entry (a join then).
    this.local.add(topic, entry);
    const { ttlMs } = this.options;
    const now = this.now();
    const [fresh, gone] = (await this.run("add", topic, [String(now), entry.connectionId, JSON.stringify(entry), entry.user ?? "", String(now + ttlMs), String(ttlMs * 2)])) as [number, string[]];
    this.report(topic, gone);
    return fresh === 1;
  }

  async remove(topic: string, connectionId: string): Promise<PresenceEntry | undefined> {
    this.local.remove(topic, connectionId);
    const entry = (await this.run("remove", topic, [connectionId])) as string | null;
    return entry === null ? undefined : (JSON.parse(entry) as PresenceEntry);
  }

  /** This node's entries of `topic`, refreshed at once; returns the entries Redis had lost (re-added: joins). */
  async refresh(topic: string, entries: readonly PresenceEntry[]): Promise<PresenceEntry[]> {
    const { ttlMs } = this.options;
    const now = this.now();
    const [gone, missing] = (await this.run("refresh", topic, [String(now), String(now + ttlMs), String(ttlMs * 2), ...entries.map((e) => e.connectionId)])) as [
      string[],
      string[],
    ];
    this.report(topic, gone);
    if (missing.length === 0) return [];
    // Only what this node still holds now: an entry removed since (its remove found nothing to remove) must
    // not come back as a ghost.
    const byId = new Map(entries.map((e) => [e.connectionId, e]));
    const mine = this.local.members(topic);
    const args = [String(this.now() + ttlMs), String(ttlMs * 2)];
    for (const id of missing) {
      const entry = byId.get(id);
      if (entry !== undefined && mine?.get(id) === entry) args.push(id, JSON.stringify(entry), entry.user ?? "");
    }
    if (args.length === 2) return [];
    const back = (await this.run("restore", topic, args)) as string[];
    return back.map((json) => JSON.parse(json) as PresenceEntry);
  }

  /** Refreshes every topic this node has entries in (one script each); failures wait for the next round. */
  refreshAll(): void {
    for (const [topic, mine] of this.local.held()) {
      this.refreshes++;
      this.refresh(topic, [...mine.values()]).then(
        (back) => back.length > 0 && this.options.rejoined?.(topic, back),
        () => {}, // Redis down or slow: the entries live ttlMs, the next round tries again
      );
    }
  }

  gauges(): Record<string, number> {
    return { ...this.local.gauges(), refreshes: this.refreshes };
  }

  async list(topic: string, max: number, maxBytes = Number.MAX_SAFE_INTEGER): Promise<PresenceList> {
    if (this.listsInFlight >= MAX_LISTS_IN_FLIGHT) throw new Error(`${MAX_LISTS_IN_FLIGHT} presence lists in flight on this node: retry`);
    this.listsInFlight++;
    try {
      const [entries, more] = await this.read(topic, max, maxBytes);
      return { clients: entries.map((json) => JSON.parse(json) as PresenceEntry), truncated: more === 1 };
    } finally {
      this.listsInFlight--;
    }
  }

  async stats(topic: string): Promise<PresenceStats> {
    const [, , clients, users] = await this.read(topic, 0, 0);
    return { clients, users };
  }

  private async read(topic: string, max: number, maxBytes: number): Promise<[string[], number, number, number]> {
    const [entries, more, clients, users, gone] = (await this.run("read", topic, [String(this.now()), String(max), String(maxBytes)])) as [string[], number, number, number, string[]];
    this.report(topic, gone);
    return [entries, more, clients, users];
  }

  private report(topic: string, gone: string[]): void {
    if (gone.length > 0) this.options.expired?.(topic, gone.map((json) => JSON.parse(json) as PresenceEntry));
  }

  /**
   * EVALSHA only. An EVAL fallback would run this change after later ones of the same connection (an add
   * after the remove that cancels it: a ghost entry). A Redis that lost the scripts fails the call (add: the
   * local index keeps the entry and the next refresh adds it; remove: the entry expires and is announced gone)
   * and the scripts are loaded again, queued behind what is in flight.
   */
  private async run(name: keyof typeof SCRIPTS, topic: string, args: string[]): Promise<unknown> {
    const send = this.options.sendFor(topic);
    try {
      return await send("EVALSHA", [SHAS[name], "4", ...presenceKeys(topic), ...args]);
    } catch (error) {
      if (error instanceof Error && error.message.startsWith("NOSCRIPT") && !this.reloading.has(send)) {
        const reload = Promise.all(PRESENCE_SCRIPTS.map((script) => send("SCRIPT", ["LOAD", script])))
          .catch(() => {})
          .finally(() => this.reloading.delete(send));
        this.reloading.set(send, reload);
      }
      throw error;
    }
  }
}
