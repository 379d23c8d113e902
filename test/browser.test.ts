// The client in a real browser: src/client.ts bundled for the browser (Bun.build), loaded by headless Chromium
// from a page served here, talking to a real server. Proves there is no Node-only API in the client path and
// that data arrives exactly, and records what a browser learns of a refused upgrade (nothing: a plain close
// 1006). Skipped where Chromium is not installed (`apt-get install chromium`).
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve, stopAll } from "./helpers.ts";

const chromium = Bun.which("chromium") ?? Bun.which("chromium-browser");
const scratch = mkdtempSync(join(tmpdir(), "switchboard-browser-"));
afterAll(async () => {
  await stopAll();
  rmSync(scratch, { recursive: true, force: true });
});

const PAGE = (serverUrl: string, authServerUrl: string) => `<!doctype html><html><body><script type="module">
import { connect } from "./client.js";
const log = (s) => console.log("LOG " + s);
const client = connect(${JSON.stringify(serverUrl)});
client.on("open", (e) => log("open timeoutMs=" + e.heartbeat.timeoutMs));
log("early ping " + typeof (await client.ping())); // waits for the connection, as publish() does
client.subscribe("browser.test", (data) => log("message " + JSON.stringify(data) + " " + typeof data));
await client.publish("browser.test", "123");
await client.publish("browser.test", "2026-11-28T12:00:00.000Z");
log("rtt " + (typeof (await client.ping())));
try { await client.publish("bad topic", 1); } catch (e) { log("rejected " + e.name + " " + e.code); }
client.close();
// A refused upgrade (401 here): browsers expose neither the status nor the body, so it looks like any
// failed attempt (close 1006) and no HandshakeError is possible.
const refused = connect(${JSON.stringify(authServerUrl)}, { reconnect: { baseMs: 10, capMs: 10, maxAttempts: 1 } });
refused.on("error", (e) => log("error " + e.error.name));
refused.on("close", (e) => log("refused close " + e.code + " " + e.willReconnect));
try { await refused.ready(); } catch (e) { log("refused ready " + e.name); }
log("done");
</script></body></html>`;

describe.skipIf(chromium === null)("browser", () => {
  test("the bundled client connects, receives exact data, pings and gets typed errors in headless Chromium", async () => {
    const server = serve();
    const authServer = serve({ AUTH_SECRET: "x".repeat(32) });
    const build = await Bun.build({ entrypoints: ["src/client.ts"], target: "browser", outdir: scratch, naming: "client.js" });
    expect(build.success).toBe(true);
    const bundle = await Bun.file(join(scratch, "client.js")).text();
    expect(bundle).not.toContain('from "node:');

    const page = PAGE(server.ws("/connect"), authServer.ws("/connect"));
    const site = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: (req) =>
        new URL(req.url).pathname === "/client.js"
          ? new Response(bundle, { headers: { "content-type": "text/javascript" } })
          : new Response(page, { headers: { "content-type": "text/html" } }),
    });
    const browser = Bun.spawn(
      [
        chromium!,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${join(scratch, "profile")}`,
        "--enable-logging=stderr",
        "--v=0",
        "--remote-debugging-port=0", // keeps the headless browser running until we stop it
        `http://127.0.0.1:${site.port}/`,
      ],
      { stdout: "ignore", stderr: "pipe" },
    );
    const lines: string[] = [];
    try {
      // Chromium logs console output as: ...:INFO:CONSOLE:N] "LOG <text>", source: <url> (N)
      const decoder = new TextDecoder();
      const deadline = setTimeout(() => browser.kill("SIGKILL"), 30_000);
      let buffered = "";
      for await (const chunk of browser.stderr) {
        buffered += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const m = /CONSOLE[^\]]*\] "LOG (.*)", source: /.exec(buffered.slice(0, nl));
          if (m) lines.push(m[1]!);
          buffered = buffered.slice(nl + 1);
        }
        if (lines.includes("done")) break;
      }
      clearTimeout(deadline);
    } finally {
      browser.kill("SIGKILL");
      site.stop(true);
    }
    expect(lines).toEqual([
      "open timeoutMs=15000",
      "early ping number",
      'message "123" string',
      'message "2026-11-28T12:00:00.000Z" string',
      "rtt number",
      "rejected SwitchboardError invalid_topic",
      "refused close 1006 true",
      "refused close 1006 false",
      "refused ready ConnectionLostError",
      "done",
    ]);
  }, 40_000);
});
