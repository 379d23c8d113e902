// Preloaded by bunfig.toml for every test file (its hooks apply to every file). Tests start real servers, processes and Redis on a shared
// 2-core machine: give each test room beyond Bun's 5 s default. A timeout is a hang detector here, never a
// performance budget (no test asserts a wall-clock upper bound).
import { afterAll, setDefaultTimeout } from "bun:test";
import { killSpawned } from "./helpers.ts";

setDefaultTimeout(20_000);
// A server process that a failed test left hanging must not outlive its file (nor hold its port).
afterAll(killSpawned);
