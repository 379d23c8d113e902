// The zero-loss probe (README, "Guarantees"): one process publishes numbered messages and retries each one
// until the server acknowledges it as stored; another consumes. Kill and restart the server (with Redis) as
// often as you like while they run: the consumer ends with every acknowledged message exactly once, in order.
//   bun examples/recovery-probe.ts publish ws://localhost:3000 probe 2000    # prints "acked <n> <offset>"
//   bun examples/recovery-probe.ts consume ws://localhost:3000 probe 2000    # prints "got <n> <offset>", then a summary
// A message whose ack was lost with the connection is sent again: it may then be stored twice, under two
// offsets (the consumer sees both and says so). Every acked offset reaches the consumer once.
import { connect, ConnectionLostError, SwitchboardError, TimeoutError } from "../src/client.ts";

const [mode, url = "ws://localhost:3000", topic = "probe", countText = "1000"] = process.argv.slice(2);
const count = Number(countText);
const client = connect(url, { reconnect: { baseMs: 50, capMs: 500 }, requestTimeoutMs: 5000 });

if (mode === "publish") {
  for (let n = 1; n <= count; n++) {
    for (;;) {
      try {
        const { offset } = await client.publish(topic, { n });
        console.log(`acked ${n} ${offset}`);
        break;
      } catch (error) {
        // Not stored (unavailable, not sent) or unknown (lost with the connection): send it again.
        if (!(error instanceof SwitchboardError || error instanceof ConnectionLostError || error instanceof TimeoutError)) throw error;
        await Bun.sleep(50);
      }
    }
  }
  client.close();
} else if (mode === "consume") {
  const seen = new Map<number, number>(); // offset -> n
  let last = 0;
  let outOfOrder = 0;
  let lost = 0;
  client.on("recovery", (event) => {
    console.log(`recovery ${event.recovered ? `replayed ${event.replayed}` : "FAILED"} at ${event.epoch}:${event.offset}`);
    if (!event.recovered) lost++;
  });
  const done = Promise.withResolvers<void>();
  // "ready" once the server confirmed the subscription: start the publisher after it.
  const offSubscribed = client.on("subscribed", (event) => {
    if (event.topic !== topic) return;
    offSubscribed();
    console.log(`ready ${event.epoch}:${event.offset}`);
  });
  client.subscribe<{ n: number }>(topic, ({ n }, frame) => {
    const offset = frame.offset ?? 0;
    if (offset <= last || seen.has(offset)) outOfOrder++;
    last = offset;
    seen.set(offset, n);
    console.log(`got ${n} ${offset}`);
    if (n === count) done.resolve();
  });
  await done.promise;
  const numbers = new Set(seen.values());
  const missing = Array.from({ length: count }, (_, i) => i + 1).filter((n) => !numbers.has(n));
  console.log(`summary messages=${seen.size} distinct=${numbers.size} missing=${missing.length} out_of_order=${outOfOrder} failed_recoveries=${lost}`);
  client.close();
} else {
  console.error("usage: bun examples/recovery-probe.ts publish|consume <url> <topic> <count>");
  process.exit(2);
}
