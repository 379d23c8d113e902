// Structured logs: one JSON line per event (start, stop, recovery, unusual closes), never one per message.
import type { Config } from "./config.ts";

type Level = Config["LOG_LEVEL"];
const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export type Fields = Record<string, unknown>;

/** Where log lines go: stdout for debug/info, stderr for warn/error. Replaceable for tests. */
export type Sink = (line: string, level: Exclude<Level, "silent">) => void;
const consoleSink: Sink = (line, level) => (level === "error" || level === "warn" ? console.error(line) : console.log(line));

export class Logger {
  private readonly min: number;
  constructor(
    level: Level = "info",
    private readonly sink: Sink = consoleSink,
  ) {
    this.min = rank[level];
  }
  private write(level: Exclude<Level, "silent">, event: string, fields?: Fields): void {
    if (rank[level] < this.min) return;
    this.sink(JSON.stringify({ time: new Date().toISOString(), level, event, ...fields }), level);
  }
  debug(event: string, fields?: Fields): void {
    this.write("debug", event, fields);
  }
  info(event: string, fields?: Fields): void {
    this.write("info", event, fields);
  }
  warn(event: string, fields?: Fields): void {
    this.write("warn", event, fields);
  }
  error(event: string, fields?: Fields): void {
    this.write("error", event, fields);
  }
}

/** Errors as loggable fields: message and the top of the stack, not the whole object. */
export const errorFields = (error: unknown): Fields =>
  error instanceof Error
    ? { error: error.message, stack: error.stack?.split("\n").slice(0, 4).join("\n") }
    : { error: String(error) };
