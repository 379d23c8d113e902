// The raw echo floor with all of switchboard's modules loaded (Elysia, zod, jose...) but the same one-line
// handler: separates "a bigger process and heap" from "more work per message" (bench/echo-variants.ts).
import "../../src/server.ts";
import { reportHeapOnSignal } from "../lib.ts";
reportHeapOnSignal();
const server = Bun.serve({ port: 0, hostname: "127.0.0.1",
  fetch(req, srv) { return srv.upgrade(req, { data: undefined }) ? undefined : new Response("x", { status: 426 }); },
  websocket: { idleTimeout: 0, sendPings: false, perMessageDeflate: true, maxPayloadLength: 1024 * 1024, backpressureLimit: 1024 * 1024, closeOnBackpressureLimit: true,
    message(ws, message) { if (typeof message === "string") ws.sendText(message, false); else ws.sendBinary(message, false); } } });
console.log(`raw echo (switchboard modules loaded) on 127.0.0.1:${server.port}`);
