// switchboard as an Elysia plugin: `app.use(switchboard({...}))` mounts /connect and the HTTP API on an app with
// the broker, presence, heartbeat and auth of the standalone server, which is this plugin on an otherwise
// empty app (src/server.ts): one code path.
//
// Two ways the app can run the sockets, both handled by the same gateway handlers:
// - `app.listen({ port, websocket: sb.websocket })`: Bun calls the gateway's native handlers directly (the
//   standalone server does this; the lean path the benchmarks measure);
// - `app.listen(port)`: Elysia's dispatcher calls `ws.data.<event>(ws, ...)`, and the connection's Conn hands
//   each event to those handlers (src/gateway.ts). Bun's websocket options (payload limit, backpressure,
//   deflate, no idle timeout) are set on the app's config here, before it listens, for both.
import type { AnyElysia } from "elysia";
import type { WebSocketHandler } from "bun";
import { createRoutes } from "./app.ts";
import type { Broker } from "./broker/broker.ts";
import { MemoryBroker } from "./broker/memory.ts";
import { RedisBroker } from "./broker/redis.ts";
import { ShardedBroker } from "./broker/sharded.ts";
import { systemClock, type Clock } from "./clock.ts";
import { ClusterView, NODE_ANNOUNCE_MS } from "./cluster.ts";
import { ConfigError, configWith, redisUrls, type Config } from "./config.ts";
import { Gateway, type Conn } from "./gateway.ts";
import type { Hub } from "./hub.ts";
import { Logger } from "./log.ts";
import { MemoryHistory } from "./history/memory.ts";
import { MemoryPresence } from "./presence/memory.ts";
import { PRESENCE_SCRIPTS, RedisPresence } from "./presence/redis.ts";
import type { Presence } from "./presence/presence.ts";
import type { TopicDefinitions } from "./topics/define.ts";
import type { TopicPipeline } from "./topics/pipeline.ts";
import { TopicRules } from "./topics/rules.ts";

export interface SwitchboardDeps {
  /** The topic definitions (defineTopics): schemas, per-topic history and presence, who publishes. */
  topics?: TopicDefinitions;
  broker?: Broker;
  log?: Logger;
  /** Who is in each topic (default: in Redis beside a Redis broker, else this process's memory). */
  presence?: Presence;
  /** Time for heartbeats, token expiry, rate limits and Redis health (tests pass a ManualClock). */
  clock?: Clock;
}

export interface SwitchboardOptions<Prefix extends string = ""> extends SwitchboardDeps {
  /**
   * Settings (the names of README's Configuration) over the defaults, or over `env`. PORT, HOST, WORKERS,
   * REUSE_PORT and SWITCHBOARD_CONFIG are the app's business when embedded and are not used.
   */
  config?: Partial<Config>;
  /**
   * Variables to read settings from as the standalone server does (`env: process.env`). Not read unless
   * given: an app's own API_KEY, REDIS_URL or LOG_LEVEL must not configure switchboard by accident.
   */
  env?: Record<string, string | undefined>;
  /** Mount every route under this path: `/realtime` serves `/realtime/connect`, `/realtime/api/publish`, ... */
  prefix?: Prefix;
  /** Also serve /echo, the benchmark route (default false). */
  echo?: boolean;
}

/** What the plugin gives its host besides the routes. */
export interface SwitchboardControls {
  readonly config: Config;
  readonly gateway: Gateway;
  /** The topic pipeline: publish/subscribe as sockets and the HTTP API do. */
  readonly topics: TopicPipeline;
  readonly broker: Broker;
  readonly cluster: ClusterView;
  /** The native handlers: pass them to `listen({ websocket })` for the lean path. */
  readonly websocket: WebSocketHandler<Conn>;
  /** http://host:port of the app once it listens. */
  readonly url: string | undefined;
  /** Refuses upgrades and closes every socket with 1001 (the app keeps serving its other routes). */
  drain(): void;
  /**
   * Drains, then leaves the cluster view and releases timers, presence and the broker, within
   * SHUTDOWN_GRACE_MS. The app itself keeps running: stop it after (`app.stop()`).
   */
  stop(): Promise<void>;
}

