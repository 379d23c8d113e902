// Environment -> validated configuration. Every variable has a default so `bun run src/index.ts` works with
// nothing set; a value that is set but wrong stops the process with a message naming the variable.
import { z } from "zod";
import { publicKeyAlgorithm } from "./auth/tokens.ts";

/** A whole number written in decimal digits only ("", "1e3", "0x10", "5.5" and " 5" are all rejected). */
const wholeNumber = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));
const integer = (fallback: number, min: number, max: number) => wholeNumber(min, max).default(fallback);

/** `true/false/1/0` (any case). Not `z.coerce.boolean()`, which reads the string "false" as true. */
const boolean = (fallback: boolean) =>
  z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(["true", "false", "1", "0"], { message: "must be one of true, false, 1, 0" }))
    .transform((s) => s === "true" || s === "1")
    .default(fallback);

const MiB = 1024 * 1024;

/** Bounds of a topic's history, for HISTORY_SIZE / HISTORY_TTL_MS and for per-topic `history` alike. */
export const HISTORY_SIZE_MAX = 10_000;
export const HISTORY_TTL_MS_MIN = 1000;
export const HISTORY_TTL_MS_MAX = 30 * 86_400_000;

/** One Redis URL, or several separated by commas (spaces around them allowed). */
const REDIS_URL_ONE = String.raw`(?:redis|rediss|valkey|valkeys):\/\/[^\s,]+`;
const REDIS_URLS = new RegExp(String.raw`^${REDIS_URL_ONE}(?:\s*,\s*${REDIS_URL_ONE})*$`);

const API_KEY_MIN = 16;
const apiKey = z.string().min(API_KEY_MIN, `must be at least ${API_KEY_MIN} characters`).optional();

