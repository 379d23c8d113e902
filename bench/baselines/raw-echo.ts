export {}; // a module: its top-level names stay its own
// The floor for /echo: Bun.serve doing nothing but send the message back. Same Bun options as switchboard.
const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch(req, srv) {
    return srv.upgrade(req, { data: undefined }) ? undefined : new Response("upgrade", { status: 426 });
  },
  websocket: {
    idleTimeout: 0,
    sendPings: false,
    perMessageDeflate: process.env.PERMESSAGE_DEFLATE !== "false",
    maxPayloadLength: 1024 * 1024,
    backpressureLimit: 1024 * 1024,
    closeOnBackpressureLimit: true,
    message(ws, message) {
      ws.send(message);
    },
  },
});
console.log(`raw echo on 127.0.0.1:${server.port}`);
