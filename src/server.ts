// Assembles a running server: broker, gateway (hub, topic pipeline, connections, heartbeat), cluster view, Elysia
// app, and a drain-then-stop.
import type { Server } from "bun";
import { createApp, type App } from "./app.ts";
import type { Broker } from "./broker/broker.ts";
import { MemoryBroker } from "./broker/memory.ts";
import { RedisBroker } from "./broker/redis.ts";
import { systemClock, type Clock } from "./clock.ts";
import { ClusterView, NODE_ANNOUNCE_MS } from "./cluster.ts";
import type { Config } from "./config.ts";
import { Gateway } from "./gateway.ts";
import type { Hub } from "./hub.ts";
import { Logger } from "./log.ts";
import { MemoryHistory } from "./history/memory.ts";
import { MemoryPresence } from "./presence/memory.ts";
import { PRESENCE_SCRIPTS, RedisPresence } from "./presence/redis.ts";
import type { Presence } from "./presence/presence.ts";
import type { TopicPipeline } from "./topics.ts";

export interface RunningServer {
  app: App;
  gateway: Gateway;
  /** The topic pipeline: publish/subscribe as sockets and the HTTP API do. */
  topics: TopicPipeline;
  server: Server<unknown>;
  broker: Broker;
  /** This node's announcements and the cluster's nodes (GET /api/nodes, /api/topics). */
  cluster: ClusterView;
  /** http://host:port of the listening socket (port resolved when PORT=0). */
  url: string;
  /** Stops upgrades, closes every socket with 1001, then stops listening. Resolves within SHUTDOWN_GRACE_MS. */
  shutdown(): Promise<void>;
}

export interface ServerDeps {
  broker?: Broker;
  log?: Logger;
  /** Who is in each topic (default: this process's memory). */
  presence?: Presence;
  /** Time for heartbeats, token expiry, rate limits and Redis health (tests pass a ManualClock). */
  clock?: Clock;
}

/** `held(topic)`: whether the topic has local subscribers (the memory history keeps their position). */
function createBroker(config: Config, log: Logger, clock: Clock, held: (topic: string) => boolean): Broker {
  const history = config.HISTORY_SIZE > 0 ? { size: config.HISTORY_SIZE, ttlMs: config.HISTORY_TTL_MS } : undefined;
  if (config.REDIS_URL === undefined) {
    return new MemoryBroker(history && new MemoryHistory({ ...history, maxBytes: config.HISTORY_MAX_BYTES, clock, held }));
  }
  return new RedisBroker({
    url: config.REDIS_URL,
    log,
    clock,
    timeoutMs: config.REDIS_TIMEOUT_MS,
    maxPendingBytes: config.REDIS_MAX_PENDING_BYTES,
    history: history && { ...history, metaTtlMs: config.HISTORY_META_TTL_MS },
    scripts: PRESENCE_SCRIPTS,
  });
}

export function startServer(config: Config, deps: ServerDeps = {}): RunningServer {
  const log = deps.log ?? new Logger(config.LOG_LEVEL);
  const clock = deps.clock ?? systemClock;
  // The memory history asks the hub, which the gateway creates after the broker: bound once it exists.
  let hub: Hub | undefined;
  const held = (topic: string) => (hub?.interestIn(topic) ?? 0) > 0;
  const broker = deps.broker ?? createBroker(config, log, clock, held);
  if (config.HISTORY_SIZE > 0 && !broker.storesHistory) {
    // Every subscribe and publish would fail on it (1011): refuse the combination up front instead.
    throw new Error(`HISTORY_SIZE=${config.HISTORY_SIZE} needs a broker with a history store; pass one, or set HISTORY_SIZE=0`);
  }
  // Presence: in Redis beside a Redis broker (on its connection), else this process's memory. The Redis store
  // reports expired and re-added entries to the pipeline, which the gateway creates next: bound once it exists.
  let topics: TopicPipeline | undefined;
  let stopPresence = () => {};
  let presence = deps.presence;
  if (presence === undefined && broker instanceof RedisBroker) {
    const store = new RedisPresence({
      send: (command, args) => broker.command(command, args),
      ttlMs: config.PRESENCE_TTL_MS,
      now: () => clock.wall(),
      expired: (topic, entries) => topics?.expired(topic, entries),
      rejoined: (topic, entries) => topics?.rejoined(topic, entries),
    });
    // One timer for all entries: each round is one script per topic this node has entries in.
    stopPresence = clock.every(Math.max(100, Math.floor(config.PRESENCE_TTL_MS / 3)), () => store.refreshAll());
    presence = store;
  }
  const gateway = new Gateway(config, broker, log, clock, presence ?? new MemoryPresence());
  hub = gateway.hub;
  topics = gateway.topics;
  // The cluster view: on Redis, beside the broker (its node id, its connection); announcing once listening.
  const cluster = new ClusterView({
    gateway,
    clock,
    periodMs: config.NODE_ANNOUNCE_MS ?? NODE_ANNOUNCE_MS,
    redis: broker instanceof RedisBroker ? { nodeId: broker.nodeId, send: (command, args) => broker.command(command, args) } : undefined,
  });
  const app = createApp(config, gateway, log, cluster);
  try {
    app.listen({
      port: config.PORT,
      hostname: config.HOST,
      // Elysia turns reusePort on by default: a forgotten dev server would silently take half the traffic.
      // Only the supervisor's workers share a port on purpose.
      reusePort: config.REUSE_PORT,
      websocket: gateway.websocket as never,
    });
  } catch (error) {
    gateway.stop();
    stopPresence();
    void broker.close();
    throw error;
  }
  const server = app.server! as Server<unknown>;
  gateway.hub.attach(server);
  const host = config.HOST.includes(":") ? `[${config.HOST}]` : config.HOST;
  const url = `http://${host}:${server.port}`;
  cluster.start(url);

  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    (stopping ??= (async () => {
      gateway.drain();
      // Off the cluster's list at once (its record deleted while Redis is still connected, before broker.close).
      const leaving = cluster.close();
      const grace = Bun.sleep(config.SHUTDOWN_GRACE_MS);
      // Close handlers run synchronously, so sockets are gone; stop(true) also ends idle HTTP keep-alives.
      await Promise.race([server.stop(true), grace]);
      gateway.stop();
      stopPresence();
      await Promise.race([leaving, grace]);
      await Promise.race([broker.close(), grace]);
      gateway.hub.detach();
    })());

  return { app, gateway, topics: gateway.topics, broker, cluster, server, url, shutdown };
}