export const ConfigSchema = z.object({
  PORT: integer(3000, 0, 65535),
  HOST: z.string().min(1, "must not be empty").default("0.0.0.0"),
  PING_INTERVAL_MS: integer(5000, 10, 3_600_000),
  PING_WAIT_MS: integer(10000, 10, 3_600_000),
  PERMESSAGE_DEFLATE: boolean(true),
  // uWS applies it after inflating, so it bounds what a compressed frame can expand to.
  MAX_PAYLOAD_BYTES: integer(MiB, 64, 256 * MiB),
  MAX_TOPICS_PER_CONNECTION: integer(100, 1, 100_000),
  BACKPRESSURE_LIMIT_BYTES: integer(MiB, 1024, 1024 * MiB),
  SHUTDOWN_GRACE_MS: integer(5000, 0, 600_000),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),
  /**
   * Set: cross-node fan-out over Redis. Unset: this process alone (Bun's native topics). Several URLs,
   * comma-separated: topics are spread over those instances by a hash of their name (src/broker/sharded.ts);
   * every node must list the same ones in the same order.
   */
  REDIS_URL: z
    .string()
    .regex(REDIS_URLS, "must be a redis:// (or rediss://, valkey://) URL, or several separated by commas")
    .refine((value) => new Set(redisUrls(value)).size === redisUrls(value).length, "lists an instance twice: each topic must live on one Redis")
    .optional(),
  /**
   * A Redis that leaves a PING (sent every quarter of this) or a connection attempt unanswered this long is
   * treated as down: a hung Redis (SIGSTOP, swapping) would otherwise look connected while commands queue.
   * 2 s is far above a healthy round trip (<1 ms on a LAN) yet short enough that /readyz turns 503 promptly.
   */
  REDIS_TIMEOUT_MS: integer(2000, 50, 60_000),
  /**
   * Cross-node bytes handed to Redis and not yet acknowledged; past it, cross-node copies are dropped (and
   * counted) instead of queued. 32 MiB covers ~1 s of a busy node's publishes at a healthy Redis, and bounds
   * what a slow Redis can make this process hold.
   */
  REDIS_MAX_PENDING_BYTES: integer(32 * MiB, 64 * 1024, 4096 * MiB),
  /**
   * Messages kept per topic for recovery and history requests; 0 turns history off (no offsets, no acks that
   * wait for storage). 100 covers a reconnect of a few seconds on a busy topic (Centrifugo's examples use the
   * same order); at most 10,000, because a recovery replays up to this many frames in one step.
   */
  HISTORY_SIZE: integer(100, 0, HISTORY_SIZE_MAX),
  /** A topic's messages are kept this long after its last publish: 5 minutes outlasts a phone's network switch. */
  HISTORY_TTL_MS: integer(300_000, HISTORY_TTL_MS_MIN, HISTORY_TTL_MS_MAX),
  /**
   * Memory broker: all topics' stored messages together (frames plus 120 bytes of bookkeeping each, and ~200
   * per topic); past it the oldest go first. 64 MiB holds ~240,000 messages of ~150-byte frames (2,400 busy
   * topics' full history at the default HISTORY_SIZE), ~90 MiB of RSS: a default that fits a small container.
   */
  HISTORY_MAX_BYTES: integer(64 * MiB, MiB, 64 * 1024 * MiB),
  /**
   * Redis: how long a topic's offset and epoch outlive its last publish. Longer than HISTORY_TTL_MS so a topic
   * that is quiet for a while keeps its offsets (its subscribers then recover nothing rather than being told
   * the history was lost); a day costs ~150 bytes of Redis per topic published or subscribed that day.
   */
  HISTORY_META_TTL_MS: integer(86_400_000, 1000, 365 * 86_400_000),
  /**
   * Redis: a presence entry not refreshed this long is gone (its node crashed): others see it leave. Each node
   * refreshes its entries every third of it; 30 s keeps that at one script per topic every 10 s per node.
   */
  PRESENCE_TTL_MS: integer(30_000, 300, 3_600_000),
  /** Most entries a presence request returns (`truncated: true` past it): a list of 10,000 is ~1 MB of JSON. */
  PRESENCE_MAX_CLIENTS: integer(10_000, 1, 1_000_000),
  /**
   * How often a node announces itself to the cluster view (its record lives 3 periods); unset: NODE_ANNOUNCE_MS
   * of src/cluster.ts (2 s, its reason there). Also the period of the message rates it reports.
   */
  NODE_ANNOUNCE_MS: wholeNumber(50, 600_000).optional(),
  /**
   * The topic definitions (src/topics/define.ts): a TypeScript file whose default export is defineTopics({...}),
   * relative to the working directory. Unset: ./switchboard.config.ts if that file exists, else none.
   */
  SWITCHBOARD_CONFIG: z.string().optional(),
  /** Refuse topics that no pattern of the topic definitions matches (`unknown_topic`); needs definitions. */
  TOPICS_STRICT: boolean(false),
  /** Server processes sharing the port (reusePort); `auto` = one per core. More than 1 needs REDIS_URL. */
  WORKERS: z
    .string()
    .regex(/^(auto|\d+)$/, "must be a whole number from 1 to 256, or auto")
    .transform((s) => (s === "auto" ? navigator.hardwareConcurrency : Number(s)))
    .pipe(z.number().int().min(1, "must be at least 1").max(256, "must be at most 256"))
    .default(1),
  /**
   * Batched delivery: how long a batch may wait for more messages of its topic. 0 sends it at the end of the
   * event-loop tick (no added latency); more trades that much latency for bigger batches (fewer frames).
   */
  BATCH_MAX_DELAY_MS: integer(0, 0, 1000),
  /** Serve the web console at /console (it reads the HTTP API with API_KEY). `false`: 404, nothing built. */
  CONSOLE: boolean(true),
  /** Bearer key of the HTTP API (POST /publish, /api/*); unset disables it (403). */
  API_KEY: apiKey,
  /**
   * The old name of API_KEY, still accepted: loadConfig and configWith resolve it into API_KEY (both set must
   * agree) and leave it unset, so nothing else reads it.
   */
  PUBLISH_API_KEY: apiKey,
  /** Set: every /connect upgrade needs an HS256 JWT signed with it. Unset (and no AUTH_PUBLIC_KEY): open mode. */
  AUTH_SECRET: z.string().min(32, "must be at least 32 characters (HS256 needs 256 bits)").optional(),
  /**
   * PEM SPKI public key: accept RS256 (RSA, 2048+ bits) or ES256 (EC P-256) tokens signed by its private key,
   * alone or with AUTH_SECRET. Parsed here, so a key the verifier could not use stops the start instead of
   * failing every upgrade later.
   */
  AUTH_PUBLIC_KEY: z
    .string()
    .regex(/-----BEGIN PUBLIC KEY-----[\s\S]+-----END PUBLIC KEY-----/, { message: "must be a PEM public key (BEGIN PUBLIC KEY)", abort: true })
    .superRefine((pem, ctx) => {
      try {
        publicKeyAlgorithm(pem);
      } catch (error) {
        ctx.addIssue({ code: "custom", message: (error as Error).message });
      }
    })
    .optional(),
  /**
   * Comma-separated Origins allowed to upgrade (browsers send Origin); unset: any. Written as the browser
   * serializes an origin (lower-case scheme and host, no default port, no trailing slash), since the upgrade
   * check compares the header with this list as exact strings.
   */
  ALLOWED_ORIGINS: z
    .string()
    .transform((list, ctx) => {
      const entries = list.split(",").map((o) => o.trim()).filter(Boolean);
      const origins = new Set<string>();
      for (const entry of entries) {
        try {
          origins.add(originOf(entry));
        } catch (error) {
          ctx.addIssue({ code: "custom", message: `${JSON.stringify(entry)}: ${(error as Error).message}` });
        }
      }
      if (entries.length === 0) ctx.addIssue({ code: "custom", message: "must list at least one origin" });
      return [...origins];
    })
    .optional(),
  /** Refuse tokens without `exp` (they would stay valid forever if leaked). `false` accepts them. */
  AUTH_REQUIRE_EXP: boolean(true),
  /** Inbound messages per second per connection (token bucket); 0 = no limit. */
  RATE_LIMIT_MSGS_PER_S: integer(0, 0, 1_000_000),
  /** Bucket size: messages a connection may send at once before the rate applies. */
  RATE_LIMIT_BURST: integer(100, 1, 1_000_000),
  /** Open WebSocket connections per process; beyond it upgrades get 503. 0 = no limit. */
  MAX_CONNECTIONS: integer(0, 0, 10_000_000),
  /** Open WebSocket connections per client IP per process; beyond it upgrades get 429. 0 = no limit. */
  MAX_CONNECTIONS_PER_IP: integer(0, 0, 10_000_000),
  /** Set by the supervisor for its workers: several processes listen on one port. */
  REUSE_PORT: boolean(false),
}).superRefine((config, ctx) => {
  if (config.REDIS_URL !== undefined && config.REDIS_MAX_PENDING_BYTES < config.MAX_PAYLOAD_BYTES) {
    ctx.addIssue({
      code: "custom",
      path: ["REDIS_MAX_PENDING_BYTES"],
      message: `must be at least MAX_PAYLOAD_BYTES (${config.MAX_PAYLOAD_BYTES}): a publish larger than the bound would never reach other nodes`,
    });
  }
  if (config.HISTORY_META_TTL_MS < config.HISTORY_TTL_MS) {
    ctx.addIssue({
      code: "custom",
      path: ["HISTORY_META_TTL_MS"],
      message: `must be at least HISTORY_TTL_MS (${config.HISTORY_TTL_MS}): a topic's offsets must outlive its messages`,
    });
  }
  // Only between two valid keys: a short one is reported as such, and is refused anyway.
  if (apiKeyConflict(config) && config.API_KEY!.length >= API_KEY_MIN && config.PUBLISH_API_KEY!.length >= API_KEY_MIN) {
    ctx.addIssue({
      code: "custom",
      path: ["API_KEY"],
      message: `differs from PUBLISH_API_KEY=${shownValue("PUBLISH_API_KEY", config.PUBLISH_API_KEY!)}, its old name: set one of them, or both to the same key`,
    });
  }
  if (config.WORKERS > 1 && config.REDIS_URL === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["WORKERS"],
      message: `${config.WORKERS} workers need REDIS_URL: each process has its own topics, so a publish in one would never reach subscribers held by the others`,
    });
  }
});

