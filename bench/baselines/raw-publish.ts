// The floor for /connect fan-out: Bun.serve doing JSON.parse + one native publish per message, nothing else
// (no validation, no topic rule, no limits). Subscribe/publish frames use switchboard's JSON shape.
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
    publishToSelf: true,
    // Same native limits as switchboard's defaults, so both servers do the same work per delivery.
    maxPayloadLength: 1024 * 1024,
    backpressureLimit: 1024 * 1024,
    closeOnBackpressureLimit: true,
    message(ws, message) {
      const frame = JSON.parse(message as string);
      if (frame.type === "subscribe") {
        ws.subscribe(frame.topic);
        ws.send(`{"type":"subscribed","topic":"${frame.topic}"}`);
      } else if (frame.type === "publish") {
        server.publish(frame.topic, `{"type":"message","topic":"${frame.topic}","data":${JSON.stringify(frame.data)}}`);
        if (frame.id !== undefined) ws.send(`{"type":"ack","id":${JSON.stringify(frame.id)}}`);
      }
    },
  },
});
console.log(`raw publish on 127.0.0.1:${server.port}`);
