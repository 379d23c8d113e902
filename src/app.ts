// The HTTP surface: health, readiness, the HTTP API (publish, broadcast, history, presence, the commands
// disconnect and unsubscribe for every node, and the cluster view: nodes and topics), and the WebSocket routes
// (/connect, and /echo for benchmarks). Elysia performs the upgrade and carries the frame types (for Eden); the
// frames themselves are handled by the Gateway (src/plugin.ts mounts these routes on an app).
import type { Server } from "bun";
import { Elysia, ElysiaCustomStatusResponse, status } from "elysia";
import type { Config } from "./config.ts";
import { TOO_DEEP, type Admitted, type Gateway } from "./gateway.ts";
import { readBoundedText } from "./http/bounded-body.ts";
import { textNestsTooDeep } from "./json-depth.ts";
import {
  ClientFrame,
  dataOfStored,
  HttpBroadcastBody,
  HttpDisconnectBody,
  HttpHistoryQuery,
  HttpNodesQuery,
  HttpPresenceQuery,
  HttpPublishBody,
  HttpTopicsQuery,
  HttpUnsubscribeBody,
  Route,
  ServerFrame,
  type ControlCommand,
  type ErrorCode,
  type Json,
} from "./protocol.ts";
import { BrokerUnavailable } from "./broker/broker.ts";
import { BAD_HANDSHAKE, createAdmission } from "./auth/admission.ts";
import { errorFields, type Logger } from "./log.ts";
import { apiKeyCheck } from "./auth/api-key.ts";
import type { ClusterView } from "./cluster.ts";
import { consoleRoutes } from "./console/routes.ts";

/** What a POST body of the HTTP API must look like, as its 400 and 405 answers say it. */
const PUBLISH_SHAPE = '{"topic": string, "data": any JSON}';
const BROADCAST_SHAPE = '{"topics": [string, ...], "data": any JSON}';
const DISCONNECT_SHAPE = '{"user": string} or {"connectionId": string}';
const UNSUBSCRIBE_SHAPE = '{"user": string, "topic": string} or {"connectionId": string, "topic": string}';


const CONNECT_ROUTE = Route.connect;
const ECHO_ROUTE = Route.echo;

export interface RouteOptions<Prefix extends string> {
  /** Mount every route under this path (`/realtime` -> `/realtime/connect`, `/realtime/api/publish`). */
  prefix?: Prefix;
  /** Also serve /echo (the benchmark route). */
  echo?: boolean;
}

