// The floor for /echo: Bun.serve doing nothing but send the message back. Same Bun options as switchboard.
import { reportHeapOnSignal } from "../lib.ts";

reportHeapOnSignal();
const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch(req, srv) {
    return srv.upgrade(req, { data: undefined }) ? undefined : new Response("upgrade", { status: 426 });
  },
  websocket: {
    // Idle-connection runs set IDLE_PINGS=1 so Bun pings (its minimum idleTimeout, 8 s: a ping about every 4 s).
    idleTimeout: process.env.IDLE_PINGS === "1" ? 8 : 0,
    sendPings: process.env.IDLE_PINGS === "1",
    perMessageDeflate: process.env.PERMESSAGE_DEFLATE !== "false",
    maxPayloadLength: 1024 * 1024,
    backpressureLimit: 1024 * 1024,
    closeOnBackpressureLimit: true,
    // The typed sends, as switchboard's /echo uses: Bun's JIT calls their fast paths directly, where `send`
    // first sniffs its argument (~40 more instructions per echo). The floor is the least Bun can do.
    message(ws, message) {
      if (typeof message === "string") ws.sendText(message, false);
      else ws.sendBinary(message, false);
    },
  },
});
console.log(`raw echo on 127.0.0.1:${server.port}`);
