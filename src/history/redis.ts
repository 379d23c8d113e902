// History in Redis, shared by every node: per topic an offset counter, an epoch and a Stream of the last
// HISTORY_SIZE message frames, each changed only by the two Lua scripts below, so a publish is one atomic
// step (offset, append, TTLs, PUBLISH) and every node receives the topic's messages in offset order.
//
// Keys carry the topic in a hash tag (`sb:{T}:o`, `:e`, `:s`) so a topic's keys share a Redis Cluster slot.
// The stream and the counter expire on their own clocks: messages HISTORY_TTL_MS after the last publish,
// the offset and epoch HISTORY_META_TTL_MS after it. A topic whose offset or epoch is gone (expired, Redis
// restarted without persistence, flushed) gets a fresh epoch and starts again at 1.
import type { Position } from "../protocol.ts";
import { isComplete, newEpoch, type HistoryOptions, type HistoryQuery, type HistoryRead, type StoredMessage } from "./history.ts";

/** Resets a topic whose epoch or offset is missing: a new epoch, offset 0, no stream. */
const ENSURE = `
local epoch = redis.call('GET', KEYS[2])
local offset = redis.call('GET', KEYS[1])
local fresh = false
if not epoch or not offset then
  fresh = true
  epoch = ARGV[1]
  offset = '0'
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[1], '0')
  redis.call('DEL', KEYS[3])
end`;

/**
 * KEYS: offset, epoch, stream. ARGV: fresh epoch, meta TTL ms, message head, size, TTL ms, channel.
 * Returns the new offset; publishes `#<offset>#<epoch>|<frame>` on the topic's channel. A failed XADD (a stream
 * someone else wrote to) undoes the INCR and returns the error: nothing stored, no offset skipped.
 */
export const APPEND_SCRIPT = `${ENSURE}
local n = redis.call('INCR', KEYS[1])
local id = string.format('%d', n)
local frame = ARGV[3] .. ',"offset":' .. id .. '}'
local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', ARGV[4], id .. '-0', 'f', frame)
if type(added) == 'table' and added.err then
  redis.call('DECR', KEYS[1]) -- scripts are not rolled back: undo the INCR, or the offset would skip one
  return added
end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[6], '#' .. id .. '#' .. epoch .. '|' .. frame)
return n`;

/**
 * KEYS: offset, epoch, stream. ARGV: fresh epoch, meta TTL ms, create (1/0), since epoch ('' for none),
 * since offset, limit. Returns {epoch|false, offset, entries, 1 when entries follow since (else the latest,
 * newest first)}.
 */
export const READ_SCRIPT = `
if ARGV[3] == '0' and (redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[1]) == 0) then
  return {false, 0, {}, 0}
end
${ENSURE}
if fresh then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {epoch, 0, {}, 0}
end
if ARGV[4] == epoch then
  return {epoch, tonumber(offset), redis.call('XRANGE', KEYS[3], '(' .. ARGV[5] .. '-0', '+', 'COUNT', ARGV[6]), 1}
end
return {epoch, tonumber(offset), redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[6]), 0}`;

export const sha1 = (text: string): string => new Bun.CryptoHasher("sha1").update(text).digest("hex");
export const APPEND_SHA = sha1(APPEND_SCRIPT);
export const READ_SHA = sha1(READ_SCRIPT);

export const historyKeys = (topic: string): [string, string, string] => [`sb:{${topic}}:o`, `sb:{${topic}}:e`, `sb:{${topic}}:s`];

export interface RedisHistoryOptions extends HistoryOptions {
  /** How long a topic's offset and epoch outlive its last publish. */
  metaTtlMs: number;
}

/** EVALSHA arguments of an append (after the SHA). */
export function appendArgs(topic: string, channel: string, head: string, options: RedisHistoryOptions): string[] {
  return ["3", ...historyKeys(topic), newEpoch(), String(options.metaTtlMs), head, String(options.size), String(options.ttlMs), channel];
}

export function readArgs(topic: string, query: HistoryQuery, options: RedisHistoryOptions): string[] {
  const { since, limit, create } = query;
  return [
    "3",
    ...historyKeys(topic),
    newEpoch(),
    String(options.metaTtlMs),
    create ? "1" : "0",
    since?.epoch ?? "",
    String(since?.offset ?? 0),
    String(limit),
  ];
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

/** A history payload on a topic's channel: `#<offset>#<epoch>|<frame>`; undefined for anything else. */
export function parseHistoryPayload(payload: string): { offset: number; epoch: string; frame: string } | undefined {
  if (payload.charCodeAt(0) !== 35 /* # */) return undefined;
  const second = payload.indexOf("#", 1);
  const bar = payload.indexOf("|", second + 1);
  if (second < 0 || bar < 0) return undefined;
  return { offset: Number(payload.slice(1, second)), epoch: payload.slice(second + 1, bar), frame: payload.slice(bar + 1) };
}
