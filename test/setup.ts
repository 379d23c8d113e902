// Preloaded by bunfig.toml for every test file. Tests start real servers, processes and Redis on a shared
// 2-core machine: give each test room beyond Bun's 5 s default. A timeout is a hang detector here, never a
// performance budget (no test asserts a wall-clock upper bound).
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(20_000);
