// Entry point: config -> server (or a supervisor of WORKERS servers) -> graceful shutdown.
import { openModeWarning } from "./admission.ts";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { errorFields, Logger } from "./log.ts";
import { startServer } from "./server.ts";
import { supervise } from "./supervisor.ts";

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`switchboard: ${error.message}`);
  process.exit(2);
}

const log = new Logger(config.LOG_LEVEL);
// Keep serving the other connections whatever one async path does; log it so it gets fixed.
process.on("unhandledRejection", (reason) => log.error("unhandled_rejection", errorFields(reason)));

if (config.WORKERS > 1) await supervise(config, log);
else serveHere(config, log);

function serveHere(config: Config, log: Logger): void {
  const running = startServer(config, { log });
  let signalled = false;
  const onSignal = (signal: string) => {
    if (signalled) return;
    signalled = true;
    log.info("shutdown", { signal, connections: running.gateway.connections.size });
    const hardStop = setTimeout(() => process.exit(0), config.SHUTDOWN_GRACE_MS);
    running.shutdown().finally(() => {
      clearTimeout(hardStop);
      log.info("stop", { signal });
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));

  // Printed last, once the signal handlers are in place: whoever waits for this line may signal at once.
  const ws = running.url.replace(/^http/, "ws");
  const broker = config.REDIS_URL === undefined ? "" : " with Redis";
  const warning = openModeWarning(config);
  if (warning !== undefined) console.error(warning);
  log.info("start", {
    url: running.url,
    broker: config.REDIS_URL === undefined ? "memory" : "redis",
    auth: warning === undefined ? "jwt" : "open",
    pid: process.pid,
  });
  console.log(`switchboard listening on ${running.url} (${ws}/connect, ${ws}/echo)${broker}${warning ? " [OPEN MODE]" : ""}`);
}
