// Topic definitions for the standalone server: `SWITCHBOARD_CONFIG=examples/switchboard.config.ts bun run
// src/index.ts` (or copy it to ./switchboard.config.ts, which the server loads by default). A client typed with
// it checks at compile time what it publishes and what it receives:
//   import type topics from "./switchboard.config.ts";
//   const client = connect<typeof topics>("ws://localhost:3000");
//   client.subscribe("chat.room.42", (msg) => msg.text);      // msg: { user: string; text: string }
//   client.publish("chat.room.42", { user: "ann", text: 1 }); // compile error: text is a string
import { z } from "zod";
import { defineTopics } from "switchboard";

/** A chat message as clients send it; the schema's output (unknown keys dropped) is what subscribers get. */
const ChatMessage = z.object({ user: z.string().min(1).max(64), text: z.string().min(1).max(2000) });

export default defineTopics({
  // Every room: schema-checked, 200 messages kept for 10 minutes for reconnecting clients.
  "chat.room.*": { schema: ChatMessage, history: { size: 200, ttlMs: 600_000 } },
  // More specific than chat.room.*: announcements come from the backend only (POST /api/publish).
  "chat.room.announcements": { schema: z.object({ text: z.string() }), publish: "server" },
  // Prices: many subscribers, no history (only the latest matters), no presence bookkeeping per subscriber.
  "ticker.*": { schema: z.object({ symbol: z.string(), price: z.number().positive() }), history: false, presence: false },
  // Live cursors: presence (who is here) but no join/leave broadcast to every member on each arrival.
  "cursor.*": { joinLeave: false },
});
