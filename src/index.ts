// Entry point: config and topic definitions -> server (or a supervisor of WORKERS servers) -> graceful shutdown.
// Exit codes: 0 after a drain, 1 a supervisor that gave up (or a crash), 2 bad configuration (topic definitions
// included), 3 cannot listen.
// A start-up failure is one line on stderr naming the variable, never a stack trace or a secret's value.
import { openModeWarning } from "./auth/admission.ts";
import { importPublicKey } from "./auth/tokens.ts";
import { ConfigError, loadConfig, redisUrls, shownValue, type Config } from "./config.ts";
import { errorFields, Logger } from "./log.ts";
import { startServer } from "./server.ts";
import { supervise } from "./supervisor.ts";
import type { TopicDefinitions } from "./topics/define.ts";
import { loadTopicDefinitions } from "./topics/load.ts";

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`switchboard: ${error.message}`);
  process.exit(2);
}
// loadConfig parsed the key; this is the WebCrypto import the verifier will use, so it cannot fail later.
if (config.AUTH_PUBLIC_KEY !== undefined) {
  try {
    await importPublicKey(config.AUTH_PUBLIC_KEY);
  } catch (error) {
    const shown = shownValue("AUTH_PUBLIC_KEY", config.AUTH_PUBLIC_KEY);
    console.error(`switchboard: invalid configuration: AUTH_PUBLIC_KEY=${shown}: cannot be imported (${(error as Error).message})`);
    process.exit(2);
  }
}

// Loaded here also when WORKERS > 1 (each worker loads it again): a broken file stops the start with exit 2
// instead of every worker failing.
let topics: TopicDefinitions | undefined;
try {
  topics = await loadTopicDefinitions(config);
  if (config.TOPICS_STRICT && topics === undefined) {
    throw new ConfigError("invalid configuration: TOPICS_STRICT=true refuses every topic without topic definitions: set SWITCHBOARD_CONFIG");
  }
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`switchboard: ${error.message}`);
  process.exit(2);
}

const log = new Logger(config.LOG_LEVEL);
// Keep serving the other connections whatever one async path does; log it so it gets fixed.
process.on("unhandledRejection", (reason) => log.error("unhandled_rejection", errorFields(reason)));

try {
  if (config.WORKERS > 1) await supervise(config, log);
  else serveHere(config, log, topics);
} catch (error) {
  const reason = listenFailure(config, error);
  if (reason === undefined) throw error;
  console.error(`switchboard: ${reason}`);
  process.exit(3);
}

/** One line for a failed bind (Bun throws from listen with the framework's source excerpt); else undefined. */
function listenFailure(config: Config, error: unknown): string | undefined {
  const { code, syscall } = (error ?? {}) as { code?: unknown; syscall?: unknown };
  if (syscall !== "listen") return undefined;
  const { PORT: port, HOST: host } = config;
  switch (code) {
    case "EADDRINUSE":
      return `port ${port} is already in use on ${host}`;
    case "EACCES":
      return `cannot listen on port ${port} of HOST=${host}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)`;
    case "EADDRNOTAVAIL":
      return `cannot listen on HOST=${host}: address not available on this machine`;
    case "EINVAL":
      return `cannot listen on HOST=${host}: not an address this machine can bind`;
    default:
      return `cannot listen on HOST=${host} port ${port}: ${(error as Error).message}`;
  }
}

function serveHere(config: Config, log: Logger, topics: TopicDefinitions | undefined): void {
  const running = startServer(config, { log, topics });
  let signalled = false;
  const onSignal = (signal: string) => {
    if (signalled) return;
    signalled = true;
    log.info("shutdown", { signal, connections: running.gateway.connections.size });
    // shutdown() bounds every step by SHUTDOWN_GRACE_MS itself (tested with a drain that never settles).
    running.shutdown().finally(() => {
      log.info("stop", { signal });
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
  if (process.env.SWITCHBOARD_WORKER !== undefined) {
    // A supervisor killed with SIGKILL cannot stop its workers: they would keep the port and serve alone,
    // orphaned. Re-parenting (the parent pid changes) means the supervisor is gone: drain and exit.
    const supervisor = process.ppid;
    setInterval(() => process.ppid !== supervisor && onSignal("supervisor exited"), 1000).unref(); // one syscall a second
  }

  // Printed last, once the signal handlers are in place: whoever waits for this line may signal at once.
  const ws = running.url.replace(/^http/, "ws");
  const instances = config.REDIS_URL === undefined ? 0 : redisUrls(config.REDIS_URL).length;
  const broker = instances === 0 ? "" : instances === 1 ? " with Redis" : ` with Redis (${instances} instances, topics sharded)`;
  const warning = openModeWarning(config);
  if (warning !== undefined) console.error(warning);
  log.info("start", {
    url: running.url,
    broker: instances === 0 ? "memory" : "redis",
    redisInstances: instances,
    auth: warning === undefined ? "jwt" : "open",
    topicPatterns: topics?.entries.length ?? 0,
    pid: process.pid,
  });
  console.log(`switchboard listening on ${running.url} (${ws}/connect, ${ws}/echo)${broker}${warning ? " [OPEN MODE]" : ""}`);
}
