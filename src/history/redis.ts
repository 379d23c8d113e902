// History in Redis, shared by every node: per topic an offset counter, an epoch and a Stream of the last
// HISTORY_SIZE message frames, each changed only by the two Lua scripts below, so a publish (or a node's
// publishes of one topic in one tick) is one atomic step (offsets, append, TTLs, PUBLISH) and every node
// receives the topic's messages in offset order.
//
// Keys carry the topic in a hash tag (`sb:{T}:o`, `:e`, `:s`) so a topic's keys share a Redis Cluster slot.
// The stream and the counter expire on their own clocks: messages HISTORY_TTL_MS after the last publish,
// the offset and epoch HISTORY_META_TTL_MS after it. A topic whose offset or epoch is gone (expired, Redis
// restarted, with or without persistence, or flushed) gets a fresh epoch and starts again at 1.
import { sha1 } from "../broker/lua.ts";
import type { Position } from "../protocol.ts";
import { isComplete, newEpoch, type HistoryOptions, type HistoryQuery, type HistoryRead, type StoredMessage } from "./history.ts";

/**
 * The topic's epoch, valid only when it was created by this Redis incarnation (its `run_id`, which the node
 * reads when it connects and passes as ARGV[1]): a Redis restarted from an older snapshot (RDB, or a replica
 * promoted behind its master) has rolled offsets back, and the same offsets would name other messages. So a
 * restart, with or without persistence, starts every topic on a new epoch at its next use.
 */
const CURRENT_EPOCH = `
local stored = redis.call('GET', KEYS[2])
local offset = redis.call('GET', KEYS[1])
local epoch = false
if stored and offset then
  local cut = string.find(stored, ':', 1, true)
  if cut and string.sub(stored, cut + 1) == ARGV[1] then epoch = string.sub(stored, 1, cut - 1) end
end`;

/** Starts a topic on a new epoch (ARGV[2]) at offset 0, its stream emptied; TTLs ARGV[3] ms. */
const NEW_EPOCH = `
  epoch = ARGV[2]
  offset = '0'
  redis.call('SET', KEYS[2], epoch .. ':' .. ARGV[1], 'PX', ARGV[3])
  redis.call('SET', KEYS[1], '0', 'PX', ARGV[3])
  redis.call('DEL', KEYS[3])`;

/**
 * KEYS: offset, epoch, stream. ARGV: run id, fresh epoch, meta TTL ms, size, TTL ms, channel, then one message
 * head per message (a node's messages of the topic in one tick, in order). Stores each under the next offset and
 * returns the first one's; publishes one payload `#<first offset>#<epoch>|<frame>\n<frame>...` (each frame with
 * its own offset, the next ones following the first). A failed XADD (a stream someone else wrote to) undoes its
 * INCR and returns the error (nothing stored, no offset skipped: the key's type fails the first XADD).
 */
export const APPEND_SCRIPT = `${CURRENT_EPOCH}
if not epoch then ${NEW_EPOCH}
end
local frames = {}
local first = false
for i = 7, #ARGV do
  local n = redis.call('INCR', KEYS[1])
  local id = string.format('%d', n)
  local frame = ARGV[i] .. ',"offset":' .. id .. '}'
  local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', ARGV[4], id .. '-0', 'f', frame)
  if type(added) == 'table' and added.err then
    redis.call('DECR', KEYS[1]) -- scripts are not rolled back: undo the INCR, or the offset would skip one
    if not first then return added end
    break
  end
  first = first or n
  frames[#frames + 1] = frame
end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[6], '#' .. string.format('%d', first) .. '#' .. epoch .. '|' .. table.concat(frames, '\\n'))
return {first, #frames}`;

/**
 * KEYS: offset, epoch, stream. ARGV: run id, fresh epoch, meta TTL ms, create (1/0), since epoch ('' for
 * none), since offset, limit (0: the position only), byte budget. Returns {epoch|false, offset, entries, 1 when
 * the entries follow `since` (else the latest, newest first)}. Entries stop before the byte budget is passed,
 * so one read never answers more than the caller can send.
 */
