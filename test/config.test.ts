// Environment -> config: defaults, accepted spellings, and bad values stopping the real entry point.
import { describe, expect, test } from "bun:test";
import { ConfigError, configWith, loadConfig } from "../src/config.ts";

/** The message loadConfig throws for `env` (fails the test if it does not throw). */
function errorOf(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

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
      HISTORY_SIZE: 100,
      HISTORY_TTL_MS: 300000,
      HISTORY_MAX_BYTES: 67108864,
      HISTORY_META_TTL_MS: 86400000,
      PRESENCE_TTL_MS: 30000,
      PRESENCE_MAX_CLIENTS: 10000,
      RATE_LIMIT_MSGS_PER_S: 0,
      RATE_LIMIT_BURST: 100,
      MAX_CONNECTIONS: 0,
      MAX_CONNECTIONS_PER_IP: 0,
      AUTH_REQUIRE_EXP: true,
      TOPICS_STRICT: false,
      CONSOLE: true,
      BATCH_MAX_DELAY_MS: 0,
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
    ["ALLOWED_ORIGINS", "example.com"],
    ["AUTH_REQUIRE_EXP", "no"],
    ["RATE_LIMIT_BURST", "0"],
    ["MAX_CONNECTIONS", "-5"],
  ])("%s=%p is rejected with a one-line message naming the variable and showing the value", (name, value) => {
    const message = errorOf({ [name]: value });
    expect(message.startsWith(`invalid configuration: ${name}=${JSON.stringify(value)}: `)).toBe(true);
    expect(message).not.toContain("\n");
  });

  test.each([
    ["PUBLISH_API_KEY", "short-key", "must be at least 16 characters"],
    ["AUTH_SECRET", "too-short", "must be at least 32 characters (HS256 needs 256 bits)"],
    ["AUTH_PUBLIC_KEY", "not a pem", "must be a PEM public key (BEGIN PUBLIC KEY)"],
    ["AUTH_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a valid public key (ERR_OSSL_EVP_DECODE_ERROR)"],
  ])("secret %s: the message names it and gives its length, never its value", (name, value, reason) => {
    expect(errorOf({ [name]: value })).toBe(`invalid configuration: ${name}=<hidden: ${value.length} characters>: ${reason}`);
  });

  test("a password in a URL is masked wherever a value shows it", () => {
    expect(errorOf({ REDIS_URL: "http://admin:s3cret@cache:6379" })).toBe(
      'invalid configuration: REDIS_URL="http://***@cache:6379": must be a redis:// (or rediss://, valkey://) URL, or several separated by commas',
    );
    // Each URL of a list is masked, the one refused and the others.
    expect(errorOf({ REDIS_URL: "redis://a:pw1@r1:6379,redis://b:pw2@r1:6379,redis://a:pw1@r1:6379" })).toBe(
      'invalid configuration: REDIS_URL="redis://***@r1:6379,redis://***@r1:6379,redis://***@r1:6379": lists an instance twice: each topic must live on one Redis',
    );
    expect(errorOf({ ALLOWED_ORIGINS: "https://u:pw@a.example" })).toBe(
      'invalid configuration: ALLOWED_ORIGINS="https://***@a.example": "https://***@a.example": has credentials (user@): an origin never carries them',
    );
  });

  test("WORKERS above 1 needs REDIS_URL; auto means one per core", () => {
    expect(() => loadConfig({ WORKERS: "2" })).toThrow('WORKERS="2": 2 workers need REDIS_URL');
    expect(loadConfig({ WORKERS: "2", REDIS_URL: "redis://127.0.0.1:6379" }).WORKERS).toBe(2);
    expect(loadConfig({ WORKERS: "auto", REDIS_URL: "redis://127.0.0.1:6379" }).WORKERS).toBe(navigator.hardwareConcurrency);
  });

  test("with Redis, REDIS_MAX_PENDING_BYTES must hold at least one largest publish", () => {
    const redis = { REDIS_URL: "redis://127.0.0.1:6379", MAX_PAYLOAD_BYTES: "1048576" };
    expect(() => loadConfig({ ...redis, REDIS_MAX_PENDING_BYTES: "65536" })).toThrow(
      'REDIS_MAX_PENDING_BYTES="65536": must be at least MAX_PAYLOAD_BYTES (1048576)',
    );
    expect(loadConfig({ ...redis, REDIS_MAX_PENDING_BYTES: "1048576" }).REDIS_MAX_PENDING_BYTES).toBe(1048576);
    expect(loadConfig({ REDIS_MAX_PENDING_BYTES: "65536" }).REDIS_MAX_PENDING_BYTES).toBe(65536); // no Redis: unused
  });

  test.each([
    ["-1", "must be a whole number from 0 to 10000"],
    ["10001", "must be at most 10000"],
    ["abc", "must be a whole number from 0 to 10000"],
  ])("HISTORY_SIZE=%p is refused with the exact reason", (value, reason) => {
    expect(errorOf({ HISTORY_SIZE: value })).toBe(`invalid configuration: HISTORY_SIZE=${JSON.stringify(value)}: ${reason}`);
  });

  test("HISTORY_SIZE=0 turns history off; 10000 is the most", () => {
    expect(loadConfig({ HISTORY_SIZE: "0" }).HISTORY_SIZE).toBe(0);
    expect(loadConfig({ HISTORY_SIZE: "10000" }).HISTORY_SIZE).toBe(10000);
  });

  test("HISTORY_META_TTL_MS must be at least HISTORY_TTL_MS: a topic's offsets outlive its messages", () => {
    expect(errorOf({ HISTORY_TTL_MS: "60000", HISTORY_META_TTL_MS: "59999" })).toBe(
      "invalid configuration: HISTORY_META_TTL_MS=\"59999\": must be at least HISTORY_TTL_MS (60000): a topic's offsets must outlive its messages",
    );
    // Against the default HISTORY_TTL_MS too.
    expect(errorOf({ HISTORY_META_TTL_MS: "1000" })).toBe(
      "invalid configuration: HISTORY_META_TTL_MS=\"1000\": must be at least HISTORY_TTL_MS (300000): a topic's offsets must outlive its messages",
    );
    expect(loadConfig({ HISTORY_TTL_MS: "60000", HISTORY_META_TTL_MS: "60000" })).toMatchObject({ HISTORY_TTL_MS: 60000, HISTORY_META_TTL_MS: 60000 });
  });

  test("ALLOWED_ORIGINS is a comma list of origins", () => {
    expect(loadConfig({ ALLOWED_ORIGINS: "https://a.example, http://localhost:5173" }).ALLOWED_ORIGINS).toEqual([
      "https://a.example",
      "http://localhost:5173",
    ]);
  });

  test("ALLOWED_ORIGINS entries are normalized to what browsers send in Origin", () => {
    const list = "https://good.example/, https://Good.Example, https://good.example:443, HTTP://LocalHost:80/, http://localhost:5173, http://[::1]:8080";
    expect(loadConfig({ ALLOWED_ORIGINS: list }).ALLOWED_ORIGINS).toEqual(["https://good.example", "http://localhost", "http://localhost:5173", "http://[::1]:8080"]);
  });

  test.each([
    ["https://good.example/app", '"https://good.example/app": has a path (/app): an origin is scheme://host[:port] only'],
    ["https://good.example?x=1", '"https://good.example?x=1": has a query'],
    ["https://good.example/?", '"https://good.example/?": has a query'],
    ["https://good.example#top", '"https://good.example#top": has a fragment'],
    ["https://*.good.example", '"https://*.good.example": wildcards are not supported: list each origin'],
    ["ftp://good.example", '"ftp://good.example": scheme ftp: is not http: or https:'],
    ["localhost:5173", '"localhost:5173": scheme localhost: is not http: or https:'],
    ["null", '"null": not a URL: write an origin like https://app.example.com'],
  ])("ALLOWED_ORIGINS entry %p is refused with the reason, even beside good ones", (entry, reason) => {
    const value = `https://ok.example,${entry}`;
    expect(errorOf({ ALLOWED_ORIGINS: value })).toStartWith(`invalid configuration: ALLOWED_ORIGINS=${JSON.stringify(value)}: ${reason}`);
  });

  test("ALLOWED_ORIGINS with no entry is refused", () => {
    expect(errorOf({ ALLOWED_ORIGINS: " , " })).toBe('invalid configuration: ALLOWED_ORIGINS=" , ": must list at least one origin');
  });

  test("AUTH_REQUIRE_EXP is on unless set false", () => {
    expect(loadConfig({}).AUTH_REQUIRE_EXP).toBe(true);
    expect(loadConfig({ AUTH_REQUIRE_EXP: "false" }).AUTH_REQUIRE_EXP).toBe(false);
  });

  test("several bad values are all reported at once", () => {
    expect(() => loadConfig({ PORT: "x", PING_WAIT_MS: "y" })).toThrow(/PORT="x".*\n.*PING_WAIT_MS="y"/);
  });
});

