// The HTTP surface: health, and the two WebSocket routes. Elysia performs the upgrade and carries the frame
// types (for Eden); the frames themselves are handled by the Gateway's native Bun handlers.
import { Elysia, status } from "elysia";
import type { Config } from "./config.ts";
import { CONNECT_ROUTE, ECHO_ROUTE, type Gateway } from "./gateway.ts";
import { ClientFrame, ServerFrame } from "./protocol.ts";

export function createApp(config: Config, gateway: Gateway) {
  const startedAt = performance.now();
  // Refused during shutdown so a load balancer moves new clients to another replica.
  const refuseWhileDraining = () => {
    if (gateway.draining) throw status(503, { error: "server shutting down" });
  };

  return new Elysia()
    .get("/healthz", ({ set }) => {
      if (gateway.draining) set.status = 503;
      return {
        status: gateway.draining ? ("draining" as const) : ("ok" as const),
        connections: gateway.connections.size,
        uptimeMs: Math.round(performance.now() - startedAt),
      };
    })
    .ws(CONNECT_ROUTE, { body: ClientFrame, response: ServerFrame, upgrade: refuseWhileDraining })
    .ws(ECHO_ROUTE, { upgrade: refuseWhileDraining })
    // Elysia routes a GET without `Upgrade: websocket` here rather than to the .ws() route.
    .get(CONNECT_ROUTE, upgradeRequired)
    .get(ECHO_ROUTE, upgradeRequired);
}

function upgradeRequired({ set }: { set: { headers: Record<string, unknown> } }) {
  set.headers.upgrade = "websocket";
  return status(426, { error: "this route speaks WebSocket: send a GET with Upgrade: websocket" });
}

export type App = ReturnType<typeof createApp>;
