// Start-up of the real entry point (`bun run src/index.ts`): what it refuses before listening, the one line it
// prints when it cannot listen, and when the WORKERS supervisor says "listening" or gives up.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { importPKCS8, SignJWT } from "jose";
import { spawnEntry, until, within } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

interface Exit {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the entry point to its exit (bounded): for start-ups that must fail. */
async function runToExit(env: Record<string, string>, ms = 10_000): Promise<Exit> {
  const proc = Bun.spawn(["bun", "run", "src/index.ts"], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const output = Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  try {
    const [code, stdout, stderr] = await within(output, ms, "the entry point to exit");
    return { code, stdout, stderr };
  } finally {
    proc.kill("SIGKILL");
  }
}

/** Holds a TCP port on 127.0.0.1 without SO_REUSEPORT, as another program would. */
function holdPort(): { port: number; release(): void } {
  const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  return { port: holder.port, release: () => holder.stop(true) };
}

const pem = (key: { export(options: { type: "spki" | "pkcs8"; format: "pem" }): string | Buffer }, type: "spki" | "pkcs8") =>
  String(key.export({ type, format: "pem" }));

async function upgradeStatus(port: number, token: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/connect?token=${token}`, {
    headers: { upgrade: "websocket", connection: "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" },
  });
  await res.body?.cancel();
  return res.status;
}

const claims = { sub: "u1", topics: { subscribe: ["*"], publish: ["*"] } };

describe("AUTH_PUBLIC_KEY is imported at start-up", () => {
  test("garbage inside the PEM armour: exit 2, one line naming the variable, the key not echoed", async () => {
    const garbage = "-----BEGIN PUBLIC KEY-----\nAAAAnotakeyZZZZ\n-----END PUBLIC KEY-----";
    const { code, stdout, stderr } = await runToExit({ AUTH_PUBLIC_KEY: garbage });
    expect(code).toBe(2);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toMatch(/^switchboard: invalid configuration: AUTH_PUBLIC_KEY=<hidden: \d+ characters>: not a valid public key \(/);
    expect(stderr).not.toContain("AAAAnotakeyZZZZ");
    expect(stdout).not.toContain("listening");
  });

  test("an EC P-256 key starts the server and verifies ES256 tokens", async () => {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const entry = await spawnEntry({ AUTH_PUBLIC_KEY: pem(publicKey, "spki"), LOG_LEVEL: "silent" });
    try {
      const signer = await importPKCS8(pem(privateKey, "pkcs8"), "ES256");
      const es256 = await new SignJWT(claims).setProtectedHeader({ alg: "ES256" }).setExpirationTime("1m").sign(signer);
      expect(await upgradeStatus(entry.port, es256)).toBe(101);
      const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
      const forged = await new SignJWT(claims).setProtectedHeader({ alg: "ES256" }).setExpirationTime("1m").sign(await importPKCS8(pem(other, "pkcs8"), "ES256"));
      expect(await upgradeStatus(entry.port, forged)).toBe(401);
    } finally {
      entry.kill("SIGTERM");
      expect((await within(entry.exited(), 8000, "exit")).code).toBe(0);
    }
  });

  test.each([
    ["an EC P-384 key", () => generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey, "EC curve secp384r1 is not supported: use P-256 (ES256) or RSA (RS256)"],
    ["an Ed25519 key", () => generateKeyPairSync("ed25519").publicKey, "ed25519 keys are not supported: use RSA (RS256) or EC P-256 (ES256)"],
    ["a 1024-bit RSA key", () => generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey, "RSA key of 1024 bits: RS256 needs 2048 or more"],
  ])("%s is refused at start-up with the reason", async (_name, make, reason) => {
    const { code, stderr } = await runToExit({ AUTH_PUBLIC_KEY: pem(make(), "spki") });
    expect(code).toBe(2);
    expect(stderr).toBe(`switchboard: invalid configuration: AUTH_PUBLIC_KEY=<hidden: ${pem(make(), "spki").length} characters>: ${reason}\n`);
  });
});

test("config errors name every secret without echoing its value; other values are shown", async () => {
  const { code, stdout, stderr } = await runToExit({
    PORT: "eighty",
    AUTH_SECRET: "short-secret-xyz",
    PUBLISH_API_KEY: "tiny-key-abc",
    REDIS_URL: "http://admin:hunter2pass@127.0.0.1:6379",
  });
  expect(code).toBe(2);
  expect(stdout).toBe("");
  expect(stderr).toContain('PORT="eighty": must be a whole number');
  expect(stderr).toContain("AUTH_SECRET=<hidden: 16 characters>: must be at least 32 characters");
  expect(stderr).toContain("PUBLISH_API_KEY=<hidden: 12 characters>: must be at least 16 characters");
  expect(stderr).toContain('REDIS_URL="http://***@127.0.0.1:6379": must be a redis://');
  for (const secret of ["short-secret-xyz", "tiny-key-abc", "hunter2pass", "admin"]) expect(stderr).not.toContain(secret);
});

describe("cannot listen: one line and exit code 3", () => {
  test("a busy port", async () => {
    const held = holdPort();
    try {
      const { code, stdout, stderr } = await runToExit({ PORT: String(held.port) });
      expect({ code, stderr }).toEqual({ code: 3, stderr: `switchboard: port ${held.port} is already in use on 127.0.0.1\n` });
      expect(stdout).not.toContain("listening");
    } finally {
      held.release();
    }
  });

  test("a HOST that is no address of this machine", async () => {
    // TEST-NET-1 (RFC 5737): never assigned to a machine, so binding fails; nothing is ever sent to it.
    const { code, stderr } = await runToExit({ HOST: "192.0.2.1" });
    expect({ code, stderr }).toEqual({ code: 3, stderr: "switchboard: cannot listen on HOST=192.0.2.1: address not available on this machine\n" });
  });
});

describe("WORKERS supervisor", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  test("says listening only once every worker listens, then drains on SIGTERM", async () => {
    const entry = await spawnEntry({ WORKERS: "2", REDIS_URL: redis.url, LOG_LEVEL: "info" }, /^switchboard listening on http:\/\/127\.0\.0\.1:(\d+) .*with 2 workers/m);
    try {
      const beforeListening = entry.stdout().slice(0, entry.stdout().indexOf("switchboard listening"));
      expect(beforeListening.match(/"event":"start"/g)).toHaveLength(2);
      expect((await fetch(`http://127.0.0.1:${entry.port}/healthz`)).status).toBe(200);
    } finally {
      entry.kill("SIGTERM");
      expect((await within(entry.exited(), 15_000, "supervisor exit")).code).toBe(0);
    }
  });

  test("a supervisor killed with SIGKILL takes its workers with it: no orphan keeps the port", async () => {
    const entry = await spawnEntry({ WORKERS: "2", REDIS_URL: redis.url, LOG_LEVEL: "info" }, /^switchboard listening on http:\/\/127\.0\.0\.1:(\d+) .*with 2 workers/m);
    const pids = [...entry.stdout().matchAll(/"event":"start".*?"pid":(\d+)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(2);
    entry.kill("SIGKILL");
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await until(() => pids.every((pid) => !alive(pid)), 10_000, "the orphaned workers to exit");
    await until(async () => (await fetch(`http://127.0.0.1:${entry.port}/healthz`).catch(() => undefined)) === undefined, 5000, "the port to close");
  });

  test("workers that die at start-up (port taken): one line saying why, exit 1, never 'listening'", async () => {
    const held = holdPort();
    try {
      const { code, stdout, stderr } = await runToExit({ WORKERS: "2", REDIS_URL: redis.url, PORT: String(held.port) }, 15_000);
      expect(code).toBe(1);
      expect(stdout).not.toContain("listening");
      // each worker says why it stopped, then the supervisor says it gives up
      expect(stderr).toContain(`switchboard: port ${held.port} is already in use on 127.0.0.1`);
      expect(stderr.trim().split("\n").at(-1)).toMatch(/^switchboard: worker [12] exited with code 3 at start-up, before all 2 workers listened: giving up$/);
    } finally {
      held.release();
    }
  });
});
