// switchboard inside an existing Elysia app: the app's own routes, plus /connect and the HTTP API from the
// plugin, on one port. `bun examples/embed.ts` (PORT=0 picks a free port), then:
//   curl localhost:3000/hello
//   bun examples/chat.ts alice lobby ws://localhost:3000/connect
// SIGTERM/SIGINT: switchboard drains its sockets (1001), then the app stops.
import { Elysia } from "elysia";
import { switchboard } from "switchboard";
import topics from "./switchboard.config.ts";

// `env: process.env` reads REDIS_URL, AUTH_SECRET, API_KEY, ... as the standalone server does (without it only
// `config` and the defaults count); `config` sets values on top.
const sb = switchboard({ topics, env: process.env, config: { PING_INTERVAL_MS: 5000 } });

const app = new Elysia()
  .get("/hello", () => ({ hello: "from the host app" }))
  .get("/rooms/:room/ping", async ({ params }) => {
    // The host app publishes through the same topic pipeline as the HTTP API: checked against the schema.
    const outcome = await sb.topics.publish(`chat.room.${params.room}`, { user: "server", text: "ping" });
    return typeof outcome === "number" ? { published: true, offset: outcome } : { published: false, ...outcome };
  })
  .use(sb)
  // `websocket: sb.websocket` hands Bun the native handlers (the lean path); without it Elysia's dispatcher
  // calls them, which works the same, a little slower per frame.
  .listen({ port: Number(process.env.PORT ?? 3000), hostname: process.env.HOST ?? "0.0.0.0", reusePort: false, websocket: sb.websocket });

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  await sb.stop(); // sockets closed with 1001, broker released; the app's own routes still answer meanwhile
  await app.stop();
  console.log(`stopped (${signal})`);
  process.exit(0);
};
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
console.log(`embedded switchboard listening on ${sb.url} (/hello, /connect, /api/*)`);