export type Config = z.output<typeof ConfigSchema>;
const CONFIG_KEYS = Object.keys(ConfigSchema.shape);

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Reads only the variables the schema names; an empty string counts as unset. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const input: Record<string, string> = {};
  for (const key of CONFIG_KEYS) {
    const value = env[key];
    if (value !== undefined && value !== "") input[key] = value;
  }
  const result = ConfigSchema.safeParse(input);
  if (result.success) return withApiKeyResolved(result.data);
  const lines = result.error.issues.map((issue) => {
    const name = String(issue.path[0] ?? "config");
    return maskCredentials(`${name}=${shownValue(name, env[name] ?? "")}: ${issue.message}`);
  });
  throw new ConfigError(lines.length === 1 ? `invalid configuration: ${lines[0]}` : `invalid configuration:\n  ${lines.join("\n  ")}`);
}

/** Variables whose value is a credential: an error names them and gives the length, never the value. */
const SECRETS = new Set(["AUTH_SECRET", "API_KEY", "PUBLISH_API_KEY", "AUTH_PUBLIC_KEY"]);

const apiKeyConflict = (config: Pick<Config, "API_KEY" | "PUBLISH_API_KEY">): boolean =>
  config.API_KEY !== undefined && config.PUBLISH_API_KEY !== undefined && config.API_KEY !== config.PUBLISH_API_KEY;

