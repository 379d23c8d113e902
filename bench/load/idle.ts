// Idle-connection generator (its own process): opens `count` WebSocket connections and keeps them open,
// answering the server's pings with pongs so heartbeats flow. Connections are spread over source addresses
// 127.0.0.1..127.0.0.N when there are more than one address's ~28k ephemeral ports can hold.
// Protocol: "@ready" once all are open, then it waits; on SIGTERM it prints "=" + JSON and exits.
import net from "node:net";

interface Args {
  port: number;
  path: string;
  count: number;
}

const args = JSON.parse(process.argv[2]!) as Args;
const PORTS_PER_ADDRESS = 28_000;
const addresses = Math.ceil(args.count / PORTS_PER_ADDRESS);
const PONG = Buffer.from([0x8a, 0x80, 0, 0, 0, 0]); // empty masked pong: server pings carry no payload
const request = (port: number) =>
  `GET ${args.path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;

let open = 0;
let closedByServer = 0;
let pings = 0;
const sockets: net.Socket[] = [];

function connect(index: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const localAddress = addresses > 1 ? `127.0.0.${1 + (index % addresses)}` : undefined;
    const socket = net.connect({ host: "127.0.0.1", port: args.port, localAddress });
    let upgraded = false;
    socket.once("connect", () => socket.write(request(args.port)));
    socket.on("data", (chunk: Buffer) => {
      let bytes = chunk;
      if (!upgraded) {
        const end = bytes.indexOf("\r\n\r\n");
        if (end < 0) return;
        upgraded = true;
        open++;
        resolve();
        bytes = bytes.subarray(end + 4);
      }
      // After the welcome, an idle connection only gets pings: 0x89 0x00 (FIN + ping, no payload).
      for (let i = 0; i + 1 < bytes.length; i++) {
        if (bytes[i] === 0x89 && bytes[i + 1] === 0x00) {
          pings++;
          socket.write(PONG);
          i++;
        }
      }
    });
    socket.on("error", (error) => (upgraded ? undefined : reject(error)));
    socket.on("close", () => {
      if (upgraded) {
        open--;
        closedByServer++;
      }
    });
    sockets.push(socket);
  });
}

for (let i = 0; i < args.count; i += 500) {
  await Promise.all(Array.from({ length: Math.min(500, args.count - i) }, (_, k) => connect(i + k)));
}
console.log("@ready");

process.on("SIGTERM", () => {
  console.log("=" + JSON.stringify({ open, closedByServer, pings }));
  for (const s of sockets) s.destroy();
  process.exit(0);
});
setInterval(() => {}, 1 << 30); // stay alive until SIGTERM
