// Entry point: config -> server -> graceful shutdown.
import { ConfigError, loadConfig } from "./config.ts";
import { errorFields, Logger } from "./log.ts";
import { startServer } from "./server.ts";

let config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`switchboard: ${error.message}`);
  process.exit(2);
}

const log = new Logger(config.LOG_LEVEL);
const running = startServer(config, { log });
// Keep serving the other connections whatever one async path does; log it so it gets fixed.
process.on("unhandledRejection", (reason) => log.error("unhandled_rejection", errorFields(reason)));

let signalled = false;
const onSignal = (signal: string) => {
  if (signalled) return;
  signalled = true;
  log.info("shutdown", { signal, connections: running.gateway.connections.size });
  const hardStop = setTimeout(() => process.exit(0), config.SHUTDOWN_GRACE_MS);
  running.shutdown().finally(() => {
    clearTimeout(hardStop);
    process.exit(0);
  });
};
process.on("SIGTERM", () => onSignal("SIGTERM"));
process.on("SIGINT", () => onSignal("SIGINT"));

// Printed last, once the signal handlers are in place: whoever waits for this line may signal at once.
const wsUrl = running.url.replace(/^http/, "ws");
console.log(`switchboard listening on ${running.url} (${wsUrl}/connect, ${wsUrl}/echo)`);
