// Topic definitions of the standalone server (`bun run src/index.ts`): SWITCHBOARD_CONFIG (relative to the
// working directory) or ./switchboard.config.ts by default, whose default export must be defineTopics(...). A
// file that cannot be used stops the start with exit code 2 and ONE stderr line saying why, also with WORKERS > 1
// (before any worker is spawned). Also defineTopics' own errors and the shipped example, without processes.
//
// Config files in temporary directories import defineTopics and zod by absolute path (written at test time):
// `import { defineTopics } from "switchboard"` does not resolve outside the repository (Bun then tries to
// auto-install a package "switchboard" from the npm registry), and a bare "zod" there is auto-installed from
// Bun's global cache instead of the repository's copy.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineTopics, TopicConfigError } from "../src/topics/define.ts";
import { loadTopicDefinitions } from "../src/topics/load.ts";
import { ConfigError } from "../src/config.ts";
import type { ServerFrame } from "../src/protocol.ts";
import { Client, collectOutput, redisForFile, spawnEntry, within } from "./helpers.ts";
import { startRedis, type TestRedis } from "./redis.ts";

const REPO = join(import.meta.dir, "..");
const ENTRY = join(REPO, "src/index.ts");
const DEFINE = join(REPO, "src/topics/define.ts");
const ZOD = Bun.resolveSync("zod", REPO);
const LISTENING = /^switchboard listening on http:\/\/127\.0\.0\.1:(\d+) /m;

let redis: TestRedis;
redisForFile(async () => (redis = await startRedis()));

// --- temporary working directories ------------------------------------------------------------------------------

const root = realpathSync(mkdtempSync(join(tmpdir(), "switchboard-topic-config-")));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function dir(name: string, files: Record<string, string> = {}): string {
  const path = join(root, name);
  mkdirSync(path);
  for (const [file, text] of Object.entries(files)) writeFileSync(join(path, file), text);
  return path;
}

const importDefine = `import { defineTopics } from ${JSON.stringify(DEFINE)};\n`;
/** A config file calling defineTopics with these maps (JSON: no schemas). */
const defining = (maps: object[]) => `${importDefine}export default defineTopics(${maps.map((m) => JSON.stringify(m)).join(", ")});\n`;

/** defineTopics refusals: [what, the maps, TopicConfigError's message, also as a config file of a real start]. */
const definitionErrors: [string, object[], string, boolean][] = [
  ["a pattern defined twice across two maps", [{ "chat.*": {} }, { "news.*": {}, "chat.*": { presence: false } }], 'topic pattern "chat.*" is defined twice: merge its options into one definition', true],
  ["a pattern with two *", [{ "chat.*.*": {} }], 'topic pattern "chat.*.*": a * may only end a pattern (chat.room.*), and only one', true],
  ["a pattern with a * inside", [{ "a*b": {} }], 'topic pattern "a*b": a * may only end a pattern (chat.room.*), and only one', false],
  ["a pattern that is no topic name", [{ "bad topic!": {} }], 'topic pattern "bad topic!": not a topic name and not a prefix ending in *', false],
  ["an unknown option key", [{ "chat.*": { colour: "red" } }], 'topic pattern "chat.*": Unrecognized key: "colour"', true],
  ["joinLeave: true with presence: false", [{ "chat.*": { joinLeave: true, presence: false } }], 'topic pattern "chat.*": joinLeave: true needs presence (join/leave are presence changes)', true],
  ["history size 0", [{ "chat.*": { history: { size: 0 } } }], 'topic pattern "chat.*": history.size: Too small: expected number to be >=1', true],
  ["history size 20000", [{ "chat.*": { history: { size: 20000 } } }], 'topic pattern "chat.*": history.size: Too big: expected number to be <=10000', true],
];

const fileNameOf = (what: string) => `${what.replace(/[^a-z0-9]+/gi, "-")}.ts`;

