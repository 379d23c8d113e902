// Assembles a running server: gateway (sockets + heartbeat), Elysia app, broker, and a drain-then-stop.
import type { Server } from "bun";
import { createApp, type App } from "./app.ts";
import { compressFromFor, MemoryBroker, type Broker } from "./broker.ts";
import type { Config } from "./config.ts";
import { Gateway } from "./gateway.ts";
import { Logger } from "./log.ts";
import { RedisBroker } from "./redis-broker.ts";

export interface RunningServer {
  app: App;
  gateway: Gateway;
  server: Server<unknown>;
  broker: Broker;
  /** http://host:port of the listening socket (port resolved when PORT=0). */
  url: string;
  /** Stops upgrades, closes every socket with 1001, then stops listening. Resolves within SHUTDOWN_GRACE_MS. */
  shutdown(): Promise<void>;
}

export interface ServerDeps {
  broker?: Broker;
  log?: Logger;
}

export function startServer(config: Config, deps: ServerDeps = {}): RunningServer {
  const log = deps.log ?? new Logger(config.LOG_LEVEL);
  const compressFrom = compressFromFor(config);
  const broker =
    deps.broker ??
    (config.REDIS_URL === undefined
      ? new MemoryBroker(compressFrom)
      : new RedisBroker({ url: config.REDIS_URL, log, compressFrom }));
  const gateway = new Gateway(config, broker, log);
  const app = createApp(config, gateway, log);
  app.listen({
    port: config.PORT,
    hostname: config.HOST,
    // Elysia turns reusePort on by default: a forgotten dev server would silently take half the traffic.
    // Only the supervisor's workers share a port on purpose.
    reusePort: config.REUSE_PORT,
    websocket: gateway.websocket as never,
  });
  const server = app.server!;
  broker.attach(server as Server<unknown>);
  const host = config.HOST.includes(":") ? `[${config.HOST}]` : config.HOST;
  const url = `http://${host}:${server.port}`;

  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    (stopping ??= (async () => {
      gateway.drain();
      const grace = Bun.sleep(config.SHUTDOWN_GRACE_MS);
      // Close handlers run synchronously, so sockets are gone; stop(true) also ends idle HTTP keep-alives.
      await Promise.race([server.stop(true), grace]);
      gateway.stop();
      await Promise.race([broker.close(), grace]);
    })());

  return { app, gateway, broker, server: server as Server<unknown>, url, shutdown };
}
