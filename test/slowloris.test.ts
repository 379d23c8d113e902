// Slow clients: a socket that never finishes its request costs the server a file descriptor until it is closed.
// Before its headers are complete the server cannot see it (Bun drops it after 10-14 s; README Limits has the
// arithmetic); after that, what the server controls is not keeping it a moment longer than needed.
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { serve, stopAll, until, within } from "./helpers.ts";

afterAll(stopAll);

const KEY = "test-publish-key-0123456789";

async function openSocket(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  await within(new Promise((resolve) => socket.once("connect", resolve)), 3000, "tcp connect");
  return socket;
}

describe("slow clients", () => {
  test("a body trickled after a refusal cannot hold the socket: 401 and closed at once, 200 times over", async () => {
    const server = serve({ PUBLISH_API_KEY: KEY });
    const sockets = await Promise.all(Array.from({ length: 200 }, () => openSocket(server.port)));
    const answers: string[] = [];
    let closed = 0;
    for (const socket of sockets) {
      let response = "";
      socket.on("data", (d: Buffer) => (response += d.toString()));
      socket.on("close", () => {
        closed++;
        answers.push(response.split("\r\n")[0]!);
      });
      socket.write("POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n[");
    }
    // Keep trickling a byte per socket until the server has closed them all (a slow-POST attacker would).
    const trickle = setInterval(() => sockets.forEach((s) => s.writable && s.write("{")), 50);
    try {
      await until(() => closed === sockets.length, 3000, "the server to close every refused socket");
    } finally {
      clearInterval(trickle);
      sockets.forEach((s) => s.destroy());
    }
    expect(new Set(answers)).toEqual(new Set(["HTTP/1.1 401 Unauthorized"]));
  });
});