// Named files, loaded with cwd = this directory and SWITCHBOARD_CONFIG=./<file>.
const named = dir("named", {
  "syntax-error.ts": `${importDefine}export default defineTopics({\n  "chat.*": { history: { size: 5 },\n});\n`,
  "throws.ts": `${importDefine}throw new Error("the vault holding the schemas is sealed");\n`,
  "missing-import.ts": `import "./not-written.ts";\n${defining([{ "chat.*": {} }])}`,
  "plain-object.ts": `export default { "chat.*": { presence: false } };\n`,
  "no-default.ts": `${importDefine}export const topics = defineTopics({ "chat.*": {} });\n`,
  // Thrown values that are not one-line Errors: each still makes exactly one line.
  "throws-string-with-newline.ts": `throw "a\\nb";\n`,
  "throws-null-prototype.ts": `throw Object.create(null);\n`,
  "throws-zod-error.ts": `import { z } from ${JSON.stringify(ZOD)};\n${importDefine}z.object({ a: z.string(), b: z.number() }).parse({});\nexport default defineTopics({ "chat.*": {} });\n`,
  "throws-multiline-error.ts": `throw new Error("first line\\nsecond line");\n`,
  "rejects-aggregate.ts": `await Promise.reject(new AggregateError([new TypeError("  inner one  \\n more"), new Error("inner two")], "outer"));\nexport default 1;\n`,
  "throws-unreadable.ts": `throw new Proxy({}, { get() { throw new Error("no reading me"); } });\n`,
  ...Object.fromEntries(definitionErrors.filter(([, , , spawn]) => spawn).map(([what, maps]) => [fileNameOf(what), defining(maps)])),
});
// The default file, valid: its schema must be enforced although nothing names it.
const withDefault = dir("with-default", {
  "switchboard.config.ts": `import { z } from ${JSON.stringify(ZOD)};\n${importDefine}export default defineTopics({ "room.*": { schema: z.object({ n: z.number() }) } });\n`,
});
// The default file, broken: that is an error too (never silently "no definitions").
const brokenDefault = dir("broken-default", { "switchboard.config.ts": defining([{ "room.*": { history: { size: 0 } } }]) });
const empty = dir("empty");

// --- processes ----------------------------------------------------------------------------------------------------

/** Inherited variables that would change what these tests start: each test sets what it needs. */
const CLEARED = new Set(["SWITCHBOARD_CONFIG", "TOPICS_STRICT", "WORKERS", "REDIS_URL"]);
function envWith(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined && !CLEARED.has(key)) env[key] = value;
  return { ...env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...extra };
}

const launched = new Set<Bun.Subprocess>();
afterAll(() => {
  for (const proc of launched) proc.kill("SIGKILL");
});

/** The entry point run in `cwd` until it exits or says it listens (bounded). */
async function launch(cwd: string, env: Record<string, string>, ms = 12_000) {
  const proc = Bun.spawn(["bun", "run", ENTRY], { cwd, env: envWith(env), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  launched.add(proc);
  void proc.exited.then(() => launched.delete(proc));
  const output = collectOutput(proc);
  const deadline = performance.now() + ms;
  let match: RegExpMatchArray | null;
  while ((match = output.stdout().match(LISTENING)) === null && proc.exitCode === null) {
    if (performance.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`neither exited nor listening after ${ms} ms: ${output.stdout()}${output.stderr()}`);
    }
    await Bun.sleep(10);
  }
  return { proc, output, port: match === null ? undefined : Number(match[1]) };
}

interface Exit {
  code: number | "listening";
  stdout: string;
  stderr: string;
}

/** For start-ups that must fail: the exit code and the whole output ("listening" if it started after all). */
async function runToExit(cwd: string, env: Record<string, string>): Promise<Exit> {
  const { proc, output, port } = await launch(cwd, env);
  if (port !== undefined) proc.kill("SIGKILL");
  const code = await within(proc.exited, 5000, "the entry point to exit");
  const { stdout, stderr } = await within(output.ended, 5000, "its output to end");
  return { code: port === undefined ? code : "listening", stdout, stderr };
}

/** A server started in `cwd`, with its start log line (stdout JSON, event "start"). */
async function startIn(cwd: string, env: Record<string, string>) {
  const { proc, output, port } = await launch(cwd, env);
  if (port === undefined) throw new Error(`exited ${proc.exitCode}: ${(await output.ended).stderr}`);
  return {
    port,
    start: startLog(output.stdout()),
    stop: async () => {
      proc.kill("SIGTERM");
      return within(proc.exited, 8000, "exit after SIGTERM");
    },
  };
}

function startLog(stdout: string): Record<string, unknown> {
  const lines = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>);
  const start = lines.filter((l) => l.event === "start");
  expect(start).toHaveLength(1);
  return start[0]!;
}

