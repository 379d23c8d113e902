// The zod-free half of the protocol registry (re-exported by src/protocol.ts): routes, every close code with
// its reason and reconnect policy, and refused upgrades. The typed client imports this module directly, so a
// browser bundle of the client does not carry zod (measured: 111 KB minified with zod, 20 KB without).

/** The HTTP routes. `connect` and `echo` upgrade to WebSocket; the rest are plain HTTP. */
export const Route = {
  connect: "/connect",
  echo: "/echo",
  publish: "/publish",
  apiPublish: "/api/publish",
  broadcast: "/api/broadcast",
  history: "/api/history",
  presence: "/api/presence",
  presenceStats: "/api/presence_stats",
  disconnect: "/api/disconnect",
  unsubscribe: "/api/unsubscribe",
  nodes: "/api/nodes",
  topics: "/api/topics",
  healthz: "/healthz",
  readyz: "/readyz",
  metrics: "/metrics",
  /** The operator's web console (an HTML page over the HTTP API). */
  console: "/console",
} as const;

/**
 * What a client should do after a close (or a refused upgrade): `retry` with backoff, `new-token` (fetch a
 * fresh token, then retry), or `stop` (the server wants this client gone; retrying would be refused again).
 */
export type ReconnectPolicy = "retry" | "new-token" | "stop";

/**
 * Every close code the server sends, its reason text and the reconnect policy a client should follow. 1006 is
 * not sent (it is what a client sees when the link drops without a close frame, e.g. a backpressure drop).
 */
export const Close = {
  /** SIGTERM/SIGINT: the server is draining. Reconnect elsewhere or later. */
  shuttingDown: { code: 1001, reason: "server shutting down", reconnect: "retry" },
  /** The client kept sending well over its rate after rate_limited errors. Back off, then retry. */
  rateLimit: { code: 1008, reason: "rate limit exceeded", reconnect: "retry" },
  /** A frame larger than MAX_PAYLOAD_BYTES after decompression (sent by Bun's native layer, no reason). */
  messageTooBig: { code: 1009, reason: "", reconnect: "retry" },
  /** A handler failed on this connection; the server and other connections go on. */
  internalError: { code: 1011, reason: "internal error", reconnect: "retry" },
  /** The upgrade was admitted but took too long to open, and its place under the caps was given back. */
  tryAgainLater: { code: 1013, reason: "try again later", reconnect: "retry" },
  /** No frame from the peer within the read deadline (PING_INTERVAL_MS + PING_WAIT_MS). */
  heartbeatTimeout: { code: 4000, reason: "heartbeat timeout", reconnect: "retry" },
  /** The token's `exp` passed while connected. Get a fresh token and reconnect. */
  tokenExpired: { code: 4001, reason: "token expired", reconnect: "new-token" },
  /** A server-side kick (POST /api/disconnect, by an operator or a backend): do not reconnect. */
  disconnected: { code: 4003, reason: "disconnected by server", reconnect: "stop" },
} as const satisfies Record<string, { code: number; reason: string; reconnect: ReconnectPolicy }>;

const closePolicies = new Map<number, ReconnectPolicy>(Object.values(Close).map((c) => [c.code, c.reconnect]));

/** The policy for a close code; codes the server never sends (1006 drops, proxies' codes) are retried. */
export function reconnectAfterClose(code: number): ReconnectPolicy {
  return closePolicies.get(code) ?? "retry";
}

/**
 * Refused upgrades: the HTTP status, when the server sends it, and the reconnect policy. Bodies are
 * `{"error": reason}`.
 */
export const UpgradeRefusal = {
  /** Missing, invalid or expired token. */
  401: { when: "unauthorized", reconnect: "new-token" },
  /** Origin not allowed. */
  403: { when: "origin not allowed", reconnect: "stop" },
  /** MAX_CONNECTIONS_PER_IP reached. */
  429: { when: "too many connections from this address", reconnect: "retry" },
  /** Draining, or MAX_CONNECTIONS reached. */
  503: { when: "unavailable", reconnect: "retry" },
} as const satisfies Record<number, { when: string; reconnect: ReconnectPolicy }>;

/** The policy for a refused upgrade's HTTP status; anything else (proxies, 5xx) is retried. */
export function reconnectAfterRefusal(status: number): ReconnectPolicy {
  return (UpgradeRefusal as Record<number, { reconnect: ReconnectPolicy } | undefined>)[status]?.reconnect ?? "retry";
}
