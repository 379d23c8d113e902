// Echo load generator (its own process). Closed loop: `inFlight` messages per connection, one more per echo
// (throughput). Open loop: messages sent on a fixed schedule whatever the replies do, latency measured from
// each message's *scheduled* send time, so queueing is not hidden (no coordinated omission), recorded in an
// HDR histogram. Protocol with the orchestrator: "@start"/"@end" around the measured window, "@sec {...}"
// per second when asked, and a last line "=" + JSON result.
import * as hdr from "hdr-histogram-js";
import { clientFrame, LoadConn } from "../lib.ts";

interface Args {
  port: number;
  conns: number;
  mode: "closed" | "open";
  inFlight?: number;
  /** messages per second across all connections (open loop) */
  rate?: number;
  seconds: number;
  warmupMs: number;
  perSecond?: boolean;
}

const args = JSON.parse(process.argv[2]!) as Args;
const PAYLOAD = 64;
const histogram = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });

if (args.mode === "closed") {
  const frame = clientFrame("x".repeat(PAYLOAD));
  const batch = Buffer.concat(Array.from({ length: args.inFlight! }, () => frame));
  const conns = Array.from({ length: args.conns }, () => new LoadConn(args.port, "/echo", (c, n) => c.write(batch.subarray(0, n * frame.length))));
  await Promise.all(conns.map((c) => c.open()));
  for (const c of conns) c.write(batch);
  await Bun.sleep(args.warmupMs);
  const count = () => conns.reduce((s, c) => s + c.frames, 0);
  const c0 = count();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  console.log("@start");
  await Bun.sleep(args.seconds * 1000);
  const c1 = count();
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  console.log("@end");
  const dropped = conns.filter((c) => c.closed).length;
  for (const c of conns) c.close();
  console.log("=" + JSON.stringify({ messages: c1 - c0, elapsedMs, cpuUs: cpu.user + cpu.system, dropped }));
  process.exit(0);
}

// Open loop. Each payload starts with its scheduled send time in microseconds (15 digits), then padding.
const start = performance.now();
const intervalUs = 1e6 / args.rate!;
const all = histogram();
/** Per-second histograms, by the second of the scheduled send time (messages arrive interleaved). */
const seconds = new Map<number, hdr.Histogram>();
let received = 0;
let windowStartUs = Infinity;
const DIGITS = 15;

const onEcho = (payload: Uint8Array) => {
  received++;
  let scheduled = 0;
  for (let i = 0; i < DIGITS; i++) scheduled = scheduled * 10 + (payload[i]! - 48);
  if (scheduled < windowStartUs) return; // warm-up
  const nowUs = (performance.now() - start) * 1000;
  const latency = Math.max(1, Math.round(nowUs - scheduled));
  all.recordValue(latency);
  if (args.perSecond) {
    const s = Math.floor((scheduled - windowStartUs) / 1e6);
    let h = seconds.get(s);
    if (h === undefined) seconds.set(s, (h = histogram()));
    h.recordValue(latency);
  }
};
const report = (index: number, h: hdr.Histogram) =>
  console.log(`@sec ${JSON.stringify({ second: index, count: h.totalCount, p50: h.getValueAtPercentile(50), p99: h.getValueAtPercentile(99), p999: h.getValueAtPercentile(99.9), max: h.maxValue })}`);

const conns = Array.from({ length: args.conns }, () => new LoadConn(args.port, "/echo"));
await Promise.all(conns.map((c) => c.open()));
for (const c of conns) c.capture = onEcho;

// One pre-masked frame template (zero mask) per send; the timestamp digits are written into a copy.
const template = Buffer.from(clientFrame("0".repeat(DIGITS) + "x".repeat(PAYLOAD - DIGITS)));
const headerLength = template.length - PAYLOAD;
const totalMs = args.warmupMs + args.seconds * 1000;
let sent = 0;
let next = 0;
let cpu0 = process.cpuUsage();
let t0 = 0;
await new Promise<void>((resolve) => {
  const timer = setInterval(() => {
    const elapsedUs = (performance.now() - start) * 1000;
    if (windowStartUs === Infinity && elapsedUs >= args.warmupMs * 1000) {
      windowStartUs = elapsedUs;
      cpu0 = process.cpuUsage();
      t0 = performance.now();
      console.log("@start");
    }
    if (elapsedUs >= totalMs * 1000) {
      clearInterval(timer);
      resolve();
      return;
    }
    const due = Math.floor(elapsedUs / intervalUs);
    const count = due - next;
    if (count <= 0) return;
    // Spread this tick's messages over the connections: one buffer and one write per connection.
    const n = conns.length;
    for (let i = 0; i < n; i++) {
      const first = (((i - next) % n) + n) % n; // first k with (next + k) % n === i
      if (first >= count) continue;
      const mine = Math.ceil((count - first) / n);
      const out = Buffer.allocUnsafe(mine * template.length);
      for (let j = 0; j < mine; j++) {
        const k = first + j * n;
        const at = j * template.length;
        template.copy(out, at);
        let scheduled = Math.round((next + k) * intervalUs);
        for (let d = DIGITS - 1; d >= 0; d--) {
          out[at + headerLength + d] = 48 + (scheduled % 10);
          scheduled = Math.floor(scheduled / 10);
        }
      }
      conns[i]!.write(out);
    }
    next = due;
    sent += count;
  }, 1);
});
const elapsedMs = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
console.log("@end");
const drainUntil = performance.now() + 2000;
while (received < sent && performance.now() < drainUntil) await Bun.sleep(10);
for (const [index, h] of [...seconds].sort((a, b) => a[0] - b[0])) report(index, h);
for (const c of conns) c.close();
console.log(
  "=" +
    JSON.stringify({
      sent,
      received,
      lost: sent - received,
      elapsedMs,
      cpuUs: cpu.user + cpu.system,
      histogram: hdr.encodeIntoCompressedBase64(all),
    }),
);
process.exit(0);
