// Who gets a WebSocket: the checks run in the upgrade hook of both routes, before any socket exists, so a
// refused client gets an HTTP status with a JSON reason. Order: draining (503), Origin (403), server cap
// (503), per-IP cap (429), then the token (401, /connect only: /echo is the benchmark route).
import { status } from "elysia";
import { AuthError, Authenticator, tokenFrom } from "./auth.ts";
import type { Config } from "./config.ts";
import { ECHO_ROUTE, type Admitted, type Gateway } from "./gateway.ts";
import type { Logger } from "./log.ts";

interface UpgradeContext {
  request: Request;
  server: { requestIP(request: Request): { address: string } | null } | null;
}

export function createAdmission(config: Config, gateway: Gateway, log: Logger) {
  const authenticator = Authenticator.fromConfig(config);
  const origins = config.ALLOWED_ORIGINS === undefined ? undefined : new Set(config.ALLOWED_ORIGINS);
  const { metrics } = gateway;

  const refuse = (reason: string, code: 401 | 403 | 429 | 503, error: string): never => {
    metrics.upgradesRejected.inc(reason);
    throw status(code, { error });
  };

  return async (context: UpgradeContext, route: string): Promise<void> => {
    const admitted = context as unknown as Admitted;
    admitted.route = route;
    if (gateway.draining) refuse("draining", 503, "server shutting down");
    const origin = context.request.headers.get("origin");
    if (origins !== undefined && (origin === null || !origins.has(origin))) {
      refuse("origin", 403, `origin ${origin ?? "(none)"} is not allowed`);
    }
    if (config.MAX_CONNECTIONS > 0 && gateway.connections.size >= config.MAX_CONNECTIONS) {
      refuse("max_connections", 503, "server is at its connection limit: retry later or elsewhere");
    }
    const ip = context.server?.requestIP(context.request)?.address;
    if (config.MAX_CONNECTIONS_PER_IP > 0 && ip !== undefined) {
      admitted.clientIp = ip;
      if ((gateway.perIp.get(ip) ?? 0) >= config.MAX_CONNECTIONS_PER_IP) {
        refuse("max_connections_per_ip", 429, `at most ${config.MAX_CONNECTIONS_PER_IP} connections per client address`);
      }
    }
    if (authenticator === undefined || route === ECHO_ROUTE) return;
    try {
      admitted.identity = await authenticator.verify(tokenFrom(context.request.url, context.request.headers.get("authorization") ?? undefined));
    } catch (error) {
      if (!(error instanceof AuthError)) throw error;
      log.warn("auth_failed", { reason: error.reason, ip });
      refuse("unauthorized", 401, error.reason);
    }
  };
}

/** Printed at start in open mode: nobody should run a public server this way by accident. */
export function openModeWarning(config: Config): string | undefined {
  if (config.AUTH_SECRET !== undefined || config.AUTH_PUBLIC_KEY !== undefined) return undefined;
  return "WARNING: open mode: AUTH_SECRET and AUTH_PUBLIC_KEY are unset, so anyone can connect to /connect and subscribe or publish to any topic";
}
