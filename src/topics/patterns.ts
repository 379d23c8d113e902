// Topic patterns, as tokens' permissions and topic definitions write them: an exact topic name, or a prefix
// ending in `*` (`chat.room.*` matches `chat.room.1`; a lone `*` matches every topic). One matcher for both, so
// "the most specific pattern wins" means the same everywhere: an exact name first, then the longest prefix.

/** Why a pattern cannot be used, or undefined when it can. `nameRule`: what a topic name must look like. */
export function patternProblem(pattern: string, nameRule: RegExp): string | undefined {
  const star = pattern.indexOf("*");
  if (star >= 0 && star !== pattern.length - 1) return "a * may only end a pattern (chat.room.*), and only one";
  const name = star < 0 ? pattern : pattern.slice(0, -1);
  if (star < 0 && !nameRule.test(name)) return "not a topic name and not a prefix ending in *";
  if (star >= 0 && name !== "" && !nameRule.test(name)) return "the part before * must be characters of the topic rule";
  return undefined;
}

/**
 * Patterns compiled for lookups per message: a Map of exact names and the prefixes longest first, so the first
 * prefix that matches is the most specific one. O(1) for exact names, O(prefixes) otherwise.
 */
export class PatternTable<V> {
  private readonly exact = new Map<string, V>();
  private readonly byPrefix = new Map<string, V>();
  /** byPrefix's entries longest first; rebuilt on the first match after an add (a token adds many at once). */
  private prefixes: [prefix: string, value: V][] | undefined = [];

  get size(): number {
    return this.exact.size + this.byPrefix.size;
  }

  /** How many prefix patterns a match may have to try. */
  get prefixCount(): number {
    return this.byPrefix.size;
  }

  /** False when the pattern is already in the table (its value is left as it was). */
  add(pattern: string, value: V): boolean {
    const table = pattern.endsWith("*") ? this.byPrefix : this.exact;
    const key = table === this.exact ? pattern : pattern.slice(0, -1);
    if (table.has(key)) return false;
    table.set(key, value);
    if (table === this.byPrefix) this.prefixes = undefined;
    return true;
  }

  /** The value of the most specific pattern matching `topic`, or undefined. */
  match(topic: string): V | undefined {
    const exact = this.exact.get(topic);
    if (exact !== undefined) return exact;
    const prefixes = (this.prefixes ??= [...this.byPrefix].sort((a, b) => b[0].length - a[0].length));
    for (const [prefix, value] of prefixes) if (topic.startsWith(prefix)) return value;
    return undefined;
  }
}
