// Writes docs/console/<view>.png (signin, nodes, topics, topic, publish) for the README: a real server with a
// realistic load (clients joining over a few seconds, chat rooms with presence info and history, price ticks),
// its console driven in headless Chromium by test/cdp.ts. Run: `bun scripts/console-screenshots.ts`
// (needs Debian's `chromium`; takes ~20 s, gives up after 120 s). Light scheme, 1280x800.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { connect, type SwitchboardClient } from "../src/client.ts";
import { configWith } from "../src/config.ts";
import { Logger } from "../src/log.ts";
import { startServer } from "../src/server.ts";
import { defineTopics } from "../src/topics/define.ts";
import { Browser, chromiumPath } from "../test/cdp.ts";

const OUT = join(import.meta.dir, "..", "docs", "console");
const KEY = "console-screenshots-key-0123456789";
const LIMIT_MS = 120_000;

if (chromiumPath === null) {
  console.error("console-screenshots: chromium is not installed (apt-get install chromium)");
  process.exit(2);
}

const topics = defineTopics({
  "chat.*": { schema: z.object({ user: z.string(), text: z.string() }), history: { size: 100 } },
  "prices.*": { schema: z.object({ symbol: z.string(), price: z.number() }), history: { size: 20 } },
  "orders.*": { publish: "server" },
});
const config = configWith({ PORT: 0, HOST: "127.0.0.1", LOG_LEVEL: "silent", API_KEY: KEY });
const server = startServer(config, { log: new Logger(config.LOG_LEVEL), topics });
const port = server.server.port!;
const ws = `ws://127.0.0.1:${port}/connect`;
const clients: SwitchboardClient[] = [];
let browser: Browser | undefined;
let ticker: ReturnType<typeof setInterval> | undefined;

async function cleanup(): Promise<void> {
  clearInterval(ticker);
  for (const c of clients) c.close();
  await browser?.close();
  await server.shutdown();
}

const guard = setTimeout(() => {
  console.error(`console-screenshots: gave up after ${LIMIT_MS} ms`);
  void cleanup().finally(() => process.exit(1));
}, LIMIT_MS);