export function createRoutes<const Prefix extends string = "">(
  config: Config,
  gateway: Gateway,
  log: Logger,
  cluster: ClusterView,
  options: RouteOptions<Prefix> = {},
) {
  const startedAt = performance.now();
  const checkApiKey = apiKeyCheck(config.API_KEY);
  const admit = createAdmission(config, gateway, log);

  /**
   * The parser and error hook of a POST route of the HTTP API whose body is JSON of `shape`. The body is read
   * only after the key check: Elysia parses a body before any other hook of the route runs (`transform`,
   * `beforeHandle`), so the route's own parser is the first place to refuse a caller. Size-bounded, and
   * nesting-checked on the text, before `JSON.parse` ever sees it.
   */
  function jsonBody(shape: string) {
    const notJson = `body must be JSON: ${shape}`;
    return {
      // Always JSON, whatever Content-Type says (curl -d sends form encoding by default).
      parse: async ({ request }: { request: Request }): Promise<unknown> => {
        checkApiKey(request.headers.get("authorization") ?? undefined);
        const text = await readBoundedText(request, config.MAX_PAYLOAD_BYTES);
        if (textNestsTooDeep(text)) throw status(400, { error: TOO_DEEP });
        try {
          return JSON.parse(text);
        } catch {
          throw status(400, { error: notJson });
        }
      },
      error: ({ code, error, set }: { code: unknown; error: unknown; set: { headers: Record<string, unknown> } }) => {
        if (code === "VALIDATION") return status(400, { error: validationMessage(error) });
        if (code !== "PARSE") return;
        // Elysia wraps whatever the parser throws in a ParseError; the refusal thrown is its cause.
        const refusal = (error as { cause?: unknown }).cause;
        if (!(refusal instanceof ElysiaCustomStatusResponse)) return status(400, { error: notJson });
        // Refused before the body was read (key, size): close the connection rather than let Bun read the
        // rest of a body nobody wants, and so a client cannot hold the socket by trickling it.
        if (refusal.code !== 400) set.headers.connection = "close";
        return refusal;
      },
    };
  }

  /**
   * The options of a GET route of the HTTP API: its query schema, the key checked first (as for POST /publish:
   * a caller without it learns nothing about the query's rules; `transform` runs before the query is
   * validated, `beforeHandle` would run after), and a 400 naming what is wrong with the query.
   */
  const keyedQuery = <Query>(query: Query) => ({
    query,
    transform: ({ request }: { request: Request }) => checkApiKey(request.headers.get("authorization") ?? undefined),
    error: ({ code, error }: { code: unknown; error: unknown }) => {
      if (code === "VALIDATION") return status(400, { error: validationMessage(error) });
    },
  });

  /**
   * Sends a command to every node's connections (the broker's control channel): `{"status":"sent", counted: N}`
   * with N the connections it acted on here (other nodes report nothing back), or 503 when the other nodes
   * cannot be reached (the message says whether this node applied it; src/broker/broker.ts).
   */
  async function sendControl<Counted extends string>(command: ControlCommand, counted: Counted) {
    let acted: number;
    try {
      acted = await gateway.control(command);
    } catch (error) {
      if (!(error instanceof BrokerUnavailable)) throw error;
      return status(503, { error: error.message });
    }
    return { status: "sent" as const, ...({ [counted]: acted } as Record<Counted, number>) };
  }

  /** POST `path`: a backend publishes without a socket. Today's /publish and the API's /api/publish. */
  const publishAt = <Path extends string>(path: Path) =>
    new Elysia()
      .post(
        path,
        async ({ body }) => {
          const outcome = await gateway.topics.publish(body.topic, body.data);
          if (typeof outcome !== "number") return status(httpStatusOf(outcome.code), { error: outcome.message });
          // `offset`: the message's place in the topic's history (history on); the message is stored.
          return outcome > 0 ? { status: "published" as const, topic: body.topic, offset: outcome } : { status: "published" as const, topic: body.topic };
        },
        { body: HttpPublishBody, ...jsonBody(PUBLISH_SHAPE) },
      )
      .use(onlyPost(path, PUBLISH_SHAPE));

  const routes = new Elysia({ prefix: (options.prefix ?? "") as Prefix })
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
    .use(publishAt(Route.publish))
    .use(publishAt(Route.apiPublish))
    // One `data` to many topics, each published as POST /api/publish would (its own offset or refusal).
    .post(
      Route.broadcast,
      async ({ body }) => {
        // Every publish is started before any is awaited: with Redis they share the round trips.
        const outcomes = await Promise.all(body.topics.map((topic) => gateway.topics.publish(topic, body.data)));
        const results = body.topics.map((topic, i) => {
          const outcome = outcomes[i]!;
          if (typeof outcome !== "number") return { topic, error: outcome.code, message: outcome.message };
          return outcome > 0 ? { topic, offset: outcome } : { topic };
        });
        // Every topic refused for the same passing reason (nothing stored, or no answer in time): the answer of
        // a single refused publish, 503 or 504. Otherwise 200, and the results say which topic got what (a
        // refusal of the request itself, 400, would hide which topics it was about).
        const refused = outcomes.filter((o) => typeof o !== "number");
        const first = refused[0];
        if (first !== undefined && refused.length === outcomes.length && refused.every((o) => o.code === first.code) && httpStatusOf(first.code) !== 400) {
          return status(httpStatusOf(first.code), { error: first.message });
        }
        return { status: "published" as const, results };
      },
      { body: HttpBroadcastBody, ...jsonBody(BROADCAST_SHAPE) },
    )
    .use(onlyPost(Route.broadcast, BROADCAST_SHAPE))
    // The history request of the socket protocol, for backends: same key, same refusals as POST /api/publish.
    .get(
      Route.history,
      async ({ query }) => {
        const since = query.since === undefined ? undefined : { epoch: query.epoch!, offset: query.since };
        const read = await gateway.topics.readHistory(query.topic, since, query.limit);
        if ("code" in read) return status(httpStatusOf(read.code), { error: read.message });
        return {
          topic: query.topic,
          epoch: read.epoch,
          offset: read.offset,
          messages: read.messages.map((m) => ({ offset: m.offset, data: JSON.parse(dataOfStored(query.topic, m.frame)) as Json })),
        };
      },
      keyedQuery(HttpHistoryQuery),
    )
    .use(onlyGet(Route.history, "topic=T&since=N&epoch=E&limit=K"))
    // The presence and presence_stats requests of the socket protocol: their frames without `type` and `id`.
    .get(
      Route.presence,
      async ({ query }) => {
        const read = await gateway.topics.readPresence(query.topic, false);
        if ("code" in read) return status(httpStatusOf(read.code), { error: read.message });
        return read.truncated ? { topic: query.topic, clients: read.clients, truncated: true as const } : { topic: query.topic, clients: read.clients };
      },
      keyedQuery(HttpPresenceQuery),
    )
    .use(onlyGet(Route.presence, "topic=T"))
    .get(
      Route.presenceStats,
      async ({ query }) => {
        const read = await gateway.topics.readPresence(query.topic, true);
        if ("code" in read) return status(httpStatusOf(read.code), { error: read.message });
        return { topic: query.topic, clients: read.clients, users: read.users };
      },
      keyedQuery(HttpPresenceQuery),
    )
    .use(onlyGet(Route.presenceStats, "topic=T"))
    // Commands for every node's connections; `closed` / `unsubscribed`: how many this node acted on.
    .post(Route.disconnect, ({ body }) => sendControl({ type: "disconnect", ...body }, "closed"), { body: HttpDisconnectBody, ...jsonBody(DISCONNECT_SHAPE) })
    .use(onlyPost(Route.disconnect, DISCONNECT_SHAPE))
    .post(Route.unsubscribe, ({ body }) => sendControl({ type: "unsubscribe", ...body }, "unsubscribed"), { body: HttpUnsubscribeBody, ...jsonBody(UNSUBSCRIBE_SHAPE) })
    .use(onlyPost(Route.unsubscribe, UNSUBSCRIBE_SHAPE))
    // The cluster view (src/cluster.ts): every node as it last announced itself, this one from its live figures.
    .get(
      Route.nodes,
      async () => {
        const nodes = await cluster.nodes();
        if ("code" in nodes) return status(httpStatusOf(nodes.code), { error: nodes.message });
        return { nodes };
      },
      keyedQuery(HttpNodesQuery),
    )
    .use(onlyGet(Route.nodes))
    // This node's topics, most local subscriptions first, with their cluster-wide count (presence entries).
    .get(
      Route.topics,
      async ({ query }) => {
        const read = await cluster.topics(query.prefix);
        if ("code" in read) return status(httpStatusOf(read.code), { error: read.message });
        // Optional fields only when set: the common answer stays `{"topics":[...]}`.
        return {
          topics: read.topics,
          ...(read.truncated ? { truncated: true as const } : {}),
          ...(read.unavailable > 0 ? { unavailable: read.unavailable } : {}),
        };
      },
      keyedQuery(HttpTopicsQuery),
    )
    .use(onlyGet(Route.topics, "prefix=P"))
    // The web console (src/console/): a page over this API, for the key's holder (CONSOLE=false: not served).
    .use(config.CONSOLE ? consoleRoutes(options.prefix ?? "", config.API_KEY !== undefined, (error) => log.error("console_build_failed", errorFields(error))) : new Elysia())
    .get("/metrics", ({ set }) => {
      set.headers["content-type"] = "text/plain; version=0.0.4; charset=utf-8";
      return gateway.renderMetrics();
    })
    // `open` runs only under Elysia's own dispatcher (an app that listens without `websocket: sb.websocket`):
    // with the gateway's handlers in place, Bun calls them directly (src/plugin.ts).
    .ws(CONNECT_ROUTE, { body: ClientFrame, response: ServerFrame, upgrade: (context) => admit(context, CONNECT_ROUTE), open: (ws) => gateway.dispatchedOpen(ws.raw as never) })
    // Elysia sends a GET here unless its Upgrade header is exactly "websocket"; RFC 6455 makes the value
    // case-insensitive, so an `Upgrade: WebSocket` client is upgraded here through the same admission.
    .get(CONNECT_ROUTE, (context) => upgradeOrRefuse(context, CONNECT_ROUTE));
  // Untyped for Eden on purpose: the benchmark route is not part of the API.
  if (options.echo === true) {
    routes
      .ws(ECHO_ROUTE, { upgrade: (context) => admit(context, ECHO_ROUTE), open: (ws) => gateway.dispatchedOpen(ws.raw as never) })
      .get(ECHO_ROUTE, (context) => upgradeOrRefuse(context, ECHO_ROUTE));
  }
  return routes;

  async function upgradeOrRefuse(
    context: { request: Request; server: Server<unknown> | null; set: { headers: Record<string, unknown> } },
    route: string,
  ) {
    if (context.request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      context.set.headers.upgrade = "websocket";
      return status(426, { error: "this route speaks WebSocket: send a GET with Upgrade: websocket" });
    }
    // The same checks as the .ws() routes; the gateway's `open` reads what they leave on `data` (`open`: what
    // Elysia's own dispatcher calls, when it is in place).
    const data = { request: context.request, server: context.server, open: gateway.dispatchedOpen };
    await admit(data, route);
    if (context.server?.upgrade(context.request, { data })) return;
    const slot = (data as Admitted).slot;
    if (slot !== undefined) gateway.registry.release(slot);
    return status(400, { error: BAD_HANDSHAKE });
  }
}