export const READ_SCRIPT = `${CURRENT_EPOCH}
if not epoch then
  if ARGV[4] == '0' then return {false, 0, {}, 0} end
  ${NEW_EPOCH}
  return {epoch, 0, {}, 0}
end
local limit = tonumber(ARGV[7])
if limit == 0 then return {epoch, tonumber(offset), {}, 0} end
local after = ARGV[5] == epoch
local entries
if after then
  entries = redis.call('XRANGE', KEYS[3], '(' .. ARGV[6] .. '-0', '+', 'COUNT', limit)
else
  entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', limit)
end
local budget = tonumber(ARGV[8])
local kept = {}
for i = 1, #entries do
  budget = budget - #entries[i][2][2]
  if budget < 0 then break end
  kept[i] = entries[i]
end
return {epoch, tonumber(offset), kept, after and 1 or 0}`;

export const APPEND_SHA = sha1(APPEND_SCRIPT);
export const READ_SHA = sha1(READ_SCRIPT);

export const historyKeys = (topic: string): [string, string, string] => [`sb:{${topic}}:o`, `sb:{${topic}}:e`, `sb:{${topic}}:s`];

export interface RedisHistoryOptions extends HistoryOptions {
  /** How long a topic's offset and epoch outlive its last publish. */
  metaTtlMs: number;
}

/**
 * EVALSHA arguments of an append of `heads` (one topic's, in order; after the SHA); `runId`: the connected
 * Redis's; `retention`: the topic's own (its definition's). Its offsets outlive its messages, whichever TTL is
 * longer.
 */
export function appendArgs(topic: string, channel: string, heads: readonly string[], options: RedisHistoryOptions, runId: string, retention: HistoryOptions = options): string[] {
  const metaTtlMs = Math.max(options.metaTtlMs, retention.ttlMs);
  return ["3", ...historyKeys(topic), runId, newEpoch(), String(metaTtlMs), String(retention.size), String(retention.ttlMs), channel, ...heads];
}

export function readArgs(topic: string, query: HistoryQuery, options: RedisHistoryOptions, runId: string): string[] {
  const { since, limit, create, maxBytes } = query;
  return [
    "3",
    ...historyKeys(topic),
    runId,
    newEpoch(),
    String(options.metaTtlMs),
    create ? "1" : "0",
    since?.epoch ?? "",
    String(since?.offset ?? 0),
    String(limit),
    String(maxBytes ?? Number.MAX_SAFE_INTEGER),
  ];
}

/** The connected Redis's incarnation, from `INFO server` (a restart changes it). */
export function runIdOf(info: string): string {
  const id = /run_id:([0-9a-f]+)/.exec(info)?.[1];
  if (id === undefined) throw new Error("INFO server has no run_id");
  return id;
}

type StreamEntry = [id: string, fields: string[]];

/** The read script's reply as a HistoryRead. */
export function parseRead(reply: unknown, since: Position | undefined): HistoryRead {
  const [epoch, offset, entries, after] = reply as [string | null, number, StreamEntry[], number];
  if (epoch === null) return { epoch: newEpoch(), offset: 0, messages: [], complete: false }; // no position, none created
  const messages: StoredMessage[] = entries.map(([id, fields]) => ({ offset: Number.parseInt(id, 10), frame: fields[1]! }));
  if (after !== 1) messages.reverse(); // XREVRANGE: newest first
  return { epoch, offset, messages, complete: isComplete(since, epoch, offset, messages) };
}

/**
 * A history payload on a topic's channel: `#<offset>#<epoch>|<frame>`, or a batch `...|<frame>\n<frame>...`
 * whose frames have the offsets following the first; each is handed to `each`. False for anything else.
 */
export function eachHistoryFrame(payload: string, each: (frame: string, offset: number, epoch: string) => void): boolean {
  if (payload.charCodeAt(0) !== 35 /* # */) return false;
  const second = payload.indexOf("#", 1);
  const bar = payload.indexOf("|", second + 1);
  if (second < 0 || bar < 0) return false;
  let offset = Number(payload.slice(1, second));
  const epoch = payload.slice(second + 1, bar);
  let start = bar + 1;
  for (let line = payload.indexOf("\n", start); line >= 0; start = line + 1, line = payload.indexOf("\n", start)) {
    each(payload.slice(start, line), offset++, epoch);
  }
  each(payload.slice(start), offset, epoch);
  return true;
}
