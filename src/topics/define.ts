// Typed topics: one definition, `defineTopics({...})`, maps topic patterns to their options (a zod schema for
// `data`, history, presence, who may publish). The server checks every publish against it (src/topics/rules.ts
// compiles it); the typed client takes its types from it (`connect<typeof topics>(url)`), so a topic's message
// type is written once, as its schema.
import { z } from "zod";
import { HISTORY_SIZE_MAX, HISTORY_TTL_MS_MAX, HISTORY_TTL_MS_MIN } from "../config.ts";
import { TOPIC_PATTERN, type Json } from "../protocol.ts";
import { patternProblem } from "./patterns.ts";

/** Whatever has zod's `safeParse` (a schema from another copy of zod too, e.g. the config file's own). */
const isSchema = (value: unknown): boolean =>
  typeof value === "object" && value !== null && typeof (value as { safeParse?: unknown }).safeParse === "function";

/** The options of one pattern. Every option left out follows the server's defaults (the environment's). */
export const TopicOptions = z
  .strictObject({
    /** Every publish's `data` must pass it (`invalid_data` otherwise); subscribers receive its output. */
    schema: z.custom<z.ZodType>(isSchema, { message: "must be a zod schema, e.g. z.object({...})" }).optional(),
    /** Messages kept for recovery and history requests (`ttlMs` defaults to HISTORY_TTL_MS); false: none. */
    history: z
      .union([
        z.literal(false),
        z.strictObject({
          size: z.number().int().min(1).max(HISTORY_SIZE_MAX),
          ttlMs: z.number().int().min(HISTORY_TTL_MS_MIN).max(HISTORY_TTL_MS_MAX).optional(),
        }),
      ], { error: `must be false or { size: a whole number 1-${HISTORY_SIZE_MAX}, ttlMs?: ms }` })
      .optional(),
    /** Keep who is subscribed (presence requests answer); default true. */
    presence: z.boolean().optional(),
    /** Announce join/leave to subscribers that ask for them; default true, and needs presence. */
    joinLeave: z.boolean().optional(),
    /** `"server"`: only the HTTP API may publish (sockets get `forbidden`); default `"clients"`. */
    publish: z.enum(["clients", "server"]).optional(),
  })
  .refine((o) => !(o.joinLeave === true && o.presence === false), { message: "joinLeave: true needs presence (join/leave are presence changes)" });
export type TopicOptions = z.input<typeof TopicOptions>;

/** Patterns (exact topic names, or prefixes ending in `*`) to their options. */
export type TopicMap = { readonly [pattern: string]: TopicOptions };

/** Why a topic definition cannot be used: a bad pattern, bad options, or a pattern defined twice. */
export class TopicConfigError extends Error {
  override name = "TopicConfigError";
}

const BRAND = Symbol.for("switchboard.topics");

/**
 * Compiled topic definitions, the result of defineTopics(). `map` keeps the patterns with their schemas' types
 * (what the typed client reads); `entries` holds the validated options, in definition order.
 */
export class TopicDefinitions<M extends object = TopicMap> {
  readonly [BRAND] = true;
  constructor(
    readonly map: M,
    readonly entries: ReadonlyArray<readonly [pattern: string, options: z.output<typeof TopicOptions>]>,
  ) {}
}

/** Whether `value` came from defineTopics (of this copy of the package or another). */
export const isTopicDefinitions = (value: unknown): value is TopicDefinitions =>
  typeof value === "object" && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true;

type Merged<T extends readonly unknown[]> = T extends readonly [infer Head, ...infer Rest] ? Head & Merged<Rest> : {};

/**
 * Defines topics: `defineTopics({ "chat.room.*": { schema: z.object({ text: z.string() }) } })`. Several maps
 * (one per feature module) are merged; a pattern defined twice, a malformed pattern or an unknown option
 * throws a TopicConfigError naming it (the server's start-up then stops with exit code 2).
 */
export function defineTopics<const Maps extends readonly TopicMap[]>(...maps: Maps): TopicDefinitions<Merged<Maps>> {
  const entries: [string, z.output<typeof TopicOptions>][] = [];
  const seen = new Set<string>();
  const merged: Record<string, TopicOptions> = {};
  for (const map of maps) {
    if (typeof map !== "object" || map === null || Array.isArray(map)) throw new TopicConfigError("defineTopics takes objects of pattern -> options");
    for (const [pattern, options] of Object.entries(map)) {
      const problem = patternProblem(pattern, TOPIC_PATTERN);
      if (problem !== undefined) throw new TopicConfigError(`topic pattern ${JSON.stringify(pattern)}: ${problem}`);
      if (seen.has(pattern)) throw new TopicConfigError(`topic pattern ${JSON.stringify(pattern)} is defined twice: merge its options into one definition`);
      seen.add(pattern);
      const parsed = TopicOptions.safeParse(options);
      if (!parsed.success) {
        const reasons = parsed.error.issues.map((i) => (i.path.length ? `${i.path.join(".")}: ${i.message}` : i.message)).join("; ");
        throw new TopicConfigError(`topic pattern ${JSON.stringify(pattern)}: ${reasons}`);
      }
      entries.push([pattern, parsed.data]);
      merged[pattern] = options;
    }
  }
  return new TopicDefinitions(merged as Merged<Maps>, entries);
}

