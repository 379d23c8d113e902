// Any valid Host header reaches every route: `ws://ws/connect` sends `Host: ws`, which the framework's path
// slicing used to turn into 404 on /connect and /echo. Raw TCP, since a WebSocket client sets Host from the URL.
import { afterAll, describe, expect, test } from "bun:test";
import { Opcode, RawPeer, rawHttpConnection, serve, stopAll, until, within } from "./helpers.ts";

afterAll(stopAll);

const KEY = "test-publish-key-0123456789";
const SHORT_HOSTS = ["ws", "a", "[::1]", "ab:80"];

/** One HTTP/1.1 request over raw TCP with `Connection: close`; resolves with the status and the body text. */
async function rawRequest(port: number, head: string, body = ""): Promise<{ status: number; body: string }> {
  const { socket, reply, closed } = await rawHttpConnection(port);
  socket.write(`${head}\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  await within(closed, 3000, "the server to answer and close");
  const response = reply.text;
  return { status: Number(response.split(" ")[1]), body: response.slice(response.indexOf("\r\n\r\n") + 4) };
}

describe("a short Host header", () => {
  for (const host of SHORT_HOSTS) {
    test(`Host: ${host} upgrades on /connect (welcome) and /echo (echoes)`, async () => {
      const server = serve();
      const connect = await RawPeer.connect(server.port, "/connect", { Host: host });
      await until(() => connect.count(Opcode.text) >= 1, 3000, "welcome");
      expect(JSON.parse(connect.frames[0]!.payload.toString()).type).toBe("welcome");
      connect.destroy();

      // RFC 6455 makes the Upgrade value case-insensitive: that variant goes through another route internally.
      const echo = await RawPeer.connect(server.port, "/echo", { Host: host, Upgrade: "WebSocket" });
      echo.send(Opcode.text, "hi");
      await until(() => echo.count(Opcode.text) >= 1, 3000, "echo");
      expect(echo.frames[0]!.payload.toString()).toBe("hi");
      echo.destroy();
    });
  }

  test("Host: ws reaches every other route with its usual answer", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const get = (path: string) => rawRequest(server.port, `GET ${path} HTTP/1.1\r\nHost: ws`);
    const healthz = await get("/healthz");
    expect([healthz.status, JSON.parse(healthz.body).status]).toEqual([200, "ok"]);
    const readyz = await get("/readyz");
    expect([readyz.status, JSON.parse(readyz.body).status]).toEqual([200, "ready"]);
    const metrics = await get("/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain("switchboard_connections");
    expect(await get("/connect")).toEqual({ status: 426, body: '{"error":"this route speaks WebSocket: send a GET with Upgrade: websocket"}' });
    expect((await get("/publish")).status).toBe(405);
    expect((await get("/nowhere")).status).toBe(404);
    const published = await rawRequest(
      server.port,
      `POST /publish HTTP/1.1\r\nHost: ws\r\nAuthorization: Bearer ${KEY}`,
      JSON.stringify({ topic: "t", data: 1 }),
    );
    // History is on (the default): the answer carries the message's offset, and GET /api/history returns it.
    expect(published).toEqual({ status: 200, body: '{"status":"published","topic":"t","offset":1}' });
    const history = await rawRequest(server.port, `GET /api/history?topic=t HTTP/1.1\r\nHost: ws\r\nAuthorization: Bearer ${KEY}`);
    const epoch = (JSON.parse(history.body) as { epoch: string }).epoch;
    expect(epoch).toMatch(/^[0-9a-z]{8}$/);
    expect(history).toEqual({ status: 200, body: `{"topic":"t","epoch":"${epoch}","offset":1,"messages":[{"offset":1,"data":1}]}` });
  });
});