async function connect(port: number): Promise<Client> {
  const client = await Client.open(`ws://127.0.0.1:${port}/connect`);
  expect((await client.json()).type).toBe("welcome");
  return client;
}

const subscribedAt = (topic: string, id: string, offset: number): ServerFrame =>
  ({ type: "subscribed", topic, epoch: expect.any(String) as unknown as string, offset, id }) as ServerFrame;

// --- loading a valid file -----------------------------------------------------------------------------------------

test("SWITCHBOARD_CONFIG=<file>: the start line counts its patterns and a client meets its schema", async () => {
  const entry = await spawnEntry({ SWITCHBOARD_CONFIG: "test/fixtures/topics/valid.ts", LOG_LEVEL: "info", TOPICS_STRICT: "false" });
  const clients: Client[] = [];
  try {
    expect(startLog(entry.stdout())).toMatchObject({ level: "info", event: "start", broker: "memory", topicPatterns: 3 });
    const [sub, pub] = [await connect(entry.port), await connect(entry.port)];
    clients.push(sub, pub);
    expect(await sub.request({ type: "subscribe", topic: "chat.lobby", id: "s" })).toEqual(subscribedAt("chat.lobby", "s", 0));
    expect(await pub.request({ type: "publish", topic: "chat.lobby", data: { text: 7 }, id: "p1" })).toEqual({
      type: "error",
      code: "invalid_data",
      message: "does not match the schema of chat.*: data.text: Invalid input: expected string, received number",
      id: "p1",
    });
    // nothing delivered and no offset consumed by the refused publish; subscribers get the schema's output
    expect(await pub.request({ type: "publish", topic: "chat.lobby", data: { text: "hi", extra: true }, id: "p2" })).toEqual({ type: "ack", id: "p2", offset: 1 });
    expect(await sub.json()).toEqual({ type: "message", topic: "chat.lobby", data: { text: "hi" }, offset: 1 });
    // the second map of the same file is loaded too
    expect(await pub.request({ type: "publish", topic: "feed.x", data: 1, id: "p3" })).toEqual({
      type: "error",
      code: "forbidden",
      message: "only the server publishes to topics matching feed.*",
      id: "p3",
    });
    expect(sub.pending).toBe(0);
  } finally {
    for (const c of clients) c.close();
    entry.kill("SIGTERM");
    expect((await within(entry.exited(), 8000, "exit after SIGTERM")).code).toBe(0);
  }
});

describe("the default file ./switchboard.config.ts", () => {
  test("is loaded from the working directory when SWITCHBOARD_CONFIG is unset", async () => {
    const server = await startIn(withDefault, {});
    let client: Client | undefined;
    try {
      expect(server.start).toMatchObject({ event: "start", topicPatterns: 1 });
      client = await connect(server.port);
      expect(await client.request({ type: "publish", topic: "room.1", data: { n: "one" }, id: "p" })).toEqual({
        type: "error",
        code: "invalid_data",
        message: "does not match the schema of room.*: data.n: Invalid input: expected number, received string",
        id: "p",
      });
      expect(await client.request({ type: "publish", topic: "room.1", data: { n: 1 }, id: "q" })).toEqual({ type: "ack", id: "q", offset: 1 });
    } finally {
      client?.close();
      expect(await server.stop()).toBe(0);
    }
  });

  test("without it (and without SWITCHBOARD_CONFIG) the server starts with no definitions", async () => {
    const server = await startIn(empty, {});
    let client: Client | undefined;
    try {
      expect(server.start).toMatchObject({ event: "start", topicPatterns: 0 });
      client = await connect(server.port);
      expect(await client.request({ type: "publish", topic: "room.1", data: { n: "any JSON" }, id: "p" })).toEqual({ type: "ack", id: "p", offset: 1 });
    } finally {
      client?.close();
      expect(await server.stop()).toBe(0);
    }
  });
});

