// Terminal chat over switchboard. Start a server (`bun run src/index.ts`), then in two shells:
//   bun examples/chat.ts alice
//   bun examples/chat.ts bob
// Lines you type go to everyone in the room. Stop and restart the server: both shells reconnect, keep the
// room, and send what you typed meanwhile once the server is back.
import { connect, type Json } from "../src/client.ts";

const [name = `guest-${Math.floor(Math.random() * 1000)}`, room = "lobby", url = "ws://localhost:3000"] = process.argv.slice(2);
const topic = `chat.${room}`;
const client = connect(url, { reconnect: { baseMs: 250, capMs: 5000 } });

client.on("open", ({ reconnected }) => console.log(`* ${reconnected ? "reconnected to" : "joined"} ${topic} as ${name}`));
client.on("reconnecting", ({ attempt, delayMs }) => console.log(`* connection lost, retry #${attempt} in ${delayMs} ms`));
client.on("error", ({ error }) => console.log(`* ${error.message}`));

client.subscribe<{ from: string; text: string }>(topic, ({ from, text }) => {
  if (from !== name) console.log(`<${from}> ${text}`);
});

for await (const line of console) {
  const text = line.trim();
  if (text === "/quit") break;
  if (text === "") continue;
  client.publish(topic, { from: name, text } satisfies Json).catch((e: Error) => console.log(`* not sent: ${e.message}`));
}
client.close();
process.exit(0);
