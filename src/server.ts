// The standalone server: the switchboard plugin (src/plugin.ts) on an otherwise empty Elysia app, listening with
// the gateway's native WebSocket handlers, and a drain-then-stop.
import type { Server } from "bun";
import { Elysia, status } from "elysia";
import type { App } from "./app.ts";
import type { Broker } from "./broker/broker.ts";
import type { ClusterView } from "./cluster.ts";
import type { Config } from "./config.ts";
import type { Gateway } from "./gateway.ts";
import { createSwitchboard, type Switchboard, type SwitchboardDeps } from "./plugin.ts";
import type { TopicPipeline } from "./topics/pipeline.ts";

export interface RunningServer {
  app: App;
  /** The plugin's controls (drain, stop) and parts. */
  switchboard: Switchboard;
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

export type ServerDeps = SwitchboardDeps;

/**
 * Bun closes a connection that sends nothing for this long (timer granularity ~4 s), after its request headers
 * are complete: a stalled body, an idle keep-alive, a handler pending this long. Bun's own default; Elysia
 * raises it to 30. It does not apply to WebSockets once upgraded (their deadline is the heartbeat's), nor to a
 * request whose headers are still arriving (Bun's fixed ~10-14 s, see README Limits).
 */
const HTTP_IDLE_TIMEOUT_S = 10;

export function startServer(config: Config, deps: ServerDeps = {}): RunningServer {
  const switchboard = createSwitchboard(config, deps, { echo: true });
  const app = new Elysia({
    // Elysia finds the path by looking for the first "/" from index 11 of the URL, assuming a host of at least
    // 4 characters: `Host: ws` (what `ws://ws/connect` sends) then gets 404 on /connect and /echo. Bun serves
    // plain http here (TLS, if any, ends at the load balancer), so every URL starts with the 7 characters
    // "http://" and the path is the first "/" from there, whatever the Host.
    handler: { standardHostname: false },
    serve: { idleTimeout: HTTP_IDLE_TIMEOUT_S },
  })
    // An unknown path answers like every other refusal: JSON with the reason (Elysia's own is text/plain).
    .onError(({ code, request }) => {
      if (code === "NOT_FOUND") return status(404, { error: `no route ${new URL(request.url).pathname}: see the README's Routes` });
    })
    .use(switchboard);
  try {
    app.listen({
      port: config.PORT,
      hostname: config.HOST,
      // Elysia turns reusePort on by default: a forgotten dev server would silently take half the traffic.
      // Only the supervisor's workers share a port on purpose.
      reusePort: config.REUSE_PORT,
      websocket: switchboard.websocket as never,
    });
  } catch (error) {
    void switchboard.stop();
    throw error;
  }
  const server = app.server! as Server<unknown>;
  const url = switchboard.url!;

  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    (stopping ??= (async () => {
      // One deadline for every step (the plugin's stop() bounds its own steps too, from its own start).
      const grace = Bun.sleep(config.SHUTDOWN_GRACE_MS);
      switchboard.drain();
      // Close handlers run synchronously, so sockets are gone; stop(true) also ends idle HTTP keep-alives.
      await Promise.race([server.stop(true), grace]);
      await Promise.race([switchboard.stop(), grace]);
    })());

  const { gateway, topics, broker, cluster } = switchboard;
  return { app: app as unknown as App, switchboard, gateway, topics, broker, cluster, server, url, shutdown };
}