/**
 * A refusal of the topic pipeline over HTTP: the store down 503, no answer in time 504; the request 400 (its
 * topic or data, a topic the server does not serve, a feature the topic's configuration turns off).
 */
function httpStatusOf(code: ErrorCode): 400 | 503 | 504 {
  return code === "unavailable" ? 503 : code === "unconfirmed" ? 504 : 400;
}

/** A 405 answer naming the one method of the route and how to call it. */
const wrongMethod = (allow: "GET" | "POST", usage: string) => ({ set }: { set: { headers: Record<string, unknown> } }) => {
  set.headers.allow = allow;
  return status(405, { error: usage });
};

/** 405 for the other methods on a POST route of the HTTP API, naming the route and its body. */
function onlyPost(path: string, shape: string) {
  const refuse = wrongMethod("POST", `use POST ${path} with ${shape}`);
  return new Elysia().get(path, refuse).put(path, refuse).patch(path, refuse).delete(path, refuse);
}

/** 405 for the other methods on a GET route of the HTTP API, naming the route and its query (if it takes one). */
function onlyGet(path: string, query?: string) {
  const refuse = wrongMethod("GET", query === undefined ? `use GET ${path}` : `use GET ${path}?${query}`);
  return new Elysia().post(path, refuse).put(path, refuse).patch(path, refuse).delete(path, refuse);
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

/** The routes' type as Eden and the typed client see them (no prefix). */
export type App = ReturnType<typeof createRoutes<"">>;
