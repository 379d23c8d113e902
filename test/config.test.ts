// Environment -> config: defaults, accepted spellings, and bad values stopping the real entry point.
import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../src/config.ts";

describe("loadConfig", () => {
  test("defaults with nothing set", () => {
    expect(loadConfig({})).toEqual({
      PORT: 3000,
      HOST: "0.0.0.0",
      PING_INTERVAL_MS: 5000,
      PING_WAIT_MS: 10000,
      PERMESSAGE_DEFLATE: true,
      MAX_PAYLOAD_BYTES: 1048576,
      MAX_TOPICS_PER_CONNECTION: 100,
      BACKPRESSURE_LIMIT_BYTES: 1048576,
      SHUTDOWN_GRACE_MS: 5000,
      LOG_LEVEL: "info",
      WORKERS: 1,
      REDIS_TIMEOUT_MS: 2000,
      REDIS_MAX_PENDING_BYTES: 33554432,
      RATE_LIMIT_MSGS_PER_S: 0,
      RATE_LIMIT_BURST: 100,
      MAX_CONNECTIONS: 0,
      MAX_CONNECTIONS_PER_IP: 0,
      REUSE_PORT: false,
    });
  });

  test("values are read and converted; empty strings count as unset", () => {
    const config = loadConfig({ PORT: "0", HOST: "127.0.0.1", PING_INTERVAL_MS: "250", PING_WAIT_MS: "", MAX_PAYLOAD_BYTES: "4096" });
    expect(config).toMatchObject({ PORT: 0, HOST: "127.0.0.1", PING_INTERVAL_MS: 250, PING_WAIT_MS: 10000, MAX_PAYLOAD_BYTES: 4096 });
  });

  test.each([
    ["true", true],
    ["TRUE", true],
    ["1", true],
    ["false", false],
    ["False", false],
    ["0", false],
  ])("PERMESSAGE_DEFLATE=%p is %p (not z.coerce.boolean, which reads \"false\" as true)", (raw, expected) => {
    expect(loadConfig({ PERMESSAGE_DEFLATE: raw }).PERMESSAGE_DEFLATE).toBe(expected);
  });

  test.each([
    ["PORT", "abc"],
    ["PORT", "65536"],
    ["PORT", "-1"],
    ["PORT", "80.5"],
    ["PORT", "1e3"],
    ["PING_INTERVAL_MS", "0"],
    ["PING_WAIT_MS", "soon"],
    ["PERMESSAGE_DEFLATE", "yes"],
    ["MAX_PAYLOAD_BYTES", "10"],
    ["MAX_TOPICS_PER_CONNECTION", "0"],
    ["BACKPRESSURE_LIMIT_BYTES", "1kb"],
    ["SHUTDOWN_GRACE_MS", " 5"],
    ["LOG_LEVEL", "loud"],
    ["REDIS_URL", "http://127.0.0.1:6379"],
    ["WORKERS", "0"],
    ["WORKERS", "many"],
    ["PUBLISH_API_KEY", "short"],
    ["AUTH_SECRET", "too-short"],
    ["AUTH_PUBLIC_KEY", "not a pem"],
    ["ALLOWED_ORIGINS", "example.com"],
    ["RATE_LIMIT_BURST", "0"],
    ["MAX_CONNECTIONS", "-5"],
  ])("%s=%p is rejected with a message naming the variable", (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(`${name}=${JSON.stringify(value)}`);
  });

  test("WORKERS above 1 needs REDIS_URL; auto means one per core", () => {
    expect(() => loadConfig({ WORKERS: "2" })).toThrow('WORKERS="2": 2 workers need REDIS_URL');
    expect(loadConfig({ WORKERS: "2", REDIS_URL: "redis://127.0.0.1:6379" }).WORKERS).toBe(2);
    expect(loadConfig({ WORKERS: "auto", REDIS_URL: "redis://127.0.0.1:6379" }).WORKERS).toBe(navigator.hardwareConcurrency);
  });

  test("ALLOWED_ORIGINS is a comma list of URLs", () => {
    expect(loadConfig({ ALLOWED_ORIGINS: "https://a.example, http://localhost:5173" }).ALLOWED_ORIGINS).toEqual([
      "https://a.example",
      "http://localhost:5173",
    ]);
  });

  test("several bad values are all reported at once", () => {
    expect(() => loadConfig({ PORT: "x", PING_WAIT_MS: "y" })).toThrow(/PORT="x".*\n.*PING_WAIT_MS="y"/);
  });
});

describe("the entry point", () => {
  test("exits with status 2 and names the variable on a bad value, without listening", async () => {
    const proc = Bun.spawn(["bun", "run", "src/index.ts"], {
      env: { ...process.env, PORT: "0", PING_INTERVAL_MS: "fast" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const killer = setTimeout(() => proc.kill(), 10_000);
    const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    clearTimeout(killer);
    expect(code).toBe(2);
    expect(stderr).toContain('PING_INTERVAL_MS="fast": must be a whole number');
    expect(stdout).not.toContain("listening");
  });
});
