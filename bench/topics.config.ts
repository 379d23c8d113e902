// Topic definitions for bench/topics.ts: a schema for each message shape it publishes.
import { z } from "zod";
import { defineTopics } from "../src/topics/define.ts";

export default defineTopics({
  // ~60 bytes of data: a chat-sized message.
  "bench.small": { schema: z.object({ t: z.number(), user: z.string(), text: z.string() }) },
  // ~10 KiB of data: 200 records, each checked field by field (the costly shape; one 10 KiB string would be cheap).
  "bench.large": { schema: z.object({ t: z.number(), items: z.array(z.object({ id: z.number().int(), name: z.string(), price: z.number() })) }) },
  // The fan-out topic of bench/load/fanout.ts.
  bench: { schema: z.object({ t: z.number() }) },
});
