// switchboard as a benchmark subject: the real server (src/server.ts), plus a JS heap report on SIGUSR2 that
// the production entry point has no reason to carry. Configured from the environment like src/index.ts.
import { loadConfig } from "../../src/config.ts";
import { Logger } from "../../src/log.ts";
import { startServer } from "../../src/server.ts";
import { reportHeapOnSignal } from "../lib.ts";

const config = loadConfig();
const running = startServer(config, { log: new Logger(config.LOG_LEVEL) });
reportHeapOnSignal();
process.on("SIGTERM", () => void running.shutdown().finally(() => process.exit(0)));
console.log(`switchboard bench server on ${running.url.replace("http://", "")}`);
