// Loading the topic definitions of the standalone server: SWITCHBOARD_CONFIG names a TypeScript file (default
// ./switchboard.config.ts, when it exists) whose default export is defineTopics({...}). Anything that keeps it
// from loading is a ConfigError with one line saying why: the entry point exits 2 with it.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError, type Config } from "../config.ts";
import { isTopicDefinitions, type TopicDefinitions } from "./define.ts";

export const DEFAULT_TOPICS_FILE = "./switchboard.config.ts";

/** The definitions, or undefined when no file is named and the default one does not exist. */
export async function loadTopicDefinitions(config: Pick<Config, "SWITCHBOARD_CONFIG">, cwd = process.cwd()): Promise<TopicDefinitions | undefined> {
  const named = config.SWITCHBOARD_CONFIG;
  const path = resolve(cwd, named ?? DEFAULT_TOPICS_FILE);
  const shown = named === undefined ? `${DEFAULT_TOPICS_FILE} (the default SWITCHBOARD_CONFIG)` : `SWITCHBOARD_CONFIG=${JSON.stringify(named)}`;
  if (!existsSync(path)) {
    if (named === undefined) return undefined;
    throw new ConfigError(`invalid configuration: ${shown}: no such file (${path})`);
  }
  let loaded: { default?: unknown };
  try {
    loaded = (await import(path)) as { default?: unknown };
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${shown}: cannot load it: ${reasonOf(error)}`);
  }
  if (!isTopicDefinitions(loaded.default)) {
    throw new ConfigError(`invalid configuration: ${shown}: its default export must be defineTopics({...}) (export default defineTopics(...))`);
  }
  return loaded.default;
}

/** One line: a syntax error's first message with its place, or the error's own message. */
function reasonOf(error: unknown): string {
  const first = error instanceof AggregateError ? (error.errors[0] as unknown) : error;
  const message = (first as { message?: unknown } | undefined)?.message;
  const place = (first as { position?: { line?: number; column?: number } } | undefined)?.position;
  const text = typeof message === "string" ? message.split("\n")[0]! : String(first);
  return place?.line === undefined ? text : `line ${place.line}:${place.column ?? 0}: ${text}`;
}
