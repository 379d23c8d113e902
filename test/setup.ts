// Preloaded by bunfig.toml for every test file (its hooks apply to every file). Tests start real servers, processes and Redis on a shared
// 2-core machine: give each test room beyond Bun's 5 s default. A timeout is a hang detector here, never a
// performance budget (no test asserts a wall-clock upper bound). Bun applies this default to the first file of
// a run only (measured with three files: the second and third got 5 s), so the README's command also passes
// `--timeout 20000`; this line covers `bun test <one file>`.
import { afterAll, setDefaultTimeout } from "bun:test";
import { killSpawned } from "./helpers.ts";

setDefaultTimeout(20_000);
// A server process that a failed test left hanging must not outlive its file (nor hold its port).
afterAll(killSpawned);
