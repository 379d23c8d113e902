// The HTTP surface: health, readiness, HTTP publish, and the two WebSocket routes. Elysia performs the upgrade
// and carries the frame types (for Eden); the frames themselves are handled by the Gateway's native handlers.
import type { Server } from "bun";
import { Elysia, status } from "elysia";
import type { Config } from "./config.ts";
import { TOO_DEEP, type Admitted, type Gateway } from "./gateway.ts";
import { valueNestsTooDeep } from "./json-depth.ts";
import { ClientFrame, HttpPublishBody, Route, ServerFrame } from "./protocol.ts";
import { createAdmission } from "./admission.ts";
import type { Logger } from "./log.ts";
import { publishKeyCheck } from "./publish-auth.ts";

const CONNECT_ROUTE = Route.connect;
const ECHO_ROUTE = Route.echo;

export function createApp(config: Config, gateway: Gateway, log: Logger) {
  const startedAt = performance.now();
  const checkPublishKey = publishKeyCheck(config.PUBLISH_API_KEY);
  const admit = createAdmission(config, gateway, log);

  return new Elysia()
    .get("/healthz", ({ set }) => {
      if (gateway.draining) set.status = 503;
      return {
        status: gateway.draining ? ("draining" as const) : ("ok" as const),
        connections: gateway.connections.size,
        uptimeMs: Math.round(performance.now() - startedAt),
      };
    })
    // Ready = can serve everything, cross-node delivery included; 503 while Redis is unreachable or draining.
    .get("/readyz", ({ set }) => {
      const { ready, broker } = gateway.readiness();
      if (!ready) set.status = 503;
      return { status: ready ? ("ready" as const) : ("degraded" as const), broker, draining: gateway.draining };
    })
    .post(
      "/publish",
      ({ body }) => {
        if (valueNestsTooDeep(body.data)) return status(400, { error: TOO_DEEP });
        const refused = gateway.topics.publish(body.topic, body.data);
        if (refused !== undefined) return status(400, { error: refused.message });
        return { status: "published" as const, topic: body.topic };
      },
      {
        body: HttpPublishBody,
        // Always JSON, whatever Content-Type says (curl -d sends form encoding by default).
        parse: "json",
        // `transform` runs before body validation, so a caller without the key learns nothing about the body.
        transform: ({ headers }) => checkPublishKey(headers.authorization),
        error: ({ code, error }) => {
          if (code === "VALIDATION") return status(400, { error: validationMessage(error) });
          if (code === "PARSE") return status(400, { error: "body must be JSON: {\"topic\": string, \"data\": any JSON}" });
        },
      },
    )
    .get("/publish", ({ set }) => {
      set.headers.allow = "POST";
      return status(405, { error: "use POST /publish with {\"topic\": string, \"data\": any JSON}" });
    })
    .get("/metrics", ({ set }) => {
      set.headers["content-type"] = "text/plain; version=0.0.4; charset=utf-8";
      return gateway.renderMetrics();
    })
    .ws(CONNECT_ROUTE, { body: ClientFrame, response: ServerFrame, upgrade: (context) => admit(context, CONNECT_ROUTE) })
    .ws(ECHO_ROUTE, { upgrade: (context) => admit(context, ECHO_ROUTE) })
    // Elysia sends a GET here unless its Upgrade header is exactly "websocket"; RFC 6455 makes the value
    // case-insensitive, so an `Upgrade: WebSocket` client is upgraded here through the same admission.
    .get(CONNECT_ROUTE, (context) => upgradeOrRefuse(context, CONNECT_ROUTE))
    .get(ECHO_ROUTE, (context) => upgradeOrRefuse(context, ECHO_ROUTE));

  async function upgradeOrRefuse(
    context: { request: Request; server: Server<unknown> | null; set: { headers: Record<string, unknown> } },
    route: string,
  ) {
    if (context.request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      context.set.headers.upgrade = "websocket";
      return status(426, { error: "this route speaks WebSocket: send a GET with Upgrade: websocket" });
    }
    // The same checks as the .ws() routes; the gateway's `open` reads what they leave on `data`.
    const data = { request: context.request, server: context.server };
    await admit(data, route);
    if (context.server?.upgrade(context.request, { data })) return;
    const slot = (data as Admitted).slot;
    if (slot !== undefined) gateway.registry.release(slot);
    return status(400, { error: "Expected a websocket connection" });
  }
}

/** One line from zod's issues, e.g. `topic: must be 1-200 characters ...; data: required (null is a value)`. */
function validationMessage(error: unknown): string {
  const issues = (error as { all?: { path?: string; summary?: string; message?: string }[] }).all ?? [];
  const parts = issues.map((i) => {
    const path = (i.path ?? "").replace(/^\//, "");
    return `${path === "" || path === "root" ? "body" : path}: ${i.message ?? i.summary ?? "invalid"}`;
  });
  return parts.length ? parts.join("; ") : "invalid body";
}

export type App = ReturnType<typeof createApp>;