describe("API_KEY and PUBLISH_API_KEY, its old name", () => {
  const key = "api-key-of-twenty-chars";
  const other = "another-api-key-0123456";

  test("either name sets the one key the server reads; the old name is not kept beside it", () => {
    for (const env of [{ API_KEY: key }, { PUBLISH_API_KEY: key }, { API_KEY: key, PUBLISH_API_KEY: key }, { API_KEY: key, PUBLISH_API_KEY: "" }]) {
      const config = loadConfig(env);
      expect([env, config.API_KEY, "PUBLISH_API_KEY" in config]).toEqual([env, key, false]);
    }
    expect(loadConfig({}).API_KEY).toBeUndefined();
    // In code too (test servers): configWith folds the old name in the same way.
    expect([configWith({ PUBLISH_API_KEY: key }).API_KEY, configWith({ API_KEY: key, PUBLISH_API_KEY: key }).API_KEY]).toEqual([key, key]);
  });

  test("both set and different: refused, naming both and hiding both", () => {
    expect(errorOf({ API_KEY: key, PUBLISH_API_KEY: other })).toBe(
      `invalid configuration: API_KEY=<hidden: ${key.length} characters>: differs from PUBLISH_API_KEY=<hidden: ${other.length} characters>, its old name: set one of them, or both to the same key`,
    );
    expect(() => configWith({ API_KEY: key, PUBLISH_API_KEY: other })).toThrow(
      new ConfigError("API_KEY and PUBLISH_API_KEY (its old name) differ: set one of them"),
    );
  });

  test("API_KEY is a secret of at least 16 characters, as its old name was", () => {
    expect(errorOf({ API_KEY: "short-key" })).toBe("invalid configuration: API_KEY=<hidden: 9 characters>: must be at least 16 characters");
    expect(errorOf({ API_KEY: key, PUBLISH_API_KEY: "short-key" })).toBe(
      "invalid configuration: PUBLISH_API_KEY=<hidden: 9 characters>: must be at least 16 characters",
    );
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
