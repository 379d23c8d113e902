// The raw fan-out floor (same handler as raw-publish.ts) with all of switchboard's modules loaded: separates
// "a bigger process and heap" from "more work per delivery" (bench/variants.ts).
import "../../src/server.ts";
import { reportHeapOnSignal } from "../lib.ts";
reportHeapOnSignal();
const server = Bun.serve({ port: 0, hostname: "127.0.0.1",
  fetch(req, srv) { return srv.upgrade(req, { data: undefined }) ? undefined : new Response("x", { status: 426 }); },
  websocket: { idleTimeout: 0, sendPings: false, perMessageDeflate: true, publishToSelf: true, maxPayloadLength: 1024 * 1024, backpressureLimit: 1024 * 1024, closeOnBackpressureLimit: true,
    message(ws, message) { const frame = JSON.parse(message as string);
      if (frame.type === "subscribe") { ws.subscribe(frame.topic); ws.send(`{"type":"subscribed","topic":"${frame.topic}"}`); }
      else if (frame.type === "publish") { server.publish(frame.topic, `{"type":"message","topic":"${frame.topic}","data":${JSON.stringify(frame.data)}}`); if (frame.id !== undefined) ws.send(`{"type":"ack","id":${JSON.stringify(frame.id)}}`); } } } });
console.log(`raw publish (switchboard modules loaded) on 127.0.0.1:${server.port}`);
