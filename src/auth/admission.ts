// Who gets a WebSocket: the checks run in the upgrade hook of both routes, before any socket exists, so a
// refused client gets an HTTP status with a JSON reason. Order: draining (503), Origin (403), handshake
// headers (400), server cap (503), per-IP cap (429), then the token (401, /connect only: /echo is the
// benchmark route).
// The caps reserve a slot in the connection registry before the token check, which is asynchronous: the
// slot counts at once, so simultaneous upgrades cannot all pass a cap that only open connections would fill.
import { status } from "elysia";
import { AuthError, Authenticator, tokenFrom } from "./tokens.ts";
import type { Config } from "../config.ts";
import type { Admitted, Gateway } from "../gateway.ts";
import { Route } from "../protocol.ts";
import type { Logger } from "../log.ts";

interface UpgradeContext {
  request: Request;
  server: { requestIP(request: Request): { address: string } | null } | null;
}

export function createAdmission(config: Config, gateway: Gateway, log: Logger) {
  const authenticator = Authenticator.fromConfig(config);
  const origins = config.ALLOWED_ORIGINS === undefined ? undefined : new Set(config.ALLOWED_ORIGINS);
  const { metrics } = gateway;

  // Declared as a function so TypeScript narrows after a call (an arrow typed `never` only narrows with an
  // explicit annotation on the binding).
  function refuse(reason: string, code: 400 | 401 | 403 | 429 | 503, error: string): never {
    metrics.upgradesRejected.inc(reason);
    throw status(code, { error });
  }

  return async (context: UpgradeContext, route: string): Promise<void> => {
    const admitted = context as unknown as Admitted;
    admitted.gateway = gateway;
    admitted.route = route;
    if (gateway.draining) refuse("draining", 503, "server shutting down");
    // The plugin used where the app's start never reaches it (inside group()): no delivery would work.
    if (!gateway.hub.attached) {
      log.error("not_attached", { hint: NOT_ATTACHED });
      refuse("not_attached", 503, NOT_ATTACHED);
    }
    const origin = context.request.headers.get("origin");
    if (origins !== undefined && (origin === null || !origins.has(origin))) {
      refuse("origin", 403, `origin ${origin ?? "(none)"} is not allowed`);
    }
    // A request that Bun's upgrade would refuse must not hold a slot until its reservation expires: check the
    // handshake headers Bun needs before reserving (otherwise broken upgrades could fill the caps).
    const headers = context.request.headers;
    if (headers.get("sec-websocket-version") !== "13" || !/^[A-Za-z0-9+/]{22}==$/.test(headers.get("sec-websocket-key") ?? "")) {
      refuse("bad_handshake", 400, BAD_HANDSHAKE);
    }
    if (route === Route.connect) {
      const batch = batchOf(context.request.url);
      if (batch === undefined) refuse("bad_query", 400, "batch must be 0 or 1");
      admitted.batch = batch;
    }
    const ip = context.server?.requestIP(context.request)?.address;
    admitted.clientIp = ip;
    const slot = gateway.registry.reserve(ip);
    if (slot === "max_connections") refuse("max_connections", 503, "server is at its connection limit: retry later or elsewhere");
    if (slot === "max_connections_per_ip") {
      refuse("max_connections_per_ip", 429, `at most ${config.MAX_CONNECTIONS_PER_IP} connections per client address`);
    }
    admitted.slot = slot;
    if (authenticator === undefined || route === Route.echo) return;
    try {
      admitted.identity = await authenticator.verify(tokenFrom(context.request.url, context.request.headers.get("authorization") ?? undefined));
    } catch (error) {
      if (slot !== undefined) gateway.registry.release(slot);
      if (!(error instanceof AuthError)) throw error;
      log.warn("auth_failed", { reason: error.reason, ip });
      refuse("unauthorized", 401, error.reason);
    }
  };
}

/** `?batch=1` asks for batched delivery, `0` or nothing for one frame per message; undefined for anything else. */
function batchOf(url: string): boolean | undefined {
  const query = url.indexOf("?");
  if (query < 0) return false;
  const value = new URLSearchParams(url.slice(query + 1)).get("batch");
  return value === null || value === "0" ? false : value === "1" ? true : undefined;
}

export const NOT_ATTACHED = "switchboard is not attached to the listening server: app.use(switchboard(...)) on the app that listens, before listen()";

export const BAD_HANDSHAKE = "not a WebSocket handshake: Sec-WebSocket-Key and Sec-WebSocket-Version: 13 are required";

/** Printed at start in open mode: nobody should run a public server this way by accident. */
export function openModeWarning(config: Config): string | undefined {
  if (config.AUTH_SECRET !== undefined || config.AUTH_PUBLIC_KEY !== undefined) return undefined;
  return "WARNING: open mode: AUTH_SECRET and AUTH_PUBLIC_KEY are unset, so anyone can connect to /connect and subscribe or publish to any topic";
}