// --- refused start-ups: exit 2, one line ----------------------------------------------------------------------------

const prefix = "switchboard: invalid configuration: ";
const namedAs = (file: string) => `${prefix}SWITCHBOARD_CONFIG="./${file}": `;

/** [what, cwd, env, the whole of stderr]. */
const refusals: [string, string, () => Record<string, string>, string][] = [
  ["a named file that does not exist", named, () => ({ SWITCHBOARD_CONFIG: "./nope.ts" }), `${namedAs("nope.ts")}no such file (${join(named, "nope.ts")})`],
  ["a syntax error (line:column)", named, () => ({ SWITCHBOARD_CONFIG: "./syntax-error.ts" }), `${namedAs("syntax-error.ts")}cannot load it: line 4:2: Expected "}" but found ")"`],
  ["a module that throws", named, () => ({ SWITCHBOARD_CONFIG: "./throws.ts" }), `${namedAs("throws.ts")}cannot load it: the vault holding the schemas is sealed`],
  ["a module importing a missing file", named, () => ({ SWITCHBOARD_CONFIG: "./missing-import.ts" }), `${namedAs("missing-import.ts")}cannot load it: Cannot find module './not-written.ts' imported from ${join(named, "missing-import.ts")}`],
  ["a default export that is a plain object", named, () => ({ SWITCHBOARD_CONFIG: "./plain-object.ts" }), `${namedAs("plain-object.ts")}its default export must be defineTopics({...}) (export default defineTopics(...))`],
  ["no default export", named, () => ({ SWITCHBOARD_CONFIG: "./no-default.ts" }), `${namedAs("no-default.ts")}its default export must be defineTopics({...}) (export default defineTopics(...))`],
  ["a module that throws a string with a newline: its first line", named, () => ({ SWITCHBOARD_CONFIG: "./throws-string-with-newline.ts" }), `${namedAs("throws-string-with-newline.ts")}cannot load it: a`],
  ["a module that throws a null-prototype object", named, () => ({ SWITCHBOARD_CONFIG: "./throws-null-prototype.ts" }), `${namedAs("throws-null-prototype.ts")}cannot load it: a value that cannot be shown was thrown`],
  ["a module that throws a ZodError: its first issue", named, () => ({ SWITCHBOARD_CONFIG: "./throws-zod-error.ts" }), `${namedAs("throws-zod-error.ts")}cannot load it: a: Invalid input: expected string, received undefined`],
  ["a module that throws an Error of two lines: the first", named, () => ({ SWITCHBOARD_CONFIG: "./throws-multiline-error.ts" }), `${namedAs("throws-multiline-error.ts")}cannot load it: first line`],
  ["a top-level await rejecting with an AggregateError: its first error, trimmed", named, () => ({ SWITCHBOARD_CONFIG: "./rejects-aggregate.ts" }), `${namedAs("rejects-aggregate.ts")}cannot load it: inner one`],
  ["a module that throws a value whose every read throws", named, () => ({ SWITCHBOARD_CONFIG: "./throws-unreadable.ts" }), `${namedAs("throws-unreadable.ts")}cannot load it: a value that cannot be shown was thrown`],
  ...definitionErrors
    .filter(([, , , spawn]) => spawn)
    .map(([what, , message]): [string, string, () => Record<string, string>, string] => [
      `defineTopics throws: ${what}`,
      named,
      () => ({ SWITCHBOARD_CONFIG: `./${fileNameOf(what)}` }),
      `${namedAs(fileNameOf(what))}cannot load it: ${message}`,
    ]),
  ["a broken default file", brokenDefault, () => ({}), `${prefix}./switchboard.config.ts (the default SWITCHBOARD_CONFIG): cannot load it: topic pattern "room.*": history.size: Too small: expected number to be >=1`],
  ["TOPICS_STRICT=true without definitions", empty, () => ({ TOPICS_STRICT: "true" }), `${prefix}TOPICS_STRICT=true refuses every topic without topic definitions: set SWITCHBOARD_CONFIG`],
  [
    "WORKERS=2 with REDIS_URL: refused before any worker is spawned",
    named,
    () => ({ WORKERS: "2", REDIS_URL: redis.url, SWITCHBOARD_CONFIG: `./${fileNameOf(definitionErrors[0]![0])}` }),
    `${namedAs(fileNameOf(definitionErrors[0]![0]))}cannot load it: ${definitionErrors[0]![2]}`,
  ],
];

