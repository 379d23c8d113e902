// Loading the topic definitions of the standalone server: SWITCHBOARD_CONFIG names a TypeScript file (default
// ./switchboard.config.ts, when it exists) whose default export is defineTopics({...}). Anything that keeps it
// from loading is a ConfigError with one line saying why: the entry point exits 2 with it.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError, type Config } from "../config.ts";
import { isTopicDefinitions, type TopicDefinitions } from "./define.ts";

export const DEFAULT_TOPICS_FILE = "./switchboard.config.ts";
/** A file whose top-level await never settles must not hang the start (Bun would spin a core meanwhile). */
const LOAD_TIMEOUT_MS = 10_000;

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
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`it did not finish loading within ${LOAD_TIMEOUT_MS / 1000} s (a top-level await that never settles?)`)), LOAD_TIMEOUT_MS);
    });
    loaded = (await Promise.race([import(path), late])) as { default?: unknown };
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${shown}: cannot load it: ${reasonOf(error)}`);
  } finally {
    clearTimeout(timer);
  }
  if (!isTopicDefinitions(loaded.default)) {
    throw new ConfigError(`invalid configuration: ${shown}: its default export must be defineTopics({...}) (export default defineTopics(...))`);
  }
  return loaded.default;
}

/**
 * One line, whatever was thrown: a syntax error's first message with its place, a zod error's first issue, an
 * error's message, or the thrown value itself.
 */
function reasonOf(error: unknown): string {
  try {
    const first = error instanceof AggregateError ? (error.errors[0] as unknown) : error;
    const { message, position, issues } = (typeof first === "object" && first !== null ? first : {}) as {
      message?: unknown;
      position?: { line?: number; column?: number };
      issues?: { path?: unknown[]; message?: unknown }[];
    };
    const issue = Array.isArray(issues) ? issues[0] : undefined;
    const text =
      issue !== undefined
        ? `${(issue.path ?? []).join(".") || "value"}: ${String(issue.message)}`
        : typeof message === "string"
          ? message
          : String(first);
    const line = text.split("\n").find((l) => l.trim() !== "")?.trim() ?? "(no message)";
    return position?.line === undefined ? line : `line ${position.line}:${position.column ?? 0}: ${line}`;
  } catch {
    return "a value that cannot be shown was thrown";
  }
}