/**
 * The plugin: `new Elysia().get("/", ...).use(switchboard({ topics }))`, configured by `config` over the
 * defaults (and over `env`, when given); throws ConfigError for a setting that cannot work, with the message
 * the standalone server would print. Use it on the app that listens, before it listens.
 */
export function switchboard<const Prefix extends string = "">(options: SwitchboardOptions<Prefix> = {}) {
  const { config: overrides, env, prefix, echo, ...deps } = options;
  return createSwitchboard(configWith(overrides, env), deps, { prefix, echo });
}

/** The plugin for a complete configuration (the standalone server's, already read from the environment). */
export function createSwitchboard<const Prefix extends string = "">(
  config: Config,
  deps: SwitchboardDeps,
  mount: { prefix?: Prefix; echo?: boolean } = {},
) {
  if (mount.prefix !== undefined && !PREFIX.test(mount.prefix)) {
    throw new ConfigError(`invalid prefix ${JSON.stringify(mount.prefix)}: path segments of letters, digits and . _ ~ - (e.g. /realtime), or ""`);
  }
  if (config.TOPICS_STRICT && deps.topics === undefined) {
    throw new ConfigError("invalid configuration: TOPICS_STRICT=true refuses every topic without topic definitions: set SWITCHBOARD_CONFIG (or pass topics)");
  }
  const log = deps.log ?? new Logger(config.LOG_LEVEL);
  const clock = deps.clock ?? systemClock;
  const rules = new TopicRules(config, deps.topics);
  // The memory history asks the hub, which the gateway creates after the broker: bound once it exists.
  let hub: Hub | undefined;
  const held = (topic: string) => (hub?.interestIn(topic) ?? 0) > 0;
  const broker = deps.broker ?? createBroker(config, rules, log, clock, held);
  if (rules.storesHistory && !broker.storesHistory) {
    // Every subscribe and publish would fail on it (1011): refuse the combination up front instead.
    throw new ConfigError(`history is on (HISTORY_SIZE=${config.HISTORY_SIZE}, or a topic definition) but the broker has no history store: pass one, or set HISTORY_SIZE=0`);
  }
  // Presence: in Redis beside a Redis broker (on its connection), else this process's memory. The Redis store
  // reports expired and re-added entries to the pipeline, which the gateway creates next: bound once it exists.
  let topics: TopicPipeline | undefined;
  let stopPresence = () => {};
  let presence = deps.presence;
  const redis = broker instanceof RedisBroker || broker instanceof ShardedBroker ? broker : undefined;
  if (presence === undefined && redis !== undefined) {
    const store = new RedisPresence({
      sendFor: (topic) => redis.sendFor(topic),
      ttlMs: config.PRESENCE_TTL_MS,
      now: () => clock.wall(),
      expired: (topic, entries) => topics?.expired(topic, entries),
      rejoined: (topic, entries) => topics?.rejoined(topic, entries),
    });
    // One timer for all entries: each round is one script per topic this node has entries in.
    stopPresence = clock.every(Math.max(100, Math.floor(config.PRESENCE_TTL_MS / 3)), () => store.refreshAll());
    presence = store;
  }
  const gateway = new Gateway(config, broker, log, clock, presence ?? new MemoryPresence(), rules);
  hub = gateway.hub;
  topics = gateway.topics;
  // The cluster view: on Redis, beside the broker (its node id, its connection); announcing once listening.
  const cluster = new ClusterView({
    gateway,
    clock,
    periodMs: config.NODE_ANNOUNCE_MS ?? NODE_ANNOUNCE_MS,
    redis: redis && { nodeId: redis.nodeId, send: redis.sendFor() },
  });
  const routes = createRoutes(config, gateway, log, cluster, mount);

  let url: string | undefined;
  let leaving: Promise<void> | undefined;
  const drain = () => {
    if (gateway.draining) return;
    gateway.drain();
    // Off the cluster's list at once (its record deleted while Redis is still connected, before broker.close).
    leaving = cluster.close();
  };
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      drain();
      const grace = Bun.sleep(config.SHUTDOWN_GRACE_MS);
      gateway.stop();
      stopPresence();
      await Promise.race([leaving, grace]);
      await Promise.race([broker.close(), grace]);
      gateway.hub.detach();
    })());

  const plugin = (app: AnyElysia) => {
    if (app.server) throw new Error("switchboard: use() it before the app listens (it sets the app's WebSocket options)");
    // Bun's pub/sub topics and WebSocket handlers are one set per server: two switchboards on one app would
    // deliver each other's messages and serve each other's sockets.
    if (mounted.has(app)) throw new Error("switchboard: one per app (Bun's topics and WebSocket handlers are per server): use one plugin, or several topic patterns");
    mounted.add(app);
    // Bun's websocket options for the whole server (one per Bun.serve): the gateway's. Under Elysia's
    // dispatcher its event handlers are replaced, but `error` (recovery of one socket) stays.
    app.config.websocket = { ...app.config.websocket, ...(gateway.websocket as object) };
    app.onStart((root) => {
      const server = root.server;
      if (server === null) return;
      // The app that listens: its WebSocket config reaches Bun only if it is the one configured above.
      gateway.serverOptions = (root.config.websocket as { error?: unknown } | undefined)?.error === gateway.websocket.error;
      gateway.hub.attach(server);
      url = server.url.origin;
      cluster.start(url);
    });
    // An app stopped without stop() first still releases the broker and timers, once Bun's stop returns: with
    // `app.stop(true)` Bun closes the sockets (1001); a plain `app.stop()` waits for every socket to end.
    app.onStop(() => void stop());
    return app.use(routes) as unknown as typeof routes;
  };
  const controls: SwitchboardControls = {
    config,
    gateway,
    topics: gateway.topics,
    broker,
    cluster,
    websocket: gateway.websocket,
    get url() {
      return url;
    },
    drain,
    stop,
  };
  // Descriptors, not Object.assign: `url` is a getter that must stay live.
  return Object.defineProperties(plugin, Object.getOwnPropertyDescriptors(controls)) as typeof plugin & SwitchboardControls;
}