/** Polls `check` until true, at most `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(50);
  }
}

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" } });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

const people = [
  { name: "ann", status: "online", rooms: ["chat.lobby", "chat.support", "news.tech"] },
  { name: "bob", status: "online", rooms: ["chat.lobby", "news.sports", "prices.BTC-USD"] },
  { name: "chen", status: "away", rooms: ["chat.lobby", "chat.design", "news.tech", "prices.ETH-USD"] },
  { name: "dara", status: "online", rooms: ["chat.lobby", "chat.design", "news.world"] },
  { name: "eli", status: "busy", rooms: ["chat.lobby", "prices.BTC-USD", "prices.ETH-USD", "prices.SOL-USD"] },
  { name: "fay", status: "online", rooms: ["chat.lobby", "news.sports", "news.world"] },
  { name: "gus", status: "away", rooms: ["chat.lobby", "chat.support"] },
  { name: "hana", status: "online", rooms: ["chat.lobby", "chat.design", "prices.BTC-USD", "news.tech"] },
  { name: "agent-1", status: "on duty", rooms: ["chat.support"] },
  { name: "pricing-feed", status: "service", rooms: ["prices.BTC-USD", "prices.ETH-USD", "prices.SOL-USD"] },
  { name: "orders-eu", status: "service", rooms: ["orders.eu", "orders.all"] },
  { name: "orders-us", status: "service", rooms: ["orders.us", "orders.all"] },
];
const lines = [
  "morning all",
  "deploy of 1.8.2 is out",
  "anyone seen the latency graph?",
  "p99 back under 40 ms",
  "lunch?",
  "the new console is live at /console",
  "moving the retro to 15:00",
  "thanks!",
];

async function shot(name: string): Promise<void> {
  const bytes = await browser!.screenshot(join(OUT, `${name}.png`));
  console.log(`docs/console/${name}.png (${bytes} bytes)`);
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  browser = await Browser.launch();
  await browser.emulateColorScheme("light");
  await browser.goto(`http://127.0.0.1:${port}/console`);
  await browser.waitFor(`!document.getElementById("signin").hidden`, 10_000, "the sign-in form");
  await browser.click("header h1"); // no focus ring in the picture
  await shot("signin");

  await browser.type("#key", KEY);
  await browser.press("Enter");
  await browser.waitFor(`!document.getElementById("app").hidden`, 10_000, "the app");

  // Clients arrive over a few seconds while chat and prices flow: the charts get a shape.
  let tick = 0;
  const prices: Record<string, number> = { "BTC-USD": 97_250, "ETH-USD": 3_480, "SOL-USD": 182 };
  ticker = setInterval(() => {
    tick++;
    const feed = clients[9];
    if (feed !== undefined) {
      for (const symbol of Object.keys(prices)) {
        prices[symbol] = Math.round(prices[symbol]! * (1 + (Math.sin(tick / 7 + symbol.length) * 0.002)) * 100) / 100;
        void feed.publish(`prices.${symbol}`, { symbol, price: prices[symbol]! }).catch(() => {});
      }
    }
    const speaker = clients[tick % Math.max(1, Math.min(clients.length, 8))];
    if (speaker !== undefined && tick % 3 === 0) {
      const who = people[tick % Math.max(1, Math.min(clients.length, 8))]!.name;
      void speaker.publish("chat.lobby", { user: who, text: lines[tick % lines.length]! }).catch(() => {});
    }
  }, 100);
  for (const person of people) {
    const client = connect(ws);
    clients.push(client);
    for (const room of person.rooms) client.subscribe(room, () => {}, { info: { name: person.name, status: person.status } });
    await client.ready(10_000);
    await Bun.sleep(600);
  }
  const expected = people.reduce((n, p) => n + p.rooms.length, 0);
  await until(
    async () => (await api<{ topics: { local: number }[] }>("/api/topics")).topics.reduce((n, t) => n + t.local, 0) === expected,
    10_000,
    "every subscription",
  );
  for (const region of ["eu", "us"]) {
    for (let i = 1; i <= 3; i++) await api("/api/publish", { method: "POST", body: JSON.stringify({ topic: `orders.${region}`, data: { id: `${region}-${1000 + i}`, total: 19.9 * i } }) });
  }
  await Bun.sleep(4000); // a few more poll rounds for the charts
  await browser.waitFor(`document.getElementById("total-connections").textContent === "${people.length}"`, 10_000, "every connection");
  await shot("nodes");

  await browser.click('button[data-view="topics"]');
  const topicCount = new Set(people.flatMap((p) => p.rooms)).size;
  await browser.waitFor(`document.querySelectorAll("#topics tr[data-topic]").length === ${topicCount}`, 10_000, "the topics");
  await shot("topics");

  await browser.click('#topics tr[data-topic="chat.lobby"] button.open');
  await browser.waitFor(`document.getElementById("presence-count").textContent === "8" && document.querySelectorAll("#history li").length >= 10`, 15_000, "chat.lobby");
  await shot("topic");

  await browser.click("#topic-publish");
  await browser.waitFor(`!document.getElementById("view-publish").hidden`, 5000, "the publish view");
  await browser.type("#publish-data", JSON.stringify({ user: "ops", text: "maintenance window tonight at 22:00 UTC" }, null, 2));
  await browser.click("#publish-submit");
  await browser.waitFor(`!document.getElementById("publish-result").hidden`, 10_000, "the publish result");
  await browser.click("header h1");
  await shot("publish");
}

try {
  await main();
  await cleanup();
  clearTimeout(guard);
} catch (error) {
  console.error(`console-screenshots: ${(error as Error).message}`);
  if (browser !== undefined && browser.console.length > 0) console.error(browser.console.join("\n"));
  await cleanup();
  clearTimeout(guard);
  process.exit(1);
}
