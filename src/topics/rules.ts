// What the server applies to a topic: its definition's options (src/topics/define.ts) over the environment's
// defaults, resolved once per topic and looked up by the topic pipeline on every publish and subscribe.
import type { Config } from "../config.ts";
import type { HistoryOptions } from "../history/history.ts";
import type { TopicDefinitions } from "./define.ts";
import { PatternTable } from "./patterns.ts";

/** Anything with zod's safeParse: the topic's schema for `data`. */
export interface DataSchema {
  safeParse(data: unknown): { success: true; data: unknown } | { success: false; error: { issues: readonly DataIssue[] } };
}
interface DataIssue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

export interface TopicRule {
  /** The pattern the topic follows; undefined: no definition (the environment's defaults). */
  readonly pattern: string | undefined;
  readonly schema: DataSchema | undefined;
  /** The topic's retention; undefined: no history (no offsets). */
  readonly history: HistoryOptions | undefined;
  readonly presence: boolean;
  readonly joinLeave: boolean;
  /** False: only the HTTP API publishes (`publish: "server"`). */
  readonly clientsPublish: boolean;
}

/** Distinct topics whose rule is remembered; past it the cache starts over (names from clients are unbounded). */
const CACHE_MAX_TOPICS = 10_000;
/** With this many prefix patterns or fewer, matching is as cheap as the cache lookup it would replace. */
const UNCACHED_PREFIXES = 8;

export class TopicRules {
  /** The rule of topics no pattern matches (absent: TOPICS_STRICT, they are refused). */
  private readonly fallback: TopicRule | undefined;
  private readonly table = new PatternTable<TopicRule>();
  private readonly cache = new Map<string, TopicRule | null>();
  /** Whether some topic keeps history: the broker then needs a history store. */
  readonly storesHistory: boolean;

  constructor(config: Pick<Config, "HISTORY_SIZE" | "HISTORY_TTL_MS" | "TOPICS_STRICT">, definitions?: TopicDefinitions) {
    const defaults: TopicRule = {
      pattern: undefined,
      schema: undefined,
      history: config.HISTORY_SIZE > 0 ? { size: config.HISTORY_SIZE, ttlMs: config.HISTORY_TTL_MS } : undefined,
      presence: true,
      joinLeave: true,
      clientsPublish: true,
    };
    this.fallback = config.TOPICS_STRICT ? undefined : defaults;
    let storesHistory = this.fallback?.history !== undefined;
    for (const [pattern, options] of definitions?.entries ?? []) {
      const { history: kept, presence = true } = options;
      const history = kept === false ? undefined : kept === undefined ? defaults.history : { size: kept.size, ttlMs: kept.ttlMs ?? config.HISTORY_TTL_MS };
      if (history !== undefined) storesHistory = true;
      // defineTopics already refused duplicates; a table built from its entries cannot meet one.
      this.table.add(pattern, {
        pattern,
        schema: options.schema as DataSchema | undefined,
        history,
        presence,
        joinLeave: presence && options.joinLeave !== false,
        clientsPublish: options.publish !== "server",
      });
    }
    this.storesHistory = storesHistory;
  }

  /** The rule for `topic` (a valid topic name); undefined when TOPICS_STRICT refuses it. */
  of(topic: string): TopicRule | undefined {
    if (this.table.size === 0) return this.fallback;
    if (this.table.prefixCount <= UNCACHED_PREFIXES) return this.table.match(topic) ?? this.fallback;
    let rule = this.cache.get(topic);
    if (rule === undefined) {
      if (this.cache.size >= CACHE_MAX_TOPICS) this.cache.clear();
      rule = this.table.match(topic) ?? this.fallback ?? null;
      this.cache.set(topic, rule);
    }
    return rule ?? undefined;
  }
}