/** PUBLISH_API_KEY folded into API_KEY, its new name: one key for the rest of the code to read. */
function withApiKeyResolved(config: Config): Config {
  const { PUBLISH_API_KEY: alias, ...rest } = config;
  return alias === undefined ? rest : { ...rest, API_KEY: rest.API_KEY ?? alias };
}

/**
 * A value as an error message may show it: quoted (a stray space or quote shows), except credentials, whose
 * length alone is shown. Error output ends up in CI logs and chat messages.
 */
export function shownValue(name: string, value: string): string {
  return SECRETS.has(name) ? `<hidden: ${value.length} characters>` : JSON.stringify(value);
}

/** The instances REDIS_URL lists (one, or several separated by commas; a comma in a password is written %2C). */
export const redisUrls = (value: string): string[] => value.split(",").map((url) => url.trim());

/** `scheme://user:password@host` -> `scheme://***@host`, wherever a URL appears (REDIS_URL carries its password so). */
export const maskCredentials = (text: string): string => text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s,"]*@/gi, "$1***@");

/**
 * An ALLOWED_ORIGINS entry as browsers send it in `Origin` (`https://Good.Example:443/` -> `https://good.example`);
 * throws the reason for anything that is not an origin, which would otherwise silently match no browser.
 */
function originOf(entry: string): string {
  if (entry.includes("*")) throw new Error("wildcards are not supported: list each origin");
  if (!URL.canParse(entry)) throw new Error("not a URL: write an origin like https://app.example.com");
  const url = new URL(entry);
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`scheme ${url.protocol} is not http: or https:`);
  if (url.username !== "" || url.password !== "") throw new Error("has credentials (user@): an origin never carries them");
  if (url.pathname !== "/") throw new Error(`has a path (${url.pathname}): an origin is scheme://host[:port] only`);
  if (url.search !== "" || entry.includes("?")) throw new Error("has a query: an origin is scheme://host[:port] only");
  if (url.hash !== "" || entry.includes("#")) throw new Error("has a fragment: an origin is scheme://host[:port] only");
  return url.origin;
}

/**
 * Config for tests and embedding: the defaults (or what `env` sets: the plugin passes the process's), then the
 * overrides given.
 */
export function configWith(overrides: Partial<Config> = {}, env: Record<string, string | undefined> = {}): Config {
  if (apiKeyConflict(overrides)) throw new ConfigError("API_KEY and PUBLISH_API_KEY (its old name) differ: set one of them");
  return withApiKeyResolved({ ...loadConfig(env), ...overrides });
}