export type Switchboard = ReturnType<typeof createSwitchboard<"">>;

/** A mount prefix: path segments only (it ends up in URLs and in the console's page). */
const PREFIX = /^(\/[A-Za-z0-9._~-]+)*$/;

/** The apps a switchboard is mounted on. */
const mounted = new WeakSet<AnyElysia>();

/** `held(topic)`: whether the topic has local subscribers (the memory history keeps their position). */
function createBroker(config: Config, rules: TopicRules, log: Logger, clock: Clock, held: (topic: string) => boolean): Broker {
  // The store's own retention is the environment's; topics with a definition pass theirs on every append.
  const history = rules.storesHistory ? { size: Math.max(1, config.HISTORY_SIZE), ttlMs: config.HISTORY_TTL_MS } : undefined;
  if (config.REDIS_URL === undefined) {
    return new MemoryBroker(history && new MemoryHistory({ ...history, maxBytes: config.HISTORY_MAX_BYTES, clock, held }));
  }
  // One broker per listed instance; several: topics are spread over them by a hash of their name.
  const urls = redisUrls(config.REDIS_URL);
  const nodeId = crypto.randomUUID().slice(0, 8);
  const refused = { value: false };
  const brokers = urls.map(
    (url, index) =>
      new RedisBroker({
        nodeId,
        placement: { index, count: urls.length, refused },
        url,
        log,
        clock,
        timeoutMs: config.REDIS_TIMEOUT_MS,
        maxPendingBytes: config.REDIS_MAX_PENDING_BYTES,
        history: history && { ...history, metaTtlMs: config.HISTORY_META_TTL_MS },
        scripts: PRESENCE_SCRIPTS,
      }),
  );
  return brokers.length === 1 ? brokers[0]! : new ShardedBroker(brokers);
}
