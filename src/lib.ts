// What `import ... from "switchboard"` gives: the Elysia plugin, topic definitions, and the typed client. A
// browser bundle imports "switchboard/client" instead (no server code, no zod).
export { switchboard, type Switchboard, type SwitchboardControls, type SwitchboardOptions } from "./plugin.ts";
export { defineTopics, TopicConfigError, type DataOf, type InputOf, type TopicDefinitions, type TopicOptions } from "./topics/define.ts";
export { configWith, loadConfig, ConfigError, type Config } from "./config.ts";
export * from "./client.ts";