// Types for the client: a topic name resolves to its pattern as the server resolves it (an exact name first,
// then the longest matching prefix), and to that pattern's schema.

type PrefixOf<P> = P extends `${infer Prefix}*` ? Prefix : never;
type PrefixPatterns<M> = Extract<keyof M, `${string}*`>;
/** The prefix patterns of M that match topic K. */
type Candidates<M, K extends string> = { [P in PrefixPatterns<M>]: K extends `${PrefixOf<P>}${string}` ? P : never }[PrefixPatterns<M>];
/** The candidates (Q, distributed) more specific than P: their prefix extends P's. */
type MoreSpecific<Q extends string, P extends string> = Q extends P ? never : PrefixOf<Q> extends `${PrefixOf<P>}${string}` ? Q : never;
type MostSpecific<C extends string, All extends string = C> = C extends string ? ([MoreSpecific<All, C>] extends [never] ? C : never) : never;

/** The pattern of M that topic K follows (never: none, or K is not one known string). */
export type PatternOf<M, K extends string> = string extends K
  ? never
  : K extends Exclude<keyof M, `${string}*`>
    ? K
    : MostSpecific<Candidates<M, K> & string>;

/** The options of K's pattern, or undefined. */
type OptionsOf<M, K extends string> = PatternOf<M, K> extends infer P ? ([P] extends [never] ? undefined : P extends keyof M ? M[P] : undefined) : undefined;
type SchemaOf<M, K extends string> = OptionsOf<M, K> extends { schema: infer S } ? S : undefined;

/** Topic definitions (`typeof topics`), or none: what a typed client is parameterized with. */
export type TopicTypes = TopicDefinitions<any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * What a value of type T is once sent: JSON.parse(JSON.stringify(x)). A schema's output goes out as JSON, so a
 * `z.date()` field arrives as a string and an `undefined` one not at all; handlers are typed with what arrives.
 */
export type Jsonify<T> = T extends { toJSON(): infer J }
  ? Jsonify<J>
  : T extends string | number | boolean | null
    ? T
    : T extends undefined | bigint | symbol | ((...args: never[]) => unknown)
      ? never
      : T extends readonly (infer E)[]
        ? Jsonify<E>[]
        : T extends object
          ? { [P in keyof T as T[P] extends ((...args: never[]) => unknown) | symbol ? never : P]: Jsonify<T[P]> }
          : never;

/** One topic's data as subscribers receive it. */
type DataAt<M, K extends string> = SchemaOf<M, K> extends z.ZodType ? Jsonify<z.output<SchemaOf<M, K>>> : Json;

/** One topic's data as a client may publish it (JSON, whatever the schema accepts besides). */
type InputAt<M, K extends string> = SchemaOf<M, K> extends z.ZodType ? z.input<SchemaOf<M, K>> & Json : Json;
type ServerOnly<M, K extends string> = OptionsOf<M, K> extends { publish: "server" } ? true : false;

type Intersection<U> = (U extends unknown ? (x: U) => void : never) extends (x: infer I) => void ? I : never;

/**
 * What subscribers of topic K receive as `data`: its schema's output as JSON, or any JSON. For a union of
 * topics, any of theirs.
 */
export type DataOf<T extends TopicTypes, K extends string> = T extends TopicDefinitions<infer M> ? (K extends string ? DataAt<M, K> : never) : Json;

/**
 * What a client's publish to topic K may carry as `data`: JSON its schema accepts, or any JSON; nothing (never)
 * for a `publish: "server"` topic, which only the HTTP API may publish to. For a union of topics, what every one
 * of them accepts (so never if one of them is server-only).
 */
export type InputOf<T extends TopicTypes, K extends string> = T extends TopicDefinitions<infer M>
  ? true extends (K extends string ? ServerOnly<M, K> : never)
    ? never
    : Intersection<K extends string ? [InputAt<M, K>] : never> extends [infer I]
      ? I
      : never
  : Json;