describe("a configuration that cannot be used: exit 2 and one stderr line, nothing on stdout", () => {
  const results = new Map<string, Promise<Exit>>();
  beforeAll(() => {
    // independent processes, a few at a time (2 cores): each test awaits its own
    const slots = limiter(4);
    for (const [what, cwd, env] of refusals) {
      const result = slots(() => runToExit(cwd, env()));
      result.catch(() => {}); // awaited (and reported) by its test
      results.set(what, result);
    }
  });

  test.each(refusals)("%s", async (what, _cwd, _env, line) => {
    const { code, stdout, stderr } = await results.get(what)!;
    expect({ code, stderr, stdout }).toEqual({ code: 2, stderr: `${line}\n`, stdout: "" });
  });
});

function limiter(width: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(job: () => Promise<T>): Promise<T> => {
    while (active >= width) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await job();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

// --- without processes ----------------------------------------------------------------------------------------------

describe("defineTopics", () => {
  test.each(definitionErrors)("throws a TopicConfigError for %s", (_what, maps, message) => {
    let thrown: unknown;
    try {
      (defineTopics as (...maps: object[]) => unknown)(...maps);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(TopicConfigError);
    expect((thrown as TopicConfigError).name).toBe("TopicConfigError");
    expect((thrown as TopicConfigError).message).toBe(message);
  });

  test("merges several maps, in definition order, with their options validated", () => {
    const topics = defineTopics({ "*": {} }, { "chat.*": { history: { size: 3 } }, "chat.lobby": { presence: false, joinLeave: false } });
    expect(topics.entries).toEqual([
      ["*", {}],
      ["chat.*", { history: { size: 3 } }],
      ["chat.lobby", { presence: false, joinLeave: false }],
    ]);
  });
});

describe("loadTopicDefinitions", () => {
  test("the shipped examples/switchboard.config.ts loads with its 4 patterns", async () => {
    const topics = await loadTopicDefinitions({ SWITCHBOARD_CONFIG: "examples/switchboard.config.ts" }, REPO);
    expect(topics?.entries.map(([pattern]) => pattern)).toEqual(["chat.room.*", "chat.room.announcements", "ticker.*", "cursor.*"]);
    expect(topics?.entries[0]?.[1].history).toEqual({ size: 200, ttlMs: 600_000 });
    expect(topics?.entries[2]?.[1]).toMatchObject({ history: false, presence: false });
  });

  test.each([
    ["throws-string-with-newline.ts", "a"],
    ["throws-null-prototype.ts", "a value that cannot be shown was thrown"],
    ["throws-zod-error.ts", "a: Invalid input: expected string, received undefined"],
  ])("%s: a ConfigError of one line", async (file, reason) => {
    let thrown: unknown;
    try {
      await loadTopicDefinitions({ SWITCHBOARD_CONFIG: `./${file}` }, named);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).message).toBe(`invalid configuration: SWITCHBOARD_CONFIG="./${file}": cannot load it: ${reason}`);
  });

  test("the default file of a directory, or undefined when it has none", async () => {
    expect((await loadTopicDefinitions({}, withDefault))?.entries.map(([pattern]) => pattern)).toEqual(["room.*"]);
    expect(await loadTopicDefinitions({}, empty)).toBeUndefined();
  });
});
