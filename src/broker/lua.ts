// Lua scripts on Redis, shared by the stores beside the broker (history, presence, the cluster view): a script
// is sent by its SHA1, and a Redis that does not have it answers NOSCRIPT (after a restart, SCRIPT FLUSH, a
// failover). What to do then depends on the script: `evalOrLoad` re-sends it whole, which is right only where
// running after later commands of the same connection changes nothing (reads, announcements); scripts whose
// order matters (history appends, presence changes) must fail instead and be reloaded (see their stores).

/** Sends one command on a Redis connection (the broker's, or any RedisClient's `send`). */
export type RedisSend = (command: string, args: string[]) => Promise<unknown>;

export const sha1 = (text: string): string => new Bun.CryptoHasher("sha1").update(text).digest("hex");

/** EVALSHA `text` with `args` (numkeys, keys, then arguments); on NOSCRIPT, EVAL it (which also caches it). */
export async function evalOrLoad(send: RedisSend, text: string, sha: string, args: string[]): Promise<unknown> {
  try {
    return await send("EVALSHA", [sha, ...args]);
  } catch (error) {
    if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
    return send("EVAL", [text, ...args]);
  }
}
