// Terminal chat over switchboard. Start a server (`bun run src/index.ts`), then in two shells:
//   bun examples/chat.ts alice
//   bun examples/chat.ts bob
// Lines you type go to everyone in the room. Stop and restart the server: both shells reconnect, keep the
// room, and send what you typed meanwhile once the server is back.
import { connect, type Json } from "../src/client.ts";

// A third argument names another server (the URL it prints, e.g. ws://localhost:3000/connect); a server with
// AUTH_SECRET needs a token: SWITCHBOARD_TOKEN=<JWT> bun examples/chat.ts alice.
const [name = `guest-${Math.floor(Math.random() * 1000)}`, room = "lobby", url = "ws://localhost:3000/connect"] = process.argv.slice(2);
const topic = `chat.${room}`;
const token = process.env.SWITCHBOARD_TOKEN;
const client = connect(url, { reconnect: { baseMs: 250, capMs: 5000 }, query: token ? { token } : undefined });
let quitting = false;

client.on("open", ({ reconnected }) => console.log(`* ${reconnected ? "reconnected to" : "joined"} ${topic} as ${name}`));
client.on("reconnecting", ({ attempt, delayMs }) => console.log(`* connection lost, retry #${attempt} in ${delayMs} ms`));
client.on("error", ({ error }) => console.log(`* ${error.name}: ${error.message}`)); // e.g. HandshakeError: ... 401
client.on("close", ({ code, reason, willReconnect }) => {
  if (willReconnect || quitting) return;
  console.log(`* disconnected for good (${code}${reason ? ` ${reason}` : ""})`); // a 403, a 401 or 4001 with no fresh token
  process.exit(1);
});

client.subscribe<{ from: string; text: string }>(topic, ({ from, text }) => {
  if (from !== name) console.log(`<${from}> ${text}`);
});

for await (const line of console) {
  const text = line.trim();
  if (text === "/quit") break;
  if (text === "") continue;
  client.publish(topic, { from: name, text } satisfies Json).catch((e: Error) => console.log(`* not sent: ${e.message}`));
}
quitting = true;
client.close();
process.exit(0);
